"""Background index jobs: indexing that outlives the call (or client) that asked for it.

A job is one :meth:`ImageSearch.index` run on a thread of its own. Jobs of one collection
run one at a time, in the order they were submitted; submitting the same paths and
options as a queued or running job joins that job instead of starting another. The
store is consistent between batches, and files already stored are skipped by the next
run, so a cancelled or interrupted job is resumed by submitting it again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mmsearch.errors import InvalidQueryError, JobNotFoundError, MMSearchError
from mmsearch.jobs.records import JobRecords
from mmsearch.types import IndexJobStatus, IndexProgress, IndexReport

log = logging.getLogger(__name__)

PERSIST_EVERY_S = 1.0
"""Progress is written to the records at most this often (state changes at once)."""
POLL_OTHER_PROCESS_S = 0.5


ProgressListener = Callable[[IndexProgress], None]


class Indexer(Protocol):
    """What a job needs of :class:`mmsearch.library.ImageSearch`."""

    def index(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        recursive: bool = ...,
        extensions: Iterable[str] | None = ...,
        metadata: Mapping[str, Any] | None = ...,
        collection: str | None = ...,
        prune: bool = ...,
        progress: Callable[[IndexProgress], None] | None = ...,
        cancel: threading.Event | None = ...,
        captions: bool | None = ...,
        roots: Sequence[Path] | None = ...,
    ) -> IndexReport: ...


@dataclass
class _Job:
    status: IndexJobStatus
    key: str
    roots: list[Path] | None
    cancel: threading.Event = field(default_factory=threading.Event)
    closing: bool = False
    listeners: list[ProgressListener] = field(default_factory=list)
    rate_from: tuple[int, float] | None = None
    persisted_at: float = 0.0


class IndexJobs:
    """The index jobs of one process, recorded in ``state_dir`` for every process.

    ``search``: the :class:`~mmsearch.library.ImageSearch` to index with, or a
    function returning it, called on a job's thread when the first job starts (so the
    models load there, not in the caller). ``default_collection`` names the collection
    of jobs submitted without one (default: ``search.settings.collection`` when
    ``search`` is an ImageSearch). Creating the manager marks jobs left queued or running
    by a process that is gone as ``interrupted``.
    """

    def __init__(
        self,
        search: Indexer | Callable[[], Indexer],
        state_dir: Path,
        *,
        default_collection: str | None = None,
        keep: int = 200,
    ) -> None:
        if hasattr(search, "index"):
            indexer: Indexer = search  # type: ignore[assignment]
            self._open: Callable[[], Indexer] = lambda: indexer
            settings = getattr(search, "settings", None)
            if default_collection is None and settings is not None:
                default_collection = settings.collection
        else:
            self._open = search  # type: ignore[assignment]
        self.default_collection = default_collection or "images"
        self.records = JobRecords(state_dir, keep=keep)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, _Job] = {}
        self._running: dict[str, str] = {}
        self._queued: dict[str, deque[str]] = {}
        self._threads: set[threading.Thread] = set()
        self._closed = False
        for status in self.records.interrupt_orphans(os.getpid()):
            log.warning("index job %s was interrupted: %s", status.id, status.error)

    # -- public API ---------------------------------------------------------------------

    def submit(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        collection: str | None = None,
        recursive: bool = True,
        extensions: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        prune: bool = False,
        captions: bool | None = None,
        roots: Sequence[Path] | None = None,
        listener: ProgressListener | None = None,
    ) -> IndexJobStatus:
        """Start indexing ``paths`` in the background and return the job's snapshot.

        The options mean what they mean for :meth:`ImageSearch.index` (``prune``: also
        remove records of files under ``paths`` that are gone; ``roots``: resolved
        folders that confine what links may lead to). A queued or running job of this
        manager with the same paths (made absolute, order ignored) and options is
        returned instead of a new one. Jobs of one collection run one at a time; the
        others wait as ``queued``. Bad arguments raise here, before anything is queued.

        ``listener`` is called with each progress update of the job (new or joined) from
        the job's thread, until the job ends or :meth:`unlisten` is called; it must be
        quick and must not raise.
        """
        from mmsearch.filters import check_metadata
        from mmsearch.indexing import normalize_extensions
        from mmsearch.store import check_collection_name

        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        if not paths:
            raise InvalidQueryError("no paths to index were given")
        absolute = []
        for raw in paths:
            text = os.fspath(raw)
            if not text:
                raise InvalidQueryError("an empty path was given")
            absolute.append(os.path.abspath(os.path.expanduser(text)))
        name = check_collection_name(collection or self.default_collection)
        meta = check_metadata(metadata) if metadata is not None else None
        exts = sorted(normalize_extensions(extensions)) if extensions is not None else None
        root_list = [Path(r) for r in roots] if roots is not None else None
        key = json.dumps(
            [
                sorted(set(absolute)),
                name,
                recursive,
                exts,
                meta,
                prune,
                captions,
                sorted(map(str, root_list)) if root_list is not None else None,
            ],
            sort_keys=True,
            default=str,
        )
        with self._lock:
            if self._closed:
                raise MMSearchError("the index job manager has been closed")
            for job in self._jobs.values():
                if job.key == key and job.status.active and not job.cancel.is_set():
                    if listener is not None:
                        job.listeners.append(listener)
                    return self._snapshot(job)
            status = IndexJobStatus(
                id=uuid.uuid4().hex[:12],
                state="queued",
                collection=name,
                paths=absolute,
                recursive=recursive,
                extensions=exts,
                metadata=meta,
                prune=prune,
                captions=captions,
                submitted_at=time.time(),
                pid=os.getpid(),
            )
            job = _Job(status=status, key=key, roots=root_list)
            if listener is not None:
                job.listeners.append(listener)
            self._jobs[status.id] = job
            self._forget_ended(keep=self.records.keep)
            self.records.save(status)
            self._queued.setdefault(name, deque()).append(status.id)
            self._start_next(name)
            snapshot = self._snapshot(job)
        self.records.forget_old()
        return snapshot

    def unlisten(self, job_id: str, listener: ProgressListener) -> None:
        """Stop calling ``listener`` for this job (no error if it is not registered)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and listener in job.listeners:
                job.listeners.remove(listener)

    def get(self, job_id: str) -> IndexJobStatus:
        """The job's current state; jobs of other processes come from the records."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                return self._snapshot(job)
        status = self.records.get(job_id)
        if status is None:
            raise JobNotFoundError(f"no index job with id {job_id!r}")
        return status

    def recent(self, limit: int = 20) -> list[IndexJobStatus]:
        """The ``limit`` most recently submitted jobs of every process, newest first."""
        if limit < 1:
            raise InvalidQueryError("limit must be at least 1")
        statuses = self.records.recent(limit)
        with self._lock:
            return [self._snapshot(self._jobs[s.id]) if s.id in self._jobs else s for s in statuses]

    def cancel(self, job_id: str) -> IndexJobStatus:
        """Cancel a job: a queued one at once, a running one after its current batch
        (what it stored stays). An ended job is returned as it is."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.cancel.set()
                if job.status.state == "queued":
                    self._queued[job.status.collection].remove(job_id)
                    self._end(job, "cancelled", error="cancelled before it started")
                return self._snapshot(job)
        status = self.get(job_id)
        if status.active:
            self.records.request_cancel(job_id)
        return status

    def wait(self, job_id: str, timeout: float | None = None) -> IndexJobStatus:
        """Block until the job has ended or ``timeout`` seconds have passed; return its
        snapshot either way (check ``state``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self._changed.wait_for(
                    lambda: not job.status.active,
                    None if deadline is None else max(0.0, deadline - time.monotonic()),
                )
                return self._snapshot(job)
        idle = threading.Event()
        while True:  # a job of another process: follow its records
            status = self.get(job_id)
            left = None if deadline is None else deadline - time.monotonic()
            if not status.active or (left is not None and left <= 0):
                return status
            idle.wait(POLL_OTHER_PROCESS_S if left is None else min(left, POLL_OTHER_PROCESS_S))

    def close(self, timeout: float = 60.0) -> None:
        """Stop: queued jobs and running ones (after their current batch) end as
        ``interrupted``, to be resumed by submitting them again. Idempotent."""
        with self._lock:
            self._closed = True
            for job in self._jobs.values():
                if job.status.state == "queued":
                    self._end(job, "interrupted", error="the process shut down before it started")
                elif job.status.state == "running":
                    job.closing = True
                    job.cancel.set()
            self._queued.clear()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- running ------------------------------------------------------------------------

    def _start_next(self, collection: str) -> None:
        """With the lock held: start the collection's next queued job if none runs."""
        if self._closed or collection in self._running:
            return
        queue = self._queued.get(collection)
        if not queue:
            return
        job = self._jobs[queue.popleft()]
        self._running[collection] = job.status.id
        job.status.state = "running"
        job.status.started_at = time.time()
        self.records.save(job.status)
        self._changed.notify_all()
        thread = threading.Thread(
            target=self._run, args=(job,), name=f"mmsearch-job-{job.status.id}", daemon=True
        )
        self._threads.add(thread)
        thread.start()

    def _run(self, job: _Job) -> None:
        status = job.status
        try:
            if self.records.cancel_requested(status.id):
                job.cancel.set()
            report = self._open().index(
                [Path(p) for p in status.paths],
                recursive=status.recursive,
                extensions=status.extensions,
                metadata=status.metadata,
                collection=status.collection,
                prune=status.prune,
                progress=lambda p: self._progress(job, p),
                cancel=job.cancel,
                captions=status.captions,
                roots=job.roots,
            )
        except Exception as exc:
            if not isinstance(exc, MMSearchError):
                log.exception("index job %s failed", status.id)
            with self._lock:
                self._end(job, "failed", error=f"{type(exc).__name__}: {exc}")
        else:
            with self._lock:
                if job.closing and report.cancelled:
                    self._end(job, "interrupted", report, "the process shut down")
                elif report.timed_out:
                    self._end(job, "cancelled", report, "stopped after index_timeout_s")
                elif report.cancelled:
                    self._end(job, "cancelled", report, "cancelled")
                else:
                    self._end(job, "finished", report)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
                if self._running.get(status.collection) == status.id:
                    del self._running[status.collection]
                self._start_next(status.collection)

    def _progress(self, job: _Job, progress: IndexProgress) -> None:
        now = time.monotonic()
        with self._lock:
            status = job.status
            status.done, status.total = progress.done, progress.total
            status.indexed, status.unchanged = progress.indexed, progress.unchanged
            status.duplicates, status.failed = progress.duplicates, progress.failed
            if job.rate_from is None:
                job.rate_from = (progress.done, now)
            first_done, first_at = job.rate_from
            if progress.done >= progress.total:
                status.eta_s = 0.0
            elif progress.done > first_done:
                per_file = (now - first_at) / (progress.done - first_done)
                status.eta_s = per_file * (progress.total - progress.done)
            self._changed.notify_all()
            listeners = list(job.listeners)
            due = now - job.persisted_at >= PERSIST_EVERY_S
            if due:
                job.persisted_at = now
                self.records.save(self._snapshot(job))
        for listener in listeners:
            try:
                listener(progress)
            except Exception:
                log.debug("a progress listener failed", exc_info=True)
        if due and self.records.cancel_requested(status.id):
            job.cancel.set()

    def _end(
        self,
        job: _Job,
        state: str,
        report: IndexReport | None = None,
        error: str | None = None,
    ) -> None:
        """With the lock held: record how the job ended and wake its waiters."""
        status = job.status
        status.state = state  # type: ignore[assignment]
        status.finished_at = time.time()
        status.elapsed_s = status.finished_at - status.started_at if status.started_at else 0.0
        status.eta_s = None
        status.error = error
        if report is not None:
            status.report = report
            status.total = report.total
            status.indexed, status.unchanged = report.indexed, report.unchanged
            status.duplicates, status.failed = report.duplicates, len(report.failed)
            if state == "finished":
                status.done = report.total
        job.listeners.clear()
        self.records.save(status)
        self._changed.notify_all()

    def _forget_ended(self, keep: int) -> None:
        """With the lock held: drop the oldest ended jobs from memory (the records keep
        them)."""
        ended = [i for i, j in self._jobs.items() if not j.status.active]
        for job_id in ended[: max(0, len(ended) - keep)]:
            del self._jobs[job_id]

    def _snapshot(self, job: _Job) -> IndexJobStatus:
        status = job.status.model_copy(deep=True)
        if status.state == "running" and status.started_at is not None:
            status.elapsed_s = time.time() - status.started_at
        return status
