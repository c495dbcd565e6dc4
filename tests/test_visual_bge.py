"""Visualized BGE: checkpoint layout and loading, preprocessing, and embeddings."""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BertConfig

from mmsearch.embedding import ImageTextEmbedder
from mmsearch.errors import InvalidQueryError, ModelLoadError
from mmsearch.models import devices
from mmsearch.models.visual_bge import (
    VisionConfig,
    VisualBGE,
    VisualBGEModule,
    checkpoint_filter_fn,
    create_embedder,
)
from mmsearch.models.visual_bge import checkpoint as checkpoint_module
from mmsearch.models.visual_bge.embedder import load_strict
from mmsearch.testing.tiny import write_tiny_visual_bge

OFFICIAL_LAYOUT = Path(__file__).parent / "data" / "visualized_base_en_v1.5_layout.txt"
CKPT = "Visualized_base_en_v1.5.pth"
TEXTS = ["an astronaut in a white space suit", "a cup of coffee", "a cat", "a rocket launch"]


def official_layout() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in OFFICIAL_LAYOUT.read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split()
            shapes[name] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    return shapes


def key_pattern(key: str) -> str:
    return re.sub(r"\.(blocks|layer)\.\d+\.", r".\1.N.", key)


@pytest.fixture(scope="module")
def tiny_dir(tiny_checkpoints: Path) -> Path:
    return tiny_checkpoints / "visual_bge"


@pytest.fixture(scope="module")
def embedder(tiny_dir: Path) -> VisualBGE:
    return create_embedder(tiny_dir, device="cpu", dtype="float32")


@pytest.fixture
def model_copy(tiny_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(tiny_dir, target)
    return target


def edit_checkpoint(directory: Path, edit) -> None:
    state = torch.load(directory / CKPT, weights_only=True)
    edit(state)
    torch.save(state, directory / CKPT)


# --- checkpoint layout and key mapping ---------------------------------------------------


def test_tiny_checkpoint_has_the_official_key_layout(tiny_dir: Path) -> None:
    tiny = torch.load(tiny_dir / CKPT, weights_only=True)
    assert {key_pattern(k) for k in tiny} == {key_pattern(k) for k in official_layout()}


def test_official_layout_maps_key_for_key_onto_the_full_size_module() -> None:
    with torch.device("meta"):
        official = {k: torch.empty(shape) for k, shape in official_layout().items()}
        vision = VisionConfig.from_state_dict(official)
        module = VisualBGEModule(vision, BertConfig(), "eva02_base_patch16_clip_224")
    mapped = checkpoint_filter_fn(official)
    expected = module.state_dict()
    assert set(mapped) == set(expected)
    assert all(mapped[k].shape == expected[k].shape for k in expected)


def test_vision_sizes_are_read_from_the_official_tensor_shapes() -> None:
    with torch.device("meta"):
        official = {k: torch.empty(shape) for k, shape in official_layout().items()}
    assert VisionConfig.from_state_dict(official) == VisionConfig(
        img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_hidden=2048
    )


def test_checkpoint_filter_fn_renames_official_keys_and_keeps_tensors() -> None:
    t = torch.zeros(1)
    official = {
        "bge_embeddings.word_embeddings.weight": t,
        "bge_encoder.layer.3.attention.self.key.bias": t,
        "bge_pooler.dense.weight": t,
        "visual_proj.weight": t,
        "model_visual.visual.blocks.2.attn.q_bias": t,
        "model_visual.visual.blocks.2.attn.v_bias": t,
        "model_visual.visual.blocks.2.attn.k_proj.weight": t,
        "model_visual.visual.blocks.2.attn.inner_attn_ln.weight": t,
        "model_visual.visual.blocks.2.mlp.w1.weight": t,
        "model_visual.visual.blocks.2.mlp.w2.bias": t,
        "model_visual.visual.blocks.2.mlp.w3.weight": t,
        "model_visual.visual.blocks.2.mlp.ffn_ln.bias": t,
        "model_visual.visual.pos_embed": t,
    }
    mapped = checkpoint_filter_fn(official)
    assert list(mapped) == [
        "text.embeddings.word_embeddings.weight",
        "text.encoder.layer.3.attention.self.key.bias",
        "text.pooler.dense.weight",
        "visual_proj.weight",
        "visual.blocks.2.attn.q_proj.bias",
        "visual.blocks.2.attn.v_proj.bias",
        "visual.blocks.2.attn.k_proj.weight",
        "visual.blocks.2.attn.norm.weight",
        "visual.blocks.2.mlp.fc1_g.weight",
        "visual.blocks.2.mlp.fc1_x.bias",
        "visual.blocks.2.mlp.fc2.weight",
        "visual.blocks.2.mlp.norm.bias",
        "visual.pos_embed",
    ]
    assert all(v is t for v in mapped.values())


def test_checkpoint_filter_fn_drops_parts_unused_for_embedding() -> None:
    t = torch.zeros(1)
    official = {
        "model_visual.logit_scale": t,
        "model_visual.visual.rope.freqs_cos": t,
        "model_visual.visual.blocks.0.attn.rope.freqs_sin": t,
        "model_visual.visual.head.weight": t,
        "model_visual.visual.norm.bias": t,
        "bge_embeddings.position_ids": t,
    }
    assert checkpoint_filter_fn(official) == {}


def test_checkpoint_filter_fn_passes_unknown_keys_through_for_the_strict_load_to_report() -> None:
    assert list(checkpoint_filter_fn({"something.else": torch.zeros(1)})) == ["something.else"]


def test_strict_load_names_missing_and_unexpected_keys() -> None:
    module = torch.nn.Linear(2, 2)
    with pytest.raises(ModelLoadError, match=r"1 missing: bias.*1 unexpected: extra"):
        load_strict(module, {"weight": torch.zeros(2, 2), "extra": torch.zeros(1)})


# --- loading -----------------------------------------------------------------------------


def test_official_layout_checkpoint_loads_as_an_embedder(embedder: VisualBGE) -> None:
    assert isinstance(embedder, ImageTextEmbedder)
    assert embedder.dim == 64
    assert embedder.image_size == 64
    assert embedder.dtype == torch.float32


def test_every_parameter_and_buffer_holds_the_checkpoint_s_tensor(
    embedder: VisualBGE, tiny_dir: Path
) -> None:
    """Parameters are built without initial values; each must then hold the checkpoint's."""
    mapped = checkpoint_filter_fn(torch.load(tiny_dir / CKPT, weights_only=True))
    loaded = embedder.module.state_dict()
    assert set(loaded) == set(mapped)
    for key, tensor in mapped.items():
        assert torch.equal(loaded[key], tensor.to(loaded[key].dtype)), key
    assert not any(p.is_meta for p in embedder.module.parameters())


def test_model_id_names_the_variant_and_the_weights(embedder: VisualBGE) -> None:
    assert re.fullmatch(r"visualized-bge/base_en_v1\.5@[0-9a-f]{12}", embedder.model_id)


def test_model_id_differs_between_weights(tiny_dir: Path, tmp_path: Path) -> None:
    other = write_tiny_visual_bge(tmp_path / "seed1", seed=1)
    again = create_embedder(tiny_dir, device="cpu")
    assert create_embedder(other, device="cpu").model_id != again.model_id
    assert again.model_id == create_embedder(tiny_dir, device="cpu").model_id


def test_missing_directory_is_a_clear_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist.*MMSEARCH_EMBED_MODEL"):
        create_embedder(tmp_path / "nowhere")


def test_unknown_variant_name_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match="neither a known variant"):
        create_embedder("large_en_v9")


