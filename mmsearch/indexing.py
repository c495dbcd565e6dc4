"""Indexing files, folders and globs into a collection.

The work per run:

1. expand the given paths into image files (folders walked, globs expanded);
2. look their paths up in the store: a file whose size and mtime match its stored
   record is skipped without being read;
3. read, hash, decode and preprocess the remaining files on a thread pool, one batch
   ahead of the model, and embed each batch;
4. write the batch (new content is embedded; content already stored is reused), then
   drop the records the batch replaced;
5. with captions asked for: caption the batch's images that have no caption yet (a
   vision-language model), embed the captions with the embedder's text tower, and store
   both with the image; afterwards, caption the unchanged files that still lack one
   (their image embedding is kept, not recomputed);
6. optionally prune records under the given roots whose files are gone.

Between batches the store is consistent, which is where cancellation takes effect.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.access import is_inside
from mmsearch.config import Settings
from mmsearch.errors import CaptionError, ImageDecodeError, InvalidQueryError, MMSearchError
from mmsearch.filters import SearchFilter, check_metadata, quote_string, to_milvus_expr
from mmsearch.images import load_image_file
from mmsearch.pathnames import NOT_UTF8_REASON, check_path, is_utf8
from mmsearch.selection import (  # noqa: F401 (DEFAULT_EXTENSIONS: re-exported)
    DEFAULT_EXTENSIONS,
    glob_base,
    has_magic,
    has_wanted_extension,
    normalize_extensions,
)
from mmsearch.store import CollectionInfo, MilvusStore, StoredRow
from mmsearch.types import FailedFile, ImageRecord, IndexProgress, IndexReport

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from mmsearch.captioning import Captioner
    from mmsearch.embedding import ImageTextEmbedder

log = logging.getLogger(__name__)

ProgressCallback = Callable[[IndexProgress], None]


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Regex matching what :func:`glob.glob` (``recursive=True``) would match for
    ``pattern``: ``*`` and ``?`` stay within one path component, ``**`` spans any."""
    i, n, out = 0, len(pattern), []
    while i < n:
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(ch))
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end + 1
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


@dataclass(frozen=True)
class _Root:
    """Where pruning may look: a folder (recursively or not), a glob, or one file."""

    kind: str  # "dir" | "glob" | "file" | "missing" (a path that is gone: file or folder)
    path: str
    recursive: bool = True

    def prefix_expr(self) -> str:
        folder = self.path
        if self.kind == "glob":
            folder = glob_base(self.path)
        if self.kind == "file":
            return f"path == {quote_string(self.path)}"
        return to_milvus_expr(SearchFilter(path_prefix=folder))

    def covers(self, path: str) -> bool:
        if self.kind == "file":
            return path == self.path
        if self.kind == "missing":
            return path == self.path or path.startswith(self.path.rstrip(os.sep) + os.sep)
        if self.kind == "glob":
            return bool(glob_regex(self.path).match(path))
        if self.recursive:
            return path.startswith(self.path.rstrip(os.sep) + os.sep)
        return os.path.dirname(path) == self.path


@dataclass
class _Candidate:
    path: str
    size: int
    mtime: float
    existing: ImageRecord | None = None


@dataclass
class _Prepared:
    cand: _Candidate
    sha256: str
    pixels: torch.Tensor | None
    image: Image.Image | None = None
    """A small copy for the caption model (only when captions are asked for)."""


@dataclass
class _Scan:
    files: list[_Candidate] = field(default_factory=list)
    failed: list[FailedFile] = field(default_factory=list)
    roots: list[_Root] = field(default_factory=list)


def _reason(exc: BaseException, path: str) -> str:
    msg = str(exc)
    prefix = f"{path}: "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


