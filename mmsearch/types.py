"""The records that cross the library's public API (and the MCP server's)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ImageRecord(BaseModel):
    """One stored image. ``id`` is the SHA-256 of the file's bytes (hex)."""

    id: str
    path: str
    size: int
    mtime: float
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchHit(BaseModel):
    id: str
    path: str
    score: float
    """Cosine similarity between the query and the image embedding (higher is closer)."""
    metadata: dict[str, Any] = Field(default_factory=dict)


class FailedFile(BaseModel):
    path: str
    reason: str


class IndexProgress(BaseModel):
    """Reported to the progress callback while indexing."""

    done: int
    total: int
    path: str | None = None


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
    total: int = 0
    """Files considered by this run."""
    cancelled: bool = False


class CollectionStats(BaseModel):
    collection: str
    count: int
    model_id: str
    dim: int
    uri: str