def test_directory_without_checkpoint_says_which_file_to_put_there(model_copy: Path) -> None:
    (model_copy / CKPT).unlink()
    with pytest.raises(ModelLoadError, match=r"Visualized_base_en_v1\.5\.pth"):
        create_embedder(model_copy)


def test_directory_without_text_config_is_a_load_error(model_copy: Path) -> None:
    (model_copy / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json"):
        create_embedder(model_copy)


def test_directory_without_tokenizer_is_a_load_error(model_copy: Path) -> None:
    (model_copy / "vocab.txt").unlink()
    with pytest.raises(ModelLoadError, match="tokenizer"):
        create_embedder(model_copy)


def test_checkpoint_with_wrong_shapes_is_a_load_error(model_copy: Path) -> None:
    def widen(state):
        state["visual_proj.weight"] = torch.zeros(64, 65)

    edit_checkpoint(model_copy, widen)
    with pytest.raises(ModelLoadError, match=r"wrong shape: visual_proj\.weight"):
        create_embedder(model_copy)


def test_checkpoint_with_missing_tensor_is_a_load_error(model_copy: Path) -> None:
    edit_checkpoint(model_copy, lambda s: s.pop("bge_encoder.layer.1.output.dense.bias"))
    with pytest.raises(ModelLoadError, match=r"missing: text\.encoder\.layer\.1\.output\.dense"):
        create_embedder(model_copy)


def test_checkpoint_with_foreign_rotary_tables_is_a_load_error(model_copy: Path) -> None:
    edit_checkpoint(model_copy, lambda s: s["model_visual.visual.rope.freqs_cos"].mul_(0.5))
    with pytest.raises(ModelLoadError, match="rotary"):
        create_embedder(model_copy)


def test_file_that_is_not_a_checkpoint_is_a_load_error(model_copy: Path) -> None:
    (model_copy / CKPT).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        create_embedder(model_copy)


def test_failed_download_says_which_files_to_place_where(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelLoadError) as caught:
        checkpoint_module.resolve_model_files("m3", cache_dir=tmp_path)
    message = str(caught.value)
    needles = ("Visualized_m3.pth", "BAAI/bge-visualized", "BAAI/bge-m3", "MMSEARCH_EMBED_MODEL")
    for needle in needles:
        assert needle in message


# --- preprocessing -----------------------------------------------------------------------


def test_preprocess_gives_a_normalised_square_tensor(embedder: VisualBGE, photos) -> None:
    pixels = embedder.preprocess(photos["rocket"])
    assert pixels.shape == (3, 64, 64) and pixels.dtype == torch.float32
    assert -2.0 < pixels.min() < pixels.max() < 2.2


def test_rgba_transparent_pixels_come_out_black(embedder: VisualBGE) -> None:
    rgba = np.zeros((80, 80, 4), np.uint8)
    rgba[..., 0] = 255  # red, but fully transparent
    black = np.zeros((80, 80, 3), np.uint8)
    got = embedder.preprocess(Image.fromarray(rgba, "RGBA"))
    assert torch.equal(got, embedder.preprocess(Image.fromarray(black)))


def test_opaque_rgba_is_the_same_as_rgb(embedder: VisualBGE, photos) -> None:
    rgb = photos["coffee"]
    assert torch.allclose(
        embedder.preprocess(rgb.convert("RGBA")), embedder.preprocess(rgb), atol=1e-6
    )


def test_greyscale_and_palette_images_are_accepted(embedder: VisualBGE, photos) -> None:
    for mode in ("L", "P", "I;16"):
        assert embedder.preprocess(photos["chelsea"].convert(mode)).shape == (3, 64, 64)


def test_preprocess_is_safe_from_worker_threads(embedder: VisualBGE, photos) -> None:
    images = list(photos.values()) * 4
    serial = [embedder.preprocess(im) for im in images]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(embedder.preprocess, images))
    assert all(torch.equal(a, b) for a, b in zip(serial, threaded, strict=True))


