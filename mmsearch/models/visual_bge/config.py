"""Named Visualized BGE variants and the vision-tower sizes read from a checkpoint."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from mmsearch.errors import ModelLoadError

WEIGHTS_REPO = "BAAI/bge-visualized"
VISION_PREFIX = "model_visual.visual."

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

EVA02_ROPE_REF_GRID = 16
"""EVA02-CLIP computes its rotary frequencies for a 16x16 reference grid and rescales
them to the actual grid (224/16 = 14 or 224/14 = 16). The loader checks the rope tables
stored in the checkpoint against this, so a checkpoint built otherwise is refused."""


@dataclass(frozen=True)
class VisualBGEVariant:
    """A published Visualized BGE checkpoint: where its files live and which timm tower
    family it uses. Sizes are not recorded here; they are read from the checkpoint."""

    name: str
    checkpoint_file: str
    text_repo: str
    timm_model: str
    text_files: tuple[str, ...]
    """Files fetched from ``text_repo``: ``config.json`` plus the tokenizer."""


VARIANTS: dict[str, VisualBGEVariant] = {
    v.name: v
    for v in (
        VisualBGEVariant(
            name="base_en_v1.5",
            checkpoint_file="Visualized_base_en_v1.5.pth",
            text_repo="BAAI/bge-base-en-v1.5",
            timm_model="eva02_base_patch16_clip_224",
            text_files=(
                "config.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "tokenizer.json",
                "vocab.txt",
            ),
        ),
        VisualBGEVariant(
            name="m3",
            checkpoint_file="Visualized_m3.pth",
            text_repo="BAAI/bge-m3",
            timm_model="eva02_large_patch14_clip_224",
            text_files=(
                "config.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "tokenizer.json",
                "sentencepiece.bpe.model",
            ),
        ),
    )
}

TIMM_MODEL_BY_TEXT_TYPE = {
    "bert": "eva02_base_patch16_clip_224",
    "xlm-roberta": "eva02_large_patch14_clip_224",
}


def variant_for_checkpoint_file(filename: str) -> VisualBGEVariant | None:
    for variant in VARIANTS.values():
        if variant.checkpoint_file == filename:
            return variant
    return None


@dataclass(frozen=True)
class VisionConfig:
    """EVA02-CLIP tower sizes, all read from the checkpoint's tensors."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], prefix: str = VISION_PREFIX
    ) -> VisionConfig:
        """Read the tower's sizes from an official checkpoint.

        The patch size comes from the patch embedding kernel, the image size from the
        length of the absolute position table, the head size from the stored rotary
        tables, the MLP width from the first SwiGLU gate.
        """

        def get(name: str) -> torch.Tensor:
            try:
                return state_dict[prefix + name]
            except KeyError:
                raise ModelLoadError(
                    f"checkpoint has no {prefix + name!r}; is this a Visualized BGE checkpoint?"
                ) from None

        patch_w = get("patch_embed.proj.weight")
        if patch_w.ndim != 4 or patch_w.shape[-1] != patch_w.shape[-2]:
            raise ModelLoadError(f"unexpected patch embedding shape {tuple(patch_w.shape)}")
        embed_dim, patch_size = int(patch_w.shape[0]), int(patch_w.shape[-1])
        pos = get("pos_embed")
        num_patches = int(pos.shape[1]) - 1
        grid = math.isqrt(num_patches)
        if grid * grid != num_patches:
            raise ModelLoadError(f"position table of {num_patches} patches is not a square grid")
        freqs_cos = get("rope.freqs_cos")
        head_dim = int(freqs_cos.shape[-1])
        if head_dim == 0 or embed_dim % head_dim or int(freqs_cos.shape[0]) != num_patches:
            raise ModelLoadError(
                f"rotary table of shape {tuple(freqs_cos.shape)} does not fit width {embed_dim} "
                f"and {num_patches} patches"
            )
        block_re = re.compile(re.escape(prefix) + r"blocks\.(\d+)\.")
        blocks = {int(m.group(1)) for k in state_dict if (m := block_re.match(k))}
        if not blocks or blocks != set(range(len(blocks))):
            raise ModelLoadError(
                f"vision blocks are missing or not numbered 0..n-1: {sorted(blocks)}"
            )
        mlp_hidden = int(get("blocks.0.mlp.w1.weight").shape[0])
        return cls(
            img_size=grid * patch_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=len(blocks),
            num_heads=embed_dim // head_dim,
            mlp_hidden=mlp_hidden,
        )
