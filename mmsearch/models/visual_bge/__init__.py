"""Visualized BGE (BAAI/bge-visualized): EVA02-CLIP image tokens fused into a BGE text
encoder. Loads the official checkpoints key for key onto timm and transformers modules."""

from mmsearch.models.visual_bge.checkpoint import (
    ModelFiles,
    checkpoint_filter_fn,
    checkpoint_fingerprint,
    resolve_model_files,
)
from mmsearch.models.visual_bge.config import VARIANTS, VisionConfig, VisualBGEVariant
from mmsearch.models.visual_bge.embedder import VisualBGE, create_embedder
from mmsearch.models.visual_bge.model import VisualBGEModule
from mmsearch.models.visual_bge.preprocess import build_preprocess

__all__ = [
    "VARIANTS",
    "ModelFiles",
    "VisionConfig",
    "VisualBGE",
    "VisualBGEModule",
    "VisualBGEVariant",
    "build_preprocess",
    "checkpoint_filter_fn",
    "checkpoint_fingerprint",
    "create_embedder",
    "resolve_model_files",
]