# --- embeddings --------------------------------------------------------------------------


def test_embeddings_are_float32_unit_vectors_of_model_dim(embedder: VisualBGE, photos) -> None:
    images = list(photos.values())
    for out in (
        embedder.encode(texts=TEXTS),
        embedder.encode(images=images),
        embedder.encode(texts=TEXTS, images=images),
    ):
        assert out.shape == (4, 64) and out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_text_image_and_pair_embeddings_differ(embedder: VisualBGE, photos) -> None:
    text = embedder.encode(texts=["a cat"])[0]
    image = embedder.encode(images=[photos["chelsea"]])[0]
    pair = embedder.encode(texts=["a cat"], images=[photos["chelsea"]])[0]
    for a, b in ((text, image), (text, pair), (image, pair)):
        assert float(a @ b) < 0.999


def test_different_inputs_give_distinct_embeddings(embedder: VisualBGE, photos) -> None:
    for out in (embedder.encode(images=list(photos.values())), embedder.encode(texts=TEXTS)):
        similarity = out @ out.T
        assert similarity[~np.eye(4, dtype=bool)].max() < 0.99


def test_encoding_the_same_image_again_is_deterministic(embedder: VisualBGE, photos) -> None:
    images = [photos["astronaut"], photos["rocket"]]
    np.testing.assert_array_equal(embedder.encode(images=images), embedder.encode(images=images))


def test_same_image_twice_in_a_batch_gives_the_same_embedding(embedder: VisualBGE, photos) -> None:
    twice = embedder.encode(images=[photos["astronaut"], photos["astronaut"]])
    np.testing.assert_allclose(twice[0], twice[1], atol=1e-6)


def test_batched_and_one_at_a_time_agree(embedder: VisualBGE, photos) -> None:
    images = list(photos.values())
    texts = [*TEXTS[:3], "a rocket launch at night with a lot of smoke and fire over the sea"]
    for kwargs in ({"texts": texts}, {"images": images}, {"texts": texts, "images": images}):
        batched = embedder.encode(**kwargs, batch_size=4)
        single = np.concatenate(
            [embedder.encode(**{k: v[i : i + 1] for k, v in kwargs.items()}) for i in range(4)]
        )
        np.testing.assert_allclose(batched, single, atol=1e-5)
        np.testing.assert_allclose(embedder.encode(**kwargs, batch_size=3), batched, atol=1e-5)


def test_preprocessed_tensors_embed_like_pil_images(embedder: VisualBGE, photos) -> None:
    images = list(photos.values())
    tensors = [embedder.preprocess(im) for im in images]
    np.testing.assert_array_equal(embedder.encode(images=tensors), embedder.encode(images=images))


