"""Phi-3 Vision checkpoints: key mapping and strict loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmsearch.errors import ModelLoadError
from mmsearch.models.phi3v import load_phi3v, official_to_ours
from mmsearch.models.phi3v.checkpoint import resolve_checkpoint_dir


@pytest.mark.parametrize(
    ("official", "ours"),
    [
        ("model.embed_tokens.weight", "language_model.model.embed_tokens.weight"),
        (
            "model.layers.3.self_attn.qkv_proj.weight",
            "language_model.model.layers.3.self_attn.qkv_proj.weight",
        ),
        (
            "model.layers.0.mlp.gate_up_proj.weight",
            "language_model.model.layers.0.mlp.gate_up_proj.weight",
        ),
        ("model.norm.weight", "language_model.model.norm.weight"),
        ("lm_head.weight", "language_model.lm_head.weight"),
        (
            "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.23.mlp.fc1.bias",
            "vision.clip.encoder.layers.23.mlp.fc1.bias",
        ),
        (
            "model.vision_embed_tokens.img_processor.vision_model.pre_layrnorm.weight",
            "vision.clip.pre_layrnorm.weight",
        ),
        ("model.vision_embed_tokens.glb_GN", "vision.glb_GN"),
        ("model.vision_embed_tokens.sub_GN", "vision.sub_GN"),
        ("model.vision_embed_tokens.img_projection.2.bias", "vision.projection.2.bias"),
    ],
)
def test_official_keys_map_to_our_parameter_names(official: str, ours: str) -> None:
    assert official_to_ours(official) == ours


def test_token_embedding_alias_and_position_id_buffer_carry_no_weights() -> None:
    assert official_to_ours("model.vision_embed_tokens.wte.weight") is None
    assert (
        official_to_ours(
            "model.vision_embed_tokens.img_processor.vision_model.embeddings.position_ids"
        )
        is None
    )


def test_unknown_keys_pass_through_so_strict_loading_reports_them() -> None:
    assert official_to_ours("something.else") == "something.else"


def test_tiny_official_checkpoint_loads_every_tensor_key_for_key(
    tiny_phi3v_dir: Path, tiny_phi3v
) -> None:
    model, _ = tiny_phi3v
    official = load_file(str(tiny_phi3v_dir / "model.safetensors"))
    params = dict(model.named_parameters())
    mapped = {official_to_ours(k): v for k, v in official.items()}
    assert set(mapped) == set(params)
    for name, tensor in mapped.items():
        assert torch.equal(params[name].detach(), tensor.float()), name


def _copy_with_weights(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    weights = load_file(str(dst / "model.safetensors"))
    edit(weights)
    save_file(weights, str(dst / "model.safetensors"))
    return dst


def test_missing_tensor_raises_model_load_error(tiny_phi3v_dir: Path, tmp_path: Path) -> None:
    bad = _copy_with_weights(
        tiny_phi3v_dir, tmp_path / "ckpt", lambda w: w.pop("model.layers.1.mlp.down_proj.weight")
    )
    with pytest.raises(ModelLoadError, match="missing keys: language_model.model.layers.1.mlp"):
        load_phi3v(bad, device="cpu")


def test_unexpected_tensor_raises_model_load_error(tiny_phi3v_dir: Path, tmp_path: Path) -> None:
    def add(w: dict[str, torch.Tensor]) -> None:
        w["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)

    bad = _copy_with_weights(tiny_phi3v_dir, tmp_path / "ckpt", add)
    with pytest.raises(ModelLoadError, match="unexpected keys: .*rotary_emb.inv_freq"):
        load_phi3v(bad, device="cpu")


def test_directory_without_config_raises_model_load_error_naming_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="config.json"):
        resolve_checkpoint_dir(tmp_path)


def test_unavailable_hub_model_raises_model_load_error_naming_env_var(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args: object, **kwargs: object) -> str:
        raise LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelLoadError, match="tokenizer.json.*MMSEARCH_RERANK_MODEL"):
        load_phi3v("microsoft/Phi-3-vision-128k-instruct", device="cpu")
