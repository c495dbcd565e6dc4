"""Shared pieces of the MCP server tests: test photos and a stand-in for the library.

``RecordingSearch`` implements the ``ImageSearch`` interface over a dict so the adapter
(argument handling, result shaping, progress, cancellation, errors) is tested on its own;
tests/test_mcp_end_to_end.py runs the same tools over the real library.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmsearch.config import Settings
from mmsearch.errors import CollectionNotFoundError
from mmsearch.types import CollectionStats, ImageRecord, IndexProgress, IndexReport, SearchHit

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def write_photos(folder: Path, names: tuple[str, ...] = PHOTOS) -> list[Path]:
    """Save a few skimage sample photos as JPEG files."""
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.jpg"
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(path, quality=90)
        paths.append(path)
    return paths


class RecordingSearch:
    """An in-memory ``ImageSearch`` that remembers how it was called."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.records: dict[str, ImageRecord] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.index_started = threading.Event()
        self.block_index_until_cancelled = False
        self.cancel_seen = threading.Event()
        self.closed = False
        self.index_error: Exception | None = None

    def index(
        self,
        paths: list[Path],
        *,
        recursive: bool = True,
        extensions: Any = None,
        metadata: dict[str, Any] | None = None,
        collection: str | None = None,
        prune: bool = False,
        progress: Callable[[IndexProgress], None] | None = None,
        cancel: threading.Event | None = None,
        captions: bool | None = None,
        roots: Any = None,
    ) -> IndexReport:
        self.calls.append(
            (
                "index",
                {
                    "paths": paths,
                    "recursive": recursive,
                    "metadata": metadata,
                    "captions": captions,
                },
            )
        )
        files = sorted(
            f
            for p in paths
            for f in ([p] if p.is_file() else p.rglob("*.jpg") if recursive else [])
        )
        self.index_started.set()
        if self.index_error is not None:
            raise self.index_error
        report = IndexReport(total=len(files))
        for done, file in enumerate(files, 1):
            if self.block_index_until_cancelled and cancel is not None:
                if progress:
                    progress(IndexProgress(done=0, total=len(files), path=str(file)))
                if cancel.wait(timeout=30):
                    self.cancel_seen.set()
                return report.model_copy(update={"cancelled": True})
            data = file.read_bytes()
            record_id = hashlib.sha256(data).hexdigest()
            self.records[record_id] = ImageRecord(
                id=record_id,
                path=str(file),
                size=len(data),
                mtime=file.stat().st_mtime,
                metadata=metadata or {},
            )
            report.indexed += 1
            if progress:
                progress(IndexProgress(done=done, total=len(files), path=str(file)))
        return report

    def search(
        self,
        *,
        text=None,
        image=None,
        top_k=9,
        filter=None,
        collection=None,
        similar_to=None,
        min_score=None,
    ):
        self.calls.append(("search", {"text": text, "image": image, "top_k": top_k}))
        hits = [
            SearchHit(id=r.id, path=r.path, score=1.0 - i / 10, metadata=r.metadata)
            for i, r in enumerate(self.records.values())
        ]
        return hits[:top_k]

    def get(self, ids, collection=None):
        return [self.records[i] for i in ids if i in self.records]

    def remove(self, *, ids=None, paths=None, collection=None) -> int:
        self.calls.append(("remove", {"ids": ids, "paths": paths}))
        doomed = [
            i
            for i, r in self.records.items()
            if i in (ids or []) or any(Path(r.path) == p for p in (paths or []))
        ]
        for i in doomed:
            del self.records[i]
        return len(doomed)

    def stats(self, collection=None) -> CollectionStats:
        if collection not in (None, "images"):
            raise CollectionNotFoundError(f"collection {collection!r} does not exist")
        return CollectionStats(
            collection="images", count=len(self.records), model_id="fake", dim=4, uri="memory"
        )

    def close(self) -> None:
        self.closed = True


async def index_until_done(client: Any, arguments: dict[str, Any], **kwargs: Any) -> Any:
    """Call index_images until its job has ended, as a client with a request timeout does:
    each call answers within its ``wait_s`` with the job's state, the next one joins it."""
    for _ in range(100):
        result = await client.call_tool("index_images", arguments, **kwargs)
        if result.is_error or result.structured_content["state"] not in ("queued", "running"):
            return result
    raise AssertionError(f"the index job did not end: {result.content}")