def test_image_with_text_is_nearest_its_own_image(embedder: VisualBGE, photos) -> None:
    images = list(photos.values())
    stored = embedder.encode(images=images)
    queries = embedder.encode(texts=["a photo"] * 4, images=images)
    assert list((queries @ stored.T).argmax(axis=1)) == [0, 1, 2, 3]


def test_long_text_is_truncated_to_what_the_model_takes(embedder: VisualBGE, photos) -> None:
    long_text = " ".join(["the cat sat on the red chair by the window"] * 200)
    out = embedder.encode(texts=[long_text], images=[photos["chelsea"]])
    assert np.isfinite(out).all()
    assert embedder.encode(texts=[long_text]).shape == (1, 64)


def test_empty_batches_give_empty_arrays(embedder: VisualBGE) -> None:
    assert embedder.encode(texts=[]).shape == (0, 64)
    assert embedder.encode(images=[]).shape == (0, 64)


def test_malformed_requests_are_invalid_queries(embedder: VisualBGE, photos) -> None:
    with pytest.raises(InvalidQueryError, match="nothing to encode"):
        embedder.encode()
    with pytest.raises(InvalidQueryError, match="as many texts as images"):
        embedder.encode(texts=["a", "b"], images=[photos["coffee"]])
    with pytest.raises(InvalidQueryError, match="not one string"):
        embedder.encode(texts="a cat")
    with pytest.raises(InvalidQueryError, match="shape"):
        embedder.encode(images=[torch.zeros(3, 32, 32)])


def test_images_alone_embed_as_images_with_the_empty_text(embedder: VisualBGE, photos) -> None:
    images = list(photos.values())
    np.testing.assert_allclose(
        embedder.encode(images=images), embedder.encode(texts=[""] * 4, images=images), atol=1e-6
    )


def test_bfloat16_on_the_cpu_is_mixed_precision_and_stays_close(tiny_dir: Path, photos) -> None:
    reference = create_embedder(tiny_dir, device="cpu", dtype="float32")
    mixed = create_embedder(tiny_dir, device="cpu", dtype="bfloat16")
    assert mixed.autocast and mixed.dtype == torch.bfloat16
    for name, module in mixed.module.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            expected = torch.bfloat16 if isinstance(module, torch.nn.Linear) else torch.float32
            assert weight.dtype == expected, name  # norms, embeddings, patch conv stay float32
    images = list(photos.values())
    for kwargs in ({"texts": TEXTS}, {"images": images}, {"texts": TEXTS, "images": images}):
        got, ref = mixed.encode(**kwargs), reference.encode(**kwargs)
        assert got.dtype == np.float32
        assert float((got * ref).sum(1).min()) > 0.999
        assert np.abs(got - ref).max() > 0  # bfloat16 products did run


def test_float16_casts_every_weight_and_buffer_and_stays_close(tiny_dir: Path, photos) -> None:
    """The precision a GPU gets by default, exercised on the CPU: a plain cast."""
    reference = create_embedder(tiny_dir, device="cpu", dtype="float32")
    half = create_embedder(tiny_dir, device="cpu", dtype="float16")
    assert not half.autocast
    assert {p.dtype for p in half.module.parameters()} == {torch.float16}
    assert {b.dtype for b in half.module.buffers() if b.is_floating_point()} == {torch.float16}
    images = list(photos.values())
    got, ref = half.encode(texts=TEXTS, images=images), reference.encode(texts=TEXTS, images=images)
    assert float((got * ref).sum(1).min()) > 0.999


def test_bfloat16_weight_storage_loses_nothing_autocast_would_keep(tiny_dir: Path, photos) -> None:
    """Storing the linear weights in bfloat16 gives bit for bit what autocast over float32
    weights gives: it casts them to bfloat16 for every product anyway."""
    mixed = create_embedder(tiny_dir, device="cpu", dtype="bfloat16")
    float32_weights = create_embedder(tiny_dir, device="cpu", dtype="float32")
    float32_weights.autocast = True
    images = list(photos.values())
    for kwargs in ({"texts": TEXTS}, {"images": images}, {"texts": TEXTS, "images": images}):
        np.testing.assert_array_equal(mixed.encode(**kwargs), float32_weights.encode(**kwargs))


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_on_the_cpu_is_bfloat16_only_where_the_cpu_has_it(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(devices, "native_bfloat16_cpu", lambda: native)
    built = create_embedder(tiny_dir, device="cpu")
    assert built.dtype == (torch.bfloat16 if native else torch.float32)
    assert built.autocast is native
    assert create_embedder(tiny_dir, device="cpu", dtype="float32").dtype == torch.float32
