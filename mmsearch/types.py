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
    indexed: int = 0
    """Counts of the run so far (see :class:`IndexReport`); ``failed`` is a number here."""
    unchanged: int = 0
    duplicates: int = 0
    failed: int = 0

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


JobState = Literal["queued", "running", "finished", "failed", "cancelled", "interrupted"]
"""``queued``: waits for the collection's running job; ``finished``: ran to the end
(``report`` holds the result); ``failed``: stopped by an error (``error``); ``cancelled``:
stopped on request, or by ``index_timeout_s``; ``interrupted``: its process stopped
(killed, or shut down) before it ended. Indexing the same paths again resumes it:
files stored before the stop are found unchanged and skipped."""

ACTIVE_JOB_STATES: frozenset[str] = frozenset({"queued", "running"})


class IndexJobStatus(BaseModel):
    """A snapshot of one background index job, safe to hand to another thread or client."""

    id: str
    state: JobState
    collection: str
    paths: list[str]
    """Absolute paths (folders, files, globs) as submitted."""
    recursive: bool = True
    extensions: list[str] | None = None
    metadata: dict[str, Any] | None = None
    prune: bool = False
    captions: bool | None = None
    done: int = 0
    """Files dealt with so far (unchanged, indexed, duplicate or failed) of ``total``."""
    total: int = 0
    """Files found by the scan; 0 until the scan is done."""
    indexed: int = 0
    unchanged: int = 0
    duplicates: int = 0
    failed: int = 0
    """How many files failed so far (their list is in ``report`` once the job ends)."""
    submitted_at: float
    """POSIX seconds."""
    started_at: float | None = None
    finished_at: float | None = None
    elapsed_s: float = 0.0
    """Seconds since it started (until it ended, once it has)."""
    eta_s: float | None = None
    """Estimated seconds left, from the rate so far; ``None`` before there is a rate."""
    error: str | None = None
    """Why it failed, was cancelled or was interrupted."""
    report: IndexReport | None = None
    """The run's full report, once it has ended (finished or cancelled)."""
    pid: int
    """The process that runs (or ran) it."""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_JOB_STATES


class IndexJobList(BaseModel):
    jobs: list[IndexJobStatus] = Field(description="Most recently submitted first.")
