"""The records that cross the library's public API (and the MCP server's)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from mmsearch.pathnames import printable


class ImageRecord(BaseModel):
    """One stored image. ``id`` is the SHA-256 of the file's bytes (hex)."""

    id: str
    path: str
    size: int
    mtime: float
    metadata: dict[str, Any] = Field(default_factory=dict)
    caption: str | None = None
    """The vision-language model's caption of the image; ``None`` when it has none."""


class SearchHit(BaseModel):
    id: str
    path: str
    score: float
    """Higher is closer. ``score_kind`` says what it is: ``cosine``, the cosine similarity
    between the query and the image embedding; ``rrf``, the reciprocal rank fusion score
    of a text query answered from several rankings (image embeddings and captions):
    the sum over rankings of ``1 / (k + rank)``."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    score_kind: Literal["cosine", "rrf"] = "cosine"
    cosine: float | None = None
    """Cosine similarity between the query and the image embedding, whatever ``score_kind``."""
    caption: str | None = None
    """The image's stored caption, when it has one."""


class FailedFile(BaseModel):
    path: str
    reason: str

    @field_validator("path", "reason")
    @classmethod
    def _printable(cls, text: str) -> str:
        """A file name that is not UTF-8 is reported with its bytes escaped, so the
        report can be written as JSON (MCP) and printed."""
        return printable(text)


class IndexProgress(BaseModel):
    """Reported to the progress callback while indexing."""

    done: int
    total: int
    path: str | None = None

    @field_validator("path")
    @classmethod
    def _printable(cls, text: str | None) -> str | None:
        return None if text is None else printable(text)


class IndexReport(BaseModel):
    indexed: int = 0
    """Files embedded and stored by this run (new or changed)."""
    unchanged: int = 0
    """Files skipped because their size, mtime (or content) had not changed."""
    removed: int = 0
    """Records pruned because their file is gone (only when pruning was asked for)."""
    duplicates: int = 0
    """Files not stored because the same bytes are already stored under another path."""
    failed: list[FailedFile] = Field(default_factory=list)
    captioned: int = 0
    """Images given a caption by this run (only when captions were asked for)."""
    caption_failed: list[FailedFile] = Field(default_factory=list)
    """Images indexed without a caption because the model failed on them; a later run
    with captions tries them again."""
    total: int = 0
    """Files considered by this run."""
    cancelled: bool = False
    timed_out: bool = False
    """The run stopped between batches because it passed ``index_timeout_s``
    (``cancelled`` is then True too); running it again continues where it stopped."""


class CollectionStats(BaseModel):
    collection: str
    count: int
    model_id: str
    dim: int
    uri: str


class RerankCandidate(BaseModel):
    """An image to rerank: its ID (any string; never shown to the model) and file."""

    id: str
    path: str


class RankedCandidates(BaseModel):
    """The reranker's answer: every candidate ID exactly once."""

    ids: list[str]
    """Candidate IDs, best first. When ``reranked`` is False: the order they came in."""
    reranked: bool
    """True when the order is the model's judgement; False when it fell back to the
    retrieval order (timeout, model failure), see ``note``."""
    reason: str = ""
    """The model's short explanation of its ranking."""
    model_id: str = ""
    note: str = ""
    """Why the retrieval order was kept, or what else went wrong (unreadable files)."""
    elapsed_s: float = 0.0
