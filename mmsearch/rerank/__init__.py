"""Rerank image candidates with a vision-language model whose answer is, by
construction, a permutation of the candidates.

Names are imported on first use, so that registering the CLI command does not load
torch, transformers and Outlines.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Generation": "mmsearch.rerank.backends",
    "Phi3VisionVLM": "mmsearch.rerank.backends",
    "TransformersVLM": "mmsearch.rerank.backends",
    "VisionLanguageModel": "mmsearch.rerank.backends",
    "detect_backend": "mmsearch.rerank.backends",
    "load_vlm": "mmsearch.rerank.backends",
    "PermutationLogitsProcessor": "mmsearch.rerank.constrained",
    "TokenVocabulary": "mmsearch.rerank.constrained",
    "Reranker": "mmsearch.rerank.pipeline",
    "rerank": "mmsearch.rerank.pipeline",
    "ContactSheet": "mmsearch.rerank.sheet",
    "build_contact_sheet": "mmsearch.rerank.sheet",
    "RankedCandidates": "mmsearch.types",
    "RerankCandidate": "mmsearch.types",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