def scan_paths(
    paths: Sequence[str | os.PathLike[str]],
    *,
    recursive: bool = True,
    extensions: Iterable[str] | None = None,
    roots: Sequence[Path] | None = None,
    max_files: int | None = None,
) -> _Scan:
    """Expand paths into image files (absolute, deduplicated, sorted per root).

    With ``roots`` (resolved folders), a file found in a folder or by a glob whose real
    location (symlinks followed) is outside every root is reported, not read: a link
    inside an allowed folder cannot lead the indexer out of it. Folder walks never
    descend into linked folders. More than ``max_files`` files is refused before any is
    read, and the walk stops as soon as the limit is passed.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    exts = normalize_extensions(extensions)
    scan = _Scan()
    seen: set[str] = set()

    def add(path: str, st: os.stat_result) -> None:
        if path in seen:
            return
        seen.add(path)
        if not is_utf8(path):
            scan.failed.append(FailedFile(path=path, reason=NOT_UTF8_REASON))
            return
        if roots is not None and not is_inside(path, roots):
            scan.failed.append(
                FailedFile(path=path, reason="links to a file outside the allowed roots")
            )
            return
        if max_files is not None and len(scan.files) >= max_files:
            raise InvalidQueryError(
                f"more than {max_files} image files to index in one call (setting "
                "max_index_files); index the folders separately or raise the limit"
            )
        scan.files.append(_Candidate(path=path, size=st.st_size, mtime=st.st_mtime))

    def wanted(name: str) -> bool:
        return has_wanted_extension(name, exts)

    for raw in paths:
        given = check_path(raw)
        if not given:
            raise InvalidQueryError("an empty path was given")
        path = os.path.abspath(os.path.expanduser(given))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            scan.failed.append(FailedFile(path=path, reason=f"cannot access: {exc.strerror}"))
            continue
        if st is None and has_magic(given):
            scan.roots.append(_Root("glob", path))
            for match in sorted(glob.glob(path, recursive=True)):
                try:
                    mst = os.stat(match)
                except OSError:
                    continue
                if stat_mod.S_ISREG(mst.st_mode) and wanted(match):
                    add(os.path.abspath(match), mst)
            continue
        if st is None:
            scan.failed.append(FailedFile(path=path, reason="no such file or directory"))
            scan.roots.append(_Root("missing", path))
            continue
        if stat_mod.S_ISDIR(st.st_mode):
            scan.roots.append(_Root("dir", path, recursive))
            for dirpath, dirnames, filenames in os.walk(path, onerror=None):
                dirnames.sort()
                if not recursive:
                    dirnames.clear()
                for name in sorted(filenames):
                    if not wanted(name):
                        continue
                    full = os.path.join(dirpath, name)
                    try:
                        fst = os.stat(full)
                    except OSError as exc:
                        scan.failed.append(
                            FailedFile(path=full, reason=f"cannot access: {exc.strerror}")
                        )
                        continue
                    if stat_mod.S_ISREG(fst.st_mode):
                        add(full, fst)
        elif stat_mod.S_ISREG(st.st_mode):
            scan.roots.append(_Root("file", path))
            add(path, st)
        else:
            scan.failed.append(FailedFile(path=path, reason="not a regular file"))
    return scan


class _Run:
    """State of one indexing run."""

    def __init__(
        self,
        store: MilvusStore,
        embedder: ImageTextEmbedder,
        settings: Settings,
        collection: str,
        metadata: dict[str, Any] | None,
        progress: ProgressCallback | None,
        captioner: Captioner | None = None,
    ) -> None:
        self.store = store
        self.captioner = captioner
        self.embedder = embedder
        self.settings = settings
        self.collection = collection
        self.metadata = metadata
        self.progress = progress
        self.report = IndexReport()
        self.claimed: set[str] = set()
        self.done = 0

    def notify(self, path: str | None) -> None:
        if self.progress is not None:
            report = self.report
            self.progress(
                IndexProgress(
                    done=self.done,
                    total=report.total,
                    path=path,
                    indexed=report.indexed,
                    unchanged=report.unchanged,
                    duplicates=report.duplicates,
                    failed=len(report.failed),
                )
            )

    def prepare(self, cand: _Candidate, *, embed: bool = True) -> _Prepared | FailedFile:
        """Worker thread: read once, hash, decode, preprocess for the embedder (unless
        ``embed`` is false: an unchanged file read again for its caption only)."""
        try:
            loaded = load_image_file(
                cand.path,
                max_bytes=self.settings.max_image_bytes,
                max_pixels=self.settings.max_image_pixels,
            )
            pixels = self.embedder.preprocess(loaded.image) if embed else None
            small = self._caption_image(loaded.image)
        except ImageDecodeError as exc:
            return FailedFile(path=cand.path, reason=_reason(exc, cand.path))
        except Exception as exc:  # one bad file must not stop the run
            log.debug("preparing %s failed", cand.path, exc_info=True)
            what = "preprocess" if embed else "read"
            return FailedFile(path=cand.path, reason=f"cannot {what} image: {exc}")
        return _Prepared(cand=cand, sha256=loaded.sha256, pixels=pixels, image=small)

    def _caption_image(self, image: Image.Image) -> Image.Image | None:
        if self.captioner is None:
            return None
        from mmsearch.captioning import caption_image

        return caption_image(image)

    def prepare_caption(self, cand: _Candidate) -> _Prepared | FailedFile:
        return self.prepare(cand, embed=False)

    def add_captions(self, rows: list[StoredRow], images: list[Image.Image]) -> None:
        """Caption ``images`` and put each caption and its text embedding on its row; a
        row the model gives no caption keeps none (and is listed in ``caption_failed``)."""
        if not rows or self.captioner is None:
            return
        try:
            texts = list(self.captioner.caption(images))
        except MMSearchError:
            raise
        except Exception as exc:
            log.warning("captioning failed: %s", exc, exc_info=True)
            texts = [None] * len(rows)
            reason = f"captioning failed: {type(exc).__name__}: {exc}"
        else:
            reason = "the caption model gave no caption"
        if len(texts) != len(rows):
            raise CaptionError(
                f"the captioner returned {len(texts)} captions for {len(rows)} images"
            )
        from mmsearch.captioning import clean_caption

        done: list[tuple[StoredRow, str]] = []
        for row, text in zip(rows, texts, strict=True):
            text = clean_caption(text) if isinstance(text, str) else ""
            if text:
                done.append((row, text))
            else:
                self.report.caption_failed.append(FailedFile(path=row.path, reason=reason))
        if not done:
            return
        vecs = np.asarray(
            self.embedder.encode(texts=[t for _, t in done], batch_size=len(done)),
            dtype=np.float32,
        )
        if vecs.shape != (len(done), self.embedder.dim):
            raise MMSearchError(f"embedder returned shape {vecs.shape} for {len(done)} captions")
        for (row, text), vec in zip(done, vecs, strict=True):
            row.caption = text
            row.caption_vector = vec
        self.report.captioned += len(done)

    def _stored_is_current(self, row: Mapping[str, Any]) -> bool:
        """Is the file a stored record points to still there with the same stat?"""
        try:
            st = os.stat(row["path"])
        except OSError:
            return False
        return st.st_size == int(row["size"]) and st.st_mtime == float(row["mtime"])

    def embed(self, items: list[_Prepared]) -> tuple[list[_Prepared], np.ndarray]:
        """Embed a batch; when the batch fails, retry file by file to isolate the culprit."""
        if not items:
            return [], np.zeros((0, self.embedder.dim), dtype=np.float32)
        try:
            vecs = self._encode([it.pixels for it in items])
            return items, vecs
        except MMSearchError:
            raise
        except Exception:
            if len(items) == 1:
                raise
            log.debug("batch embedding failed; retrying one by one", exc_info=True)
        kept, rows = [], []
        for it in items:
            try:
                rows.append(self._encode([it.pixels])[0])
                kept.append(it)
            except MMSearchError:
                raise
            except Exception as exc:
                self.report.failed.append(
                    FailedFile(path=it.cand.path, reason=f"embedding failed: {exc}")
                )
        if not rows:
            return [], np.zeros((0, self.embedder.dim), dtype=np.float32)
        return kept, np.stack(rows)

    def _encode(self, pixels: list[torch.Tensor]) -> np.ndarray:
        vecs = np.asarray(
            self.embedder.encode(images=pixels, batch_size=len(pixels)), dtype=np.float32
        )
        if vecs.shape != (len(pixels), self.embedder.dim):
            raise MMSearchError(
                f"embedder returned shape {vecs.shape}, expected ({len(pixels)}, "
                f"{self.embedder.dim})"
            )
        return vecs

    def handle_batch(self, results: list[_Prepared | FailedFile]) -> None:
        prepared: list[_Prepared] = []
        for res in results:
            if isinstance(res, FailedFile):
                self.report.failed.append(res)
            else:
                prepared.append(res)
        stored = self.store.get_rows(
            self.collection, [p.sha256 for p in prepared], with_vectors=True
        )
        writes: list[StoredRow] = []
        images: dict[str, Image.Image | None] = {}
        to_embed: list[_Prepared] = []
        replaced: dict[str, str] = {}  # old id -> path whose content changed
        for item in prepared:
            cand = item.cand
            old = cand.existing
            if old is not None and old.id != item.sha256:
                replaced[old.id] = cand.path
            if item.sha256 in self.claimed:
                self.report.duplicates += 1
                continue
            row = stored.get(item.sha256)
            if row is None:
                to_embed.append(item)
                self.claimed.add(item.sha256)
                continue
            same_path = row["path"] == cand.path
            if not same_path and self._stored_is_current(row):
                self.report.duplicates += 1
                continue
            # Same bytes already embedded: keep the vector, refresh path and stat.
            self.claimed.add(item.sha256)
            meta = self.metadata if self.metadata is not None else dict(row.get("metadata") or {})
            writes.append(
                StoredRow(
                    id=item.sha256,
                    path=cand.path,
                    size=cand.size,
                    mtime=cand.mtime,
                    metadata=meta,
                    vector=np.asarray(row["vector"], dtype=np.float32),
                    **_stored_caption(row),
                )
            )
            images[item.sha256] = item.image
            if same_path:
                self.report.unchanged += 1
            else:
                self.report.indexed += 1
        kept, vecs = self.embed(to_embed)
        for item, vec in zip(kept, vecs, strict=True):
            cand = item.cand
            if self.metadata is not None:
                meta = self.metadata
            elif cand.existing is not None:
                meta = dict(cand.existing.metadata)
            else:
                meta = {}
            writes.append(
                StoredRow(
                    id=item.sha256,
                    path=cand.path,
                    size=cand.size,
                    mtime=cand.mtime,
                    metadata=meta,
                    vector=vec,
                )
            )
            images[item.sha256] = item.image
            self.report.indexed += 1
        uncaptioned = [w for w in writes if not w.caption and images.get(w.id) is not None]
        self.add_captions(uncaptioned, [images[w.id] for w in uncaptioned])  # type: ignore[misc]
        self.store.upsert(self.collection, writes, model_id=self.embedder.model_id)
        written = {w.id for w in writes}
        # A file whose new content could not be embedded keeps its old record until a
        # later run succeeds.
        unembedded = {it.cand.path for it in to_embed} - {it.cand.path for it in kept}
        stale = [i for i, p in replaced.items() if i not in written and p not in unembedded]
        if stale:
            self.store.delete(self.collection, stale)


def _stored_caption(row: Mapping[str, Any]) -> dict[str, Any]:
    """The caption fields of a stored row, to carry over when the row is rewritten."""
    caption = row.get("caption") or ""
    vector = row.get("caption_vector")
    if not caption or vector is None:
        return {}
    return {"caption": caption, "caption_vector": np.asarray(vector, dtype=np.float32)}


def require_caption_field(info: CollectionInfo) -> None:
    """Captions can only go where the collection has a field for them."""
    if not info.caption:
        raise CaptionError(
            f"collection {info.name!r} was created before mmsearch stored captions, so it "
            "has no field for them; it still answers every query without captions. Index "
            "into a new collection (--collection) to use captions."
        )


def index_paths(
    store: MilvusStore,
    embedder: ImageTextEmbedder,
    paths: Sequence[str | os.PathLike[str]],
    *,
    settings: Settings,
    collection: str,
    recursive: bool = True,
    extensions: Iterable[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    prune: bool = False,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    captioner: Captioner | None = None,
    roots: Sequence[Path] | None = None,
) -> IndexReport:
    """Index image files, folders and globs into ``collection``; see the module doc.

    With a ``captioner``, every image indexed or found unchanged without a caption gets
    one (stored in ``caption``, its text embedding in ``caption_vector``); an image that
    already has a caption keeps it. Raises :class:`CaptionError` before any work when
    the collection predates captions.

    ``metadata`` (keys and scalar values as filters accept them) is attached to every
    file of this run, replacing what was stored; without it a changed file keeps its
    previous metadata. ``prune`` removes records under the given folders, globs or
    files whose file no longer exists (skipped when the run is cancelled). ``roots``
    confines what folder walks and globs may read (see :func:`scan_paths`); past
    ``settings.index_timeout_s`` the run stops between batches (``timed_out``).
    """
    meta = check_metadata(metadata) if metadata is not None else None
    if not paths:
        raise InvalidQueryError("no paths to index were given")
    info = store.ensure_collection(collection, embedder.model_id, embedder.dim)
    if captioner is not None:
        require_caption_field(info)
    scan = scan_paths(
        paths,
        recursive=recursive,
        extensions=extensions,
        roots=roots,
        max_files=settings.max_index_files,
    )
    run = _Run(store, embedder, settings, collection, meta, progress, captioner)
    report = run.report
    report.failed.extend(scan.failed)

    candidates: list[_Candidate] = []
    for cand in scan.files:
        try:
            quote_string(cand.path)
        except InvalidQueryError as exc:
            report.failed.append(FailedFile(path=cand.path, reason=f"unsupported path: {exc}"))
            continue
        candidates.append(cand)
    report.total = len(candidates) + len(report.failed)

    existing = store.find_by_paths(collection, [c.path for c in candidates])
    to_process: list[_Candidate] = []
    to_caption: list[_Candidate] = []
    touch: list[ImageRecord] = []
    leftovers: list[str] = []
    for cand in candidates:
        records = existing.get(cand.path, [])
        current = [r for r in records if r.size == cand.size and r.mtime == cand.mtime]
        rec = (current or records or [None])[0]
        leftovers.extend(r.id for r in records if r is not rec)
        cand.existing = rec
        if rec is not None and rec.size == cand.size and rec.mtime == cand.mtime:
            run.claimed.add(rec.id)
            report.unchanged += 1
            if meta is not None and rec.metadata != meta:
                touch.append(rec)
            if captioner is not None and not rec.caption:
                to_caption.append(cand)
        else:
            to_process.append(cand)
    if leftovers:
        store.delete(collection, leftovers)
    if touch:
        _update_metadata(store, collection, touch, meta or {}, embedder.model_id)
    run.done = len(candidates) - len(to_process) - len(to_caption) + len(scan.failed)
    run.notify(None)

    batch_size = settings.batch_size
    batches = [to_process[i : i + batch_size] for i in range(0, len(to_process), batch_size)]
    pool = ThreadPoolExecutor(
        max_workers=settings.decode_workers, thread_name_prefix="mmsearch-decode"
    )
    try:

        def submit(batch: list[_Candidate]) -> list[Future[_Prepared | FailedFile]]:
            return [pool.submit(run.prepare, c) for c in batch]

        pending = submit(batches[0]) if batches else None
        timeout = settings.index_timeout_s
        deadline = time.monotonic() + timeout if timeout is not None else None
        for k, batch in enumerate(batches):
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                break
            if deadline is not None and time.monotonic() > deadline:
                log.warning("indexing stopped after %.0f s (index_timeout_s)", timeout)
                report.cancelled = report.timed_out = True
                break
            assert pending is not None
            current = pending
            pending = submit(batches[k + 1]) if k + 1 < len(batches) else None
            results = [f.result() for f in current]
            run.handle_batch(results)
            run.done += len(batch)
            run.notify(batch[-1].path)
        caption_batches = [
            to_caption[i : i + batch_size] for i in range(0, len(to_caption), batch_size)
        ]
        for batch in caption_batches if not report.cancelled else []:
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                break
            results = list(pool.map(run.prepare_caption, batch))
            _caption_unchanged(run, results)
            run.done += len(batch)
            run.notify(batch[-1].path)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if store.flush_policy == "end":
        store.flush(collection)

    if prune and not report.cancelled:
        report.removed = _prune(store, collection, scan.roots)
    log.info(
        "indexed %d, unchanged %d, duplicates %d, failed %d, removed %d (collection %r)",
        report.indexed,
        report.unchanged,
        report.duplicates,
        len(report.failed),
        report.removed,
        collection,
    )
    return report


def _caption_unchanged(run: _Run, results: list[_Prepared | FailedFile]) -> None:
    """Caption files found unchanged, keeping their stored image embedding."""
    items: list[_Prepared] = []
    for res in results:
        if isinstance(res, FailedFile):
            run.report.caption_failed.append(res)
        elif res.cand.existing is None or res.sha256 != res.cand.existing.id:
            # Same size and mtime, other bytes: the next run (with a new mtime) re-embeds it.
            run.report.caption_failed.append(
                FailedFile(path=res.cand.path, reason="the file changed while indexing")
            )
        else:
            items.append(res)
    rows = run.store.get_rows(run.collection, [it.sha256 for it in items], with_vectors=True)
    writes: list[StoredRow] = []
    images: list[Image.Image] = []
    for item in items:
        row = rows.get(item.sha256)
        if row is None or item.image is None:
            continue
        writes.append(
            StoredRow(
                id=item.sha256,
                path=row["path"],
                size=int(row["size"]),
                mtime=float(row["mtime"]),
                metadata=dict(row.get("metadata") or {}),
                vector=np.asarray(row["vector"], dtype=np.float32),
            )
        )
        images.append(item.image)
    run.add_captions(writes, images)
    captioned = [w for w in writes if w.caption]
    if captioned:
        run.store.upsert(run.collection, captioned, model_id=run.embedder.model_id)


def _update_metadata(
    store: MilvusStore,
    collection: str,
    records: list[ImageRecord],
    metadata: dict[str, Any],
    model_id: str,
) -> None:
    rows = store.get_rows(collection, [r.id for r in records], with_vectors=True)
    writes = [
        StoredRow(
            id=r.id,
            path=r.path,
            size=r.size,
            mtime=r.mtime,
            metadata=metadata,
            vector=np.asarray(rows[r.id]["vector"], dtype=np.float32),
            **_stored_caption(rows[r.id]),
        )
        for r in records
        if r.id in rows
    ]
    store.upsert(collection, writes, model_id=model_id)


def _prune(store: MilvusStore, collection: str, roots: list[_Root]) -> int:
    """Delete the records under ``roots`` whose files are gone. A folder that was there
    when the run began and is gone now (an unmounted drive, a watched folder moved away)
    is left alone: its files vanished all at once, which says nothing about the images."""
    gone: list[str] = []
    for root in roots:
        try:
            expr = root.prefix_expr()
        except InvalidQueryError as exc:
            log.warning("cannot prune under %s: %s", root.path, exc)
            continue
        missing = [
            rec.id
            for rec in store.iter_records(collection, expr)
            if root.covers(rec.path) and not os.path.lexists(rec.path)
        ]
        if root.kind == "dir" and not os.path.isdir(root.path):
            log.warning("not pruning under %s: the folder disappeared during the run", root.path)
            continue
        gone.extend(missing)
    return store.delete(collection, gone) if gone else 0
