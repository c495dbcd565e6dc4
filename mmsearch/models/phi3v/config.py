"""Phi-3 Vision configuration: the official ``config.json`` read into transformers' own
``Phi3Config`` (language model) and ``CLIPVisionConfig`` (vision tower) plus the few
settings of the HD image embedding.

The official config names the vision tower only by ``img_processor.model_name``
(``openai/clip-vit-large-patch14-336``); its sizes are fixed in the upstream code. We take
them from the checkpoint's tensor shapes instead, so that a checkpoint with a smaller
tower (the tiny test checkpoints) is described by the same file format.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from transformers import CLIPVisionConfig, Phi3Config

from mmsearch.errors import ModelLoadError

CLIP_PREFIX = "model.vision_embed_tokens.img_processor.vision_model."

# ViT-L/14 at 336 px, the tower every released Phi-3 / Phi-3.5 Vision checkpoint uses.
CLIP_VIT_L14_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
}


@dataclass(frozen=True)
class Phi3VConfig:
    """Everything needed to build the model, derived from ``config.json`` and the
    checkpoint's tensor shapes."""

    text: Phi3Config
    vision: CLIPVisionConfig
    feature_layer: int
    """Which CLIP hidden state feeds the projection (``-2``: the second to last)."""
    num_img_tokens: int
    """Tokens per 336 px tile after the 2x2 merge (144 for ViT-L/14-336)."""
    torch_dtype: str | None
    eos_token_ids: tuple[int, ...]

    @property
    def tile_size(self) -> int:
        return int(self.vision.image_size)

    @property
    def merged_grid(self) -> int:
        """Side of one tile's feature grid after merging 2x2 patches (12 for 336/14)."""
        return int(self.vision.image_size) // int(self.vision.patch_size) // 2


def _require(cfg: Mapping[str, Any], key: str) -> Any:
    if key not in cfg:
        raise ModelLoadError(f"Phi-3 Vision config.json lacks {key!r}")
    return cfg[key]


