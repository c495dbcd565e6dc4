"""Watched folders: keep folders in sync with a collection while the host process runs.

:class:`FolderWatcher` observes each folder of a :class:`~mmsearch.watchlist.WatchList`
recursively with watchdog (inotify, FSEvents, ReadDirectoryChangesW; polling where those
are unavailable or turned off) and turns the events into *syncs*: one call of ``submit``
with the folders that changed, once they have been quiet for ``watch_debounce_s``. A sync
is an index run with ``prune=True``: new and changed files are indexed, deleted ones
pruned, and a renamed file keeps its embedding (its content hash finds the stored vector).
A camera import of 500 files is therefore one sync, not 500.

Events can be lost (inotify's watch limit, network drives, a host that was not running),
so every folder is also synced when the watcher starts or a folder is added, and every
``watch_rescan_s``. A folder that is missing (an unmounted drive) is never synced:
pruning it would empty its part of the collection; it is picked up again when it returns.
The watch list file is itself observed, so ``mmsearch watch add`` in another process
reaches a running watcher; :meth:`FolderWatcher.reload` does the same on demand.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from watchdog.events import FileSystemEventHandler

from mmsearch.config import Settings
from mmsearch.watchlist import WATCHES_FILE, WatchedFolder, WatchList

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent
    from watchdog.observers.api import BaseObserver, ObservedWatch

    from mmsearch.jobs import IndexJobs
    from mmsearch.library import ImageSearch

log = logging.getLogger(__name__)

Submit = Callable[[list[Path]], object]
"""Start a sync of these folders: index them with ``prune=True``. It may do the work
before returning (in-process) or hand it to a job queue and return the job."""

ObserverFactory = Callable[[], "BaseObserver"]

_CHANGE_EVENTS = frozenset({"created", "deleted", "modified", "moved", "closed"})
"""Events that can change what a folder holds (``opened`` and ``closed_no_write`` come
from reads, the sync's own included, and must not trigger another sync)."""

MAX_DELAY_FACTOR = 10
"""A folder that never stops changing is still synced every this many debounce periods."""


@dataclass(frozen=True)
class FolderState:
    """What the watcher knows about one folder (for ``watch list`` and service status)."""

    path: Path
    source: Literal["list", "setting"]
    observer: Literal["native", "polling", "missing"]
    last_sync: float | None
    """Wall-clock time (``time.time()``) the last sync of the folder was submitted."""
    last_error: str | None


class FolderWatcher:
    """Observe the watched folders and submit a debounced sync when they change.

    ``submit`` receives the folders to sync (each an absolute, resolved path) on the
    watcher's own thread; with an in-process ``submit`` the next sync waits for it.
    ``stop_event`` (optional) is set by :meth:`stop`, for a ``submit`` that can cancel.
    ``native_observer`` and ``polling_observer`` build the watchdog observers (defaults:
    the platform's native observer, and polling every ``poll_s``).
    """

    def __init__(
        self,
        submit: Submit,
        watch_list: WatchList,
        *,
        debounce_s: float = 2.0,
        rescan_s: float | None = 900.0,
        polling: bool = False,
        poll_s: float = 10.0,
        stop_event: threading.Event | None = None,
        native_observer: ObserverFactory | None = None,
        polling_observer: ObserverFactory | None = None,
    ) -> None:
        self.submit = submit
        self.watch_list = watch_list
        self.debounce_s = debounce_s
        self.rescan_s = rescan_s
        self.polling = polling
        self.poll_s = poll_s
        self.stop_event = stop_event or threading.Event()
        self._native_factory = native_observer or _native_observer
        self._polling_factory = polling_observer or (lambda: _polling_observer(poll_s))
        self._extensions: frozenset[str] | None = None  # on the first event: a slow import
        self._cond = threading.Condition()
        self._dirty: dict[Path, tuple[float, float]] = {}  # folder -> (first, last) event
        self._reload_wanted = False
        self._syncing = False
        self._folders: dict[Path, WatchedFolder] = {}
        self._watches: dict[Path, tuple[BaseObserver, ObservedWatch]] = {}
        self._missing: set[Path] = set()
        self._last_sync: dict[Path, float] = {}
        self._last_error: dict[Path, str] = {}
        self._native: BaseObserver | None = None
        self._poller: BaseObserver | None = None
        self._list_watch: tuple[BaseObserver, ObservedWatch] | None = None
        self._thread: threading.Thread | None = None
        self._next_rescan = float("inf")
        self.syncs = 0
        """How many times ``submit`` was called."""

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> FolderWatcher:
        """Start observing and syncing (an initial sync of every folder comes first,
        for the changes made while nothing watched)."""
        if self._thread is not None:
            raise RuntimeError("this FolderWatcher was already started")
        if not self.polling:
            try:
                self._native = self._native_factory()
                self._native.start()
            except OSError as exc:
                log.warning("native file events unavailable (%s); polling instead", exc)
                self._native = None
        self._watch_list_file()
        self._apply_list(initial=True)
        if self.rescan_s is not None:
            self._next_rescan = time.monotonic() + self.rescan_s
        self._thread = threading.Thread(target=self._run, name="mmsearch-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop observing; a sync in progress is asked to stop (``stop_event``) and
        waited for up to ``timeout`` seconds. Idempotent."""
        self.stop_event.set()
        with self._cond:
            self._cond.notify_all()
        for observer in (self._native, self._poller):
            if observer is not None:
                observer.stop()
        for observer in (self._native, self._poller):
            if observer is not None and observer.is_alive():
                observer.join(timeout)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the folder watcher did not stop within %g s", timeout)

    def __enter__(self) -> FolderWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests from other threads --------------------------------------------------------

    def reload(self) -> None:
        """Re-read the watch list soon (a folder added gets its first sync, a folder
        removed is no longer observed)."""
        with self._cond:
            self._reload_wanted = True
            self._cond.notify_all()

    def request_sync(self, folder: Path | None = None) -> None:
        """Sync ``folder`` (default: every watched folder) without waiting for an event."""
        now = time.monotonic()
        with self._cond:
            targets = [folder] if folder is not None else list(self._folders)
            for path in targets:
                self._dirty[path] = (now - self.debounce_s, now - self.debounce_s)
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no folder is waiting for a sync and none is running; False on
        timeout. (Events still in the operating system's queue are not seen.)"""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._dirty or self._syncing or self._reload_wanted:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def state(self) -> list[FolderState]:
        with self._cond:
            return [
                FolderState(
                    path=path,
                    source=watched.source,
                    observer=self._observer_kind(path),
                    last_sync=self._last_sync.get(path),
                    last_error=self._last_error.get(path),
                )
                for path, watched in self._folders.items()
            ]

    @property
    def folders(self) -> list[Path]:
        with self._cond:
            return list(self._folders)

    # -- the watcher's thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                due: list[Path] = []
                reload = False
                while not self.stop_event.is_set():
                    now = time.monotonic()
                    if now >= self._next_rescan:
                        assert self.rescan_s is not None
                        self._next_rescan = now + self.rescan_s
                        self._reload_wanted = True
                        for path in self._folders:
                            self._dirty.setdefault(path, (now - self.debounce_s, now))
                    reload, self._reload_wanted = self._reload_wanted, False
                    due = self._take_due(now)
                    if due or reload:
                        self._syncing = True
                        break
                    self._cond.wait(self._wait_time(now))
                if self.stop_event.is_set():
                    self._syncing = False
                    self._cond.notify_all()
                    return
            try:
                if reload:
                    self._apply_list(initial=False)
                if due:
                    self._sync(due)
            except Exception:  # the watcher must outlive one bad reload or sync
                log.exception("the folder watcher hit an error")
            finally:
                with self._cond:
                    self._syncing = False
                    self._cond.notify_all()

    def _take_due(self, now: float) -> list[Path]:
        due = []
        for path, (first, last) in list(self._dirty.items()):
            quiet = now - last >= self.debounce_s
            overdue = now - first >= self.debounce_s * MAX_DELAY_FACTOR
            if quiet or overdue:
                due.append(path)
                del self._dirty[path]
        return sorted(due)

    def _wait_time(self, now: float) -> float | None:
        wakes = [self._next_rescan - now] if self._next_rescan != float("inf") else []
        for first, last in self._dirty.values():
            wakes.append(min(last + self.debounce_s, first + self.debounce_s * MAX_DELAY_FACTOR))
            wakes[-1] -= now
        return max(0.0, min(wakes)) if wakes else None

    def _sync(self, folders: list[Path]) -> None:
        present = []
        for path in folders:
            if path not in self._folders:
                continue  # removed from the list meanwhile
            if not path.is_dir():
                if path not in self._missing:
                    log.warning("watched folder %s is missing; not syncing it", path)
                self._missing.add(path)
                self._unschedule(path)
                continue
            if path in self._missing or path not in self._watches:
                self._missing.discard(path)
                self._schedule(path)
            present.append(path)
        if not present:
            return
        log.info("syncing watched folders: %s", ", ".join(map(str, present)))
        self.syncs += 1
        now = time.time()
        try:
            outcome = self.submit(present)
        except Exception as exc:
            log.warning("syncing %s failed: %s", ", ".join(map(str, present)), exc)
            for path in present:
                self._last_error[path] = f"{type(exc).__name__}: {exc}"
        else:
            for path in present:
                self._last_error.pop(path, None)
            if _joined_running_job(outcome, now):
                # That job may have scanned before these changes: try again once quiet,
                # which queues a new job when this one has ended.
                self._mark_dirty(present, now=time.monotonic())
        finally:
            for path in present:
                self._last_sync[path] = now

    # -- observers ------------------------------------------------------------------------

    def _apply_list(self, *, initial: bool) -> None:
        """Observe the folders of the watch list (new ones get a first sync)."""
        try:
            wanted = {w.path: w for w in self.watch_list.folders()}
        except Exception as exc:  # a damaged list: keep watching what was watched
            log.error("%s", exc)
            return
        for path in [p for p in self._folders if p not in wanted]:
            log.info("no longer watching %s", path)
            self._unschedule(path)
            with self._cond:
                self._folders.pop(path, None)
                self._dirty.pop(path, None)
        added = [p for p in wanted if p not in self._folders]
        with self._cond:
            self._folders = {p: wanted[p] for p in wanted}
        for path in added:
            if path.is_dir():
                self._schedule(path)
            else:
                log.warning("watched folder %s is missing; it is synced when it returns", path)
                self._missing.add(path)
            if not initial:
                log.info("now watching %s", path)
        if added:
            self._mark_dirty(added, now=time.monotonic(), immediate=True)

    def _schedule(self, path: Path) -> None:
        handler = _FolderEvents(self, path)
        if self._native is not None:
            try:
                self._watches[path] = (
                    self._native,
                    self._native.schedule(handler, str(path), recursive=True),
                )
                return
            except OSError as exc:
                log.warning("cannot observe %s natively (%s); polling it instead", path, exc)
        poller = self._polling()
        self._watches[path] = (poller, poller.schedule(handler, str(path), recursive=True))

    def _unschedule(self, path: Path) -> None:
        entry = self._watches.pop(path, None)
        if entry is None:
            return
        observer, watch = entry
        try:
            observer.unschedule(watch)
        except (KeyError, OSError):  # the folder is gone, its watch with it
            log.debug("unscheduling %s", path, exc_info=True)

    def _polling(self) -> BaseObserver:
        if self._poller is None:
            self._poller = self._polling_factory()
            self._poller.start()
        return self._poller

    def _observer_kind(self, path: Path) -> Literal["native", "polling", "missing"]:
        entry = self._watches.get(path)
        if entry is None or path in self._missing:
            return "missing"
        return "native" if entry[0] is self._native else "polling"

    def _watch_list_file(self) -> None:
        """Observe the data directory for edits of the watch list by other processes."""
        folder = self.watch_list.data_dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
            observer = self._native if self._native is not None else self._polling()
            self._list_watch = (
                observer,
                observer.schedule(_ListEvents(self), str(folder), recursive=False),
            )
        except OSError as exc:
            log.warning("cannot observe the watch list (%s); it is re-read on rescans", exc)

    # -- events (observer threads) ----------------------------------------------------------

    def _on_event(self, folder: Path, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGE_EVENTS:
            return
        if event.is_directory:
            if event.event_type == "modified":
                return  # a file in it changed; that file's own event follows
        elif not any(self._is_image(p) for p in (event.src_path, event.dest_path) if p):
            return
        self._mark_dirty([folder], now=time.monotonic())

    def _is_image(self, path: str | bytes) -> bool:
        if self._extensions is None:
            from mmsearch.indexing import DEFAULT_EXTENSIONS

            self._extensions = frozenset(f".{e}" for e in DEFAULT_EXTENSIONS)
        text = os.fsdecode(path)
        return os.path.splitext(text)[1].lower() in self._extensions

    def _mark_dirty(self, folders: Sequence[Path], *, now: float, immediate: bool = False) -> None:
        with self._cond:
            for path in folders:
                if immediate:
                    self._dirty[path] = (now - self.debounce_s, now - self.debounce_s)
                else:
                    first, _ = self._dirty.get(path, (now, now))
                    self._dirty[path] = (first, now)
            self._cond.notify_all()


class _FolderEvents(FileSystemEventHandler):
    """Forwards one watched folder's events to its watcher."""

    def __init__(self, watcher: FolderWatcher, folder: Path) -> None:
        super().__init__()
        self.watcher = watcher
        self.folder = folder

    def dispatch(self, event: FileSystemEvent) -> None:
        self.watcher._on_event(self.folder, event)


class _ListEvents(FileSystemEventHandler):
    """Reloads the watcher when the watch list file is written (atomic renames included)."""

    def __init__(self, watcher: FolderWatcher) -> None:
        super().__init__()
        self.watcher = watcher

    def dispatch(self, event: FileSystemEvent) -> None:
        names = {os.path.basename(os.fsdecode(p)) for p in (event.src_path, event.dest_path) if p}
        if WATCHES_FILE in names and event.event_type in _CHANGE_EVENTS:
            self.watcher.reload()


def _joined_running_job(outcome: object, requested_at: float) -> bool:
    """Whether ``submit`` joined a job that was already running when the sync was asked
    for (a job manager returns the identical running job instead of a new one)."""
    started = getattr(outcome, "started_at", None)
    return (
        getattr(outcome, "state", None) == "running"
        and started is not None
        and (started < requested_at)
    )


def _native_observer() -> BaseObserver:
    from watchdog.observers import Observer

    return Observer()


def _polling_observer(poll_s: float) -> BaseObserver:
    from watchdog.observers.polling import PollingObserver

    return PollingObserver(timeout=poll_s)


# -- hosting ------------------------------------------------------------------------------


def watch_list(settings: Settings) -> WatchList:
    """The watch list of these settings: ``<data_dir>/watches.json`` plus ``settings.watch``."""
    return WatchList(settings.data_dir, settings.watch)


def index_submit(
    search: ImageSearch | Callable[[], ImageSearch], stop_event: threading.Event
) -> Submit:
    """A ``submit`` that syncs in the calling thread: index the folders with
    ``prune=True``, confined to them (a link inside a watched folder cannot lead the
    indexer out of it), cancelled when ``stop_event`` is set."""

    def sync(folders: list[Path]) -> object:
        engine = search() if callable(search) else search
        report = engine.index(folders, prune=True, roots=folders, cancel=stop_event)
        log.info(
            "watched folders synced: %d indexed, %d unchanged, %d removed, %d failed",
            report.indexed,
            report.unchanged,
            report.removed,
            len(report.failed),
        )
        return report

    return sync


def jobs_submit(jobs: IndexJobs) -> Submit:
    """A ``submit`` that hands each sync to the job manager as one background job
    (pruning, confined to the folders), queued behind the collection's other index jobs;
    an identical job still queued is joined instead."""

    def sync(folders: list[Path]) -> object:
        return jobs.submit(folders, prune=True, roots=folders)

    return sync


def start_watching(
    search: ImageSearch | Callable[[], ImageSearch] | None,
    jobs: IndexJobs | None,
    settings: Settings,
) -> FolderWatcher:
    """Start keeping the watched folders of ``settings`` in sync; the host calls
    :meth:`FolderWatcher.stop` when it shuts down.

    With a job manager, each sync is one of its jobs; without one (``jobs=None``), the
    sync runs on the watcher's thread through ``search`` (an :class:`ImageSearch`, or a
    function returning it, so the models load only when a sync first needs them).
    """
    stop_event = threading.Event()
    if jobs is not None:
        submit = jobs_submit(jobs)
    elif search is not None:
        submit = index_submit(search, stop_event)
    else:
        raise ValueError("start_watching needs a job manager or an ImageSearch")
    watcher = FolderWatcher(
        submit,
        watch_list(settings),
        debounce_s=settings.watch_debounce_s,
        rescan_s=settings.watch_rescan_s,
        polling=settings.watch_polling,
        poll_s=settings.watch_poll_s,
        stop_event=stop_event,
    )
    return watcher.start()
