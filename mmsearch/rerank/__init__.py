"""Rerank image candidates with a vision-language model whose answer is, by
construction, a permutation of the candidates."""

from mmsearch.rerank.backends import (
    Generation,
    Phi3VisionVLM,
    TransformersVLM,
    VisionLanguageModel,
    detect_backend,
    load_vlm,
)
from mmsearch.rerank.constrained import PermutationLogitsProcessor, TokenVocabulary
from mmsearch.rerank.pipeline import Reranker, rerank
from mmsearch.rerank.sheet import ContactSheet, build_contact_sheet
from mmsearch.types import RankedCandidates, RerankCandidate

__all__ = [
    "ContactSheet",
    "Generation",
    "PermutationLogitsProcessor",
    "Phi3VisionVLM",
    "RankedCandidates",
    "RerankCandidate",
    "Reranker",
    "TokenVocabulary",
    "TransformersVLM",
    "VisionLanguageModel",
    "build_contact_sheet",
    "detect_backend",
    "load_vlm",
    "rerank",
]