def text_config_from_official(cfg: Mapping[str, Any]) -> Phi3Config:
    """The language model's ``Phi3Config`` from the official keys (``rope_scaling`` of type
    ``su``/``longrope`` becomes transformers' ``longrope`` parameters)."""
    hidden = int(_require(cfg, "hidden_size"))
    heads = int(_require(cfg, "num_attention_heads"))
    max_pos = int(cfg.get("max_position_embeddings", 4096))
    orig_max = int(cfg.get("original_max_position_embeddings", max_pos))
    theta = float(cfg.get("rope_theta", 10000.0))
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": theta}
    scaling = cfg.get("rope_scaling")
    if scaling:
        kind = scaling.get("type", scaling.get("rope_type"))
        if kind not in ("su", "longrope", "yarn"):
            raise ModelLoadError(f"unsupported rope_scaling type {kind!r} in Phi-3 Vision config")
        if kind == "yarn":
            raise ModelLoadError("rope_scaling type 'yarn' (Phi-3 yarn variant) is not supported")
        head_dim = hidden // heads
        for name in ("long_factor", "short_factor"):
            if len(scaling.get(name, ())) != head_dim // 2:
                raise ModelLoadError(
                    f"rope_scaling.{name} must have {head_dim // 2} entries (head_dim/2)"
                )
        rope = {
            "rope_type": "longrope",
            "rope_theta": theta,
            "long_factor": [float(x) for x in scaling["long_factor"]],
            "short_factor": [float(x) for x in scaling["short_factor"]],
            "original_max_position_embeddings": orig_max,
            "factor": max_pos / orig_max,
        }
    eos = cfg.get("eos_token_id", 2)
    return Phi3Config(
        vocab_size=int(_require(cfg, "vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(_require(cfg, "intermediate_size")),
        num_hidden_layers=int(_require(cfg, "num_hidden_layers")),
        num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        hidden_act=str(cfg.get("hidden_act", "silu")),
        max_position_embeddings=max_pos,
        original_max_position_embeddings=orig_max,
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        rope_parameters=rope,
        bos_token_id=cfg.get("bos_token_id", 1),
        eos_token_id=eos,
        pad_token_id=cfg.get("pad_token_id"),
        sliding_window=cfg.get("sliding_window"),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_dropout=0.0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
    )


def vision_config_from_shapes(
    img_processor: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]
) -> CLIPVisionConfig:
    """CLIP tower sizes read off the checkpoint (official key names); the ViT-L/14-336
    constants fill what shapes cannot tell (activation, head count per 64 channels)."""
    try:
        hidden = shapes[CLIP_PREFIX + "embeddings.class_embedding"][0]
        patch = shapes[CLIP_PREFIX + "embeddings.patch_embedding.weight"][-1]
        positions = shapes[CLIP_PREFIX + "embeddings.position_embedding.weight"][0]
        intermediate = shapes[CLIP_PREFIX + "encoder.layers.0.mlp.fc1.weight"][0]
    except KeyError as exc:
        missing = exc.args[0]
        raise ModelLoadError(f"checkpoint lacks the CLIP vision tower tensor {missing}") from exc
    layer_ids = {
        int(k[len(CLIP_PREFIX + "encoder.layers.") :].split(".", 1)[0])
        for k in shapes
        if k.startswith(CLIP_PREFIX + "encoder.layers.")
    }
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise ModelLoadError(f"CLIP position table of {positions} rows is not a square grid + CLS")
    values = dict(CLIP_VIT_L14_336)
    values.update(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=len(layer_ids),
        patch_size=patch,
        image_size=grid * patch,
        num_attention_heads=int(img_processor.get("num_attention_heads", max(1, hidden // 64))),
    )
    return CLIPVisionConfig(**values)


def parse_config(cfg: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> Phi3VConfig:
    """Validate an official Phi-3 Vision ``config.json`` against the checkpoint and build
    our configuration. Raises :class:`ModelLoadError` for anything we cannot run."""
    img = cfg.get("img_processor")
    embd = cfg.get("embd_layer")
    if not isinstance(img, dict) or img.get("name") != "clip_vision_model":
        raise ModelLoadError(
            "not a Phi-3 Vision config: img_processor.name must be 'clip_vision_model'"
        )
    if not isinstance(embd, dict):
        raise ModelLoadError("not a Phi-3 Vision config: embd_layer is missing")
    if not (embd.get("use_hd_transform") and embd.get("with_learnable_separator")):
        raise ModelLoadError("only the HD transform with learnable separators is supported")
    if embd.get("hd_transform_order", "glb_sub") != "sub_glb":
        raise ModelLoadError(f"hd_transform_order {embd.get('hd_transform_order')!r} unsupported")
    if embd.get("projection_cls", "linear") != "mlp":
        raise ModelLoadError(f"projection_cls {embd.get('projection_cls')!r} unsupported")
    if img.get("type_feature", "patch") != "patch":
        raise ModelLoadError(f"type_feature {img.get('type_feature')!r} unsupported")

    vision = vision_config_from_shapes(img, shapes)
    dim_out = int(img.get("image_dim_out", vision.hidden_size))
    if dim_out != vision.hidden_size:
        raise ModelLoadError(
            f"img_processor.image_dim_out={dim_out} but the CLIP tower is {vision.hidden_size} wide"
        )
    grid = vision.image_size // vision.patch_size
    if grid % 2:
        raise ModelLoadError(f"CLIP patch grid {grid} is odd; the 2x2 merge needs an even grid")
    num_img_tokens = int(img.get("num_img_tokens", (grid // 2) ** 2))
    if num_img_tokens != (grid // 2) ** 2:
        raise ModelLoadError(
            f"img_processor.num_img_tokens={num_img_tokens} does not match the "
            f"{vision.image_size}px/{vision.patch_size}px tower ({(grid // 2) ** 2} per tile)"
        )
    feature_layer = int(img.get("layer_idx", -2))
    if not -vision.num_hidden_layers - 1 <= feature_layer <= vision.num_hidden_layers:
        raise ModelLoadError(f"img_processor.layer_idx={feature_layer} out of range")

    text = text_config_from_official(cfg)
    eos = cfg.get("eos_token_id", 2)
    eos_ids = tuple(eos) if isinstance(eos, list) else (int(eos),)
    return Phi3VConfig(
        text=text,
        vision=vision,
        feature_layer=feature_layer,
        num_img_tokens=num_img_tokens,
        torch_dtype=cfg.get("torch_dtype"),
        eos_token_ids=eos_ids,
    )
