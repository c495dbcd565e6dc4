"""Phi-3 / Phi-3.5 Vision on transformers' own Phi-3 and CLIP modules, loading the
official checkpoints key for key (no remote code)."""

from mmsearch.models.phi3v.checkpoint import DEFAULT_MODEL, official_to_ours
from mmsearch.models.phi3v.config import Phi3VConfig, parse_config
from mmsearch.models.phi3v.image_processing import Phi3VImageProcessor
from mmsearch.models.phi3v.loader import load_phi3v
from mmsearch.models.phi3v.modeling import Phi3VForCausalLM, Phi3VImageEmbedding
from mmsearch.models.phi3v.processing import Phi3VProcessor, render_chat

__all__ = [
    "DEFAULT_MODEL",
    "Phi3VConfig",
    "Phi3VForCausalLM",
    "Phi3VImageEmbedding",
    "Phi3VImageProcessor",
    "Phi3VProcessor",
    "load_phi3v",
    "official_to_ours",
    "parse_config",
    "render_chat",
]
