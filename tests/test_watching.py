"""Watched folders: the persistent list, and a real watchdog observer keeping a
collection in sync while files are added, changed, renamed and deleted."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from jobs_support import GatedEmbedder, write_images
from PIL import Image
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from mmsearch.config import Settings
from mmsearch.errors import WatchError
from mmsearch.jobs import IndexJobs
from mmsearch.library import ImageSearch
from mmsearch.watching import FolderWatcher, index_submit, start_watching
from mmsearch.watchlist import WatchList

DEADLINE_S = 60.0
"""Upper bound on any wait here: a loaded two-core machine, and still a bounded test."""


@pytest.fixture(autouse=True)
def quiet_pymilvus() -> Iterator[None]:
    """Polled collection scans make pymilvus warn once per scan; keep the output readable."""
    logger = logging.getLogger("pymilvus")
    before = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(before)


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def paths_indexed(engine: ImageSearch) -> set[str]:
    if not engine.store.has_collection(engine.settings.collection):
        return set()
    return {r.path for r in engine.store.iter_records(engine.settings.collection)}


class CountingSubmit:
    """A ``submit`` that syncs in-process and remembers each call's folders."""

    def __init__(self, engine: ImageSearch, stop: threading.Event) -> None:
        self.inner = index_submit(engine, stop)
        self.calls: list[list[Path]] = []

    def __call__(self, folders: list[Path]) -> object:
        self.calls.append(list(folders))
        return self.inner(folders)


@pytest.fixture
def watched(tmp_path: Path) -> Path:
    folder = tmp_path / "watched"
    folder.mkdir()
    return folder.resolve()


@pytest.fixture
def make_watcher(
    engine: ImageSearch, settings: Settings
) -> Iterator[Callable[..., tuple[FolderWatcher, CountingSubmit]]]:
    started: list[FolderWatcher] = []

    def make(*folders: Path, **kwargs: object) -> tuple[FolderWatcher, CountingSubmit]:
        watch_list = WatchList(settings.data_dir)
        for folder in folders:
            watch_list.add(folder)
        stop = threading.Event()
        submit = CountingSubmit(engine, stop)
        options: dict[str, object] = {"debounce_s": 0.5, "rescan_s": None, "poll_s": 0.2}
        options.update(kwargs)
        watcher = FolderWatcher(submit, watch_list, stop_event=stop, **options)  # type: ignore[arg-type]
        started.append(watcher.start())
        return watcher, submit

    yield make
    for watcher in started:
        watcher.stop()


# -- the watch list ---------------------------------------------------------------------


def test_watch_list_persists_normalized_folders(tmp_path: Path, watched: Path) -> None:
    data = tmp_path / "data"
    (watched / "sub").mkdir()
    link = tmp_path / "link"
    link.symlink_to(watched, target_is_directory=True)
    WatchList(data).add(watched / "sub" / "..")
    WatchList(data).add(link)  # the same folder through a link: stored once
    reopened = WatchList(data)
    assert reopened.stored() == [watched]
    assert json.loads((data / "watches.json").read_text())["folders"] == [{"path": str(watched)}]
    assert reopened.remove(link) == watched
    assert WatchList(data).stored() == []


@pytest.mark.parametrize(
    ("make_target", "message"),
    [
        (lambda d: d / "missing", "no such folder"),
        (lambda d: d / "file.jpg", "not a folder"),
        (lambda d: "  ", "empty folder path"),
    ],
)
def test_bad_folders_are_refused_clearly(
    tmp_path: Path, make_target: Callable[[Path], Path | str], message: str
) -> None:
    (tmp_path / "file.jpg").write_bytes(b"x")
    watch_list = WatchList(tmp_path / "data")
    with pytest.raises(WatchError, match=message):
        watch_list.add(make_target(tmp_path))
    assert watch_list.stored() == []


def test_concurrent_additions_are_all_kept(tmp_path: Path) -> None:
    folders = [tmp_path / f"f{i}" for i in range(12)]
    for folder in folders:
        folder.mkdir()
    threads = [
        threading.Thread(target=WatchList(tmp_path / "data").add, args=(f,)) for f in folders
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert sorted(WatchList(tmp_path / "data").stored()) == sorted(f.resolve() for f in folders)


def test_removing_a_folder_not_watched_says_so(tmp_path: Path, watched: Path) -> None:
    with pytest.raises(WatchError, match="is not watched"):
        WatchList(tmp_path / "data").remove(watched)


def test_folders_of_the_setting_are_listed_and_not_removable(tmp_path: Path, watched: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    watch_list = WatchList(tmp_path / "data", configured=[watched])
    watch_list.add(other)
    assert [(w.path, w.source) for w in watch_list.folders()] == [
        (watched, "setting"),
        (other.resolve(), "list"),
    ]
    with pytest.raises(WatchError, match="MMSEARCH_WATCH"):
        watch_list.remove(watched)


def test_a_damaged_watch_list_is_reported_not_overwritten(tmp_path: Path, watched: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "watches.json").write_text("{not json")
    with pytest.raises(WatchError, match="damaged"):
        WatchList(data).add(watched)
    assert (data / "watches.json").read_text() == "{not json"


def test_watch_setting_reads_pathsep_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMSEARCH_WATCH", f"/a{os.pathsep}/b c")
    assert Settings().watch == [Path("/a"), Path("/b c")]
    monkeypatch.setenv("MMSEARCH_WATCH", "")
    assert Settings().watch == []


# -- the watcher --------------------------------------------------------------------------


def test_changes_while_watching_are_reflected_in_search(
    make_watcher, engine: ImageSearch, embedder, watched: Path, photo_sources: Path
) -> None:
    shutil.copy(photo_sources / "astronaut.png", watched / "astronaut.png")
    watcher, _ = make_watcher(watched)
    wait_for("the first sync", lambda: str(watched / "astronaut.png") in paths_indexed(engine))

    added = watched / "sub" / "coffee.jpg"
    added.parent.mkdir()
    shutil.copy(photo_sources / "coffee.jpg", added)
    wait_for("the added file", lambda: str(added) in paths_indexed(engine))
    hits = engine.search(image=added, top_k=1)
    assert hits[0].path == str(added)

    changed = watched / "astronaut.png"
    shutil.copy(photo_sources / "chelsea.png", changed)
    new_id = sha256(changed)
    wait_for("the changed file", lambda: bool(engine.get([new_id])))
    assert watcher.wait_idle(DEADLINE_S)
    assert engine.get([new_id])[0].path == str(changed)
    assert engine.store.count(engine.settings.collection) == 2
    coffee_id = sha256(added)
    vector_before = engine.store.get_rows(
        engine.settings.collection, [coffee_id], with_vectors=True
    )[coffee_id]["vector"]
    embeds_before = embedder.encode_calls
    renamed = watched / "renamed.jpg"
    added.rename(renamed)
    wait_for("the rename", lambda: [r.path for r in engine.get([coffee_id])] == [str(renamed)])
    assert embedder.encode_calls == embeds_before, "a renamed file was embedded again"
    vector_after = engine.store.get_rows(
        engine.settings.collection, [coffee_id], with_vectors=True
    )[coffee_id]["vector"]
    np.testing.assert_array_equal(vector_after, vector_before)
    assert engine.search(image=renamed, top_k=1)[0].path == str(renamed)

    changed.unlink()
    wait_for("the deletion", lambda: not engine.get([new_id]))
    assert paths_indexed(engine) == {str(renamed)}


def test_a_renamed_subfolder_keeps_its_embeddings(
    make_watcher, engine: ImageSearch, embedder, watched: Path, photo_sources: Path
) -> None:
    shutil.copytree(photo_sources, watched / "2024")
    count = len(list(photo_sources.iterdir()))
    watcher, _ = make_watcher(watched)
    wait_for("the first sync", lambda: len(paths_indexed(engine)) == count)
    assert watcher.wait_idle(DEADLINE_S)
    embeds_before = embedder.encode_calls
    (watched / "2024").rename(watched / "trip-2024")
    expected = {str(watched / "trip-2024" / p.name) for p in photo_sources.iterdir()}
    wait_for("the renamed folder", lambda: paths_indexed(engine) == expected)
    assert watcher.wait_idle(DEADLINE_S)
    assert paths_indexed(engine) == expected
    assert embedder.encode_calls == embeds_before


def test_a_burst_of_files_is_one_sync(
    make_watcher, engine: ImageSearch, watched: Path, photo_sources: Path
) -> None:
    watcher, submit = make_watcher(watched, debounce_s=2.0)
    assert watcher.wait_idle(DEADLINE_S)
    calls_before = len(submit.calls)
    burst = 24
    names = sorted(p.name for p in photo_sources.iterdir())
    for i in range(burst):  # 24 distinct files: one pixel differs per copy (lossless)
        source = photo_sources / names[i % len(names)]
        target = watched / f"import-{i:03d}.png"
        with Image.open(source) as image:
            image = image.convert("RGB")
            image.putpixel((0, 0), (i, i, i))
            image.save(target)
    wait_for("the burst", lambda: len(paths_indexed(engine)) == burst)
    assert watcher.wait_idle(DEADLINE_S)
    assert submit.calls[calls_before:] == [[watched]]


def test_rescan_catches_changes_whose_events_were_lost(
    make_watcher, engine: ImageSearch, watched: Path, photo_sources: Path
) -> None:
    def deaf() -> PollingObserver:  # a real observer that looks once an hour
        return PollingObserver(timeout=3600)

    watcher, submit = make_watcher(
        watched, rescan_s=1.0, native_observer=deaf, polling_observer=deaf
    )
    assert watcher.wait_idle(DEADLINE_S)
    shutil.copy(photo_sources / "rocket.jpg", watched / "rocket.jpg")
    wait_for("the rescan", lambda: str(watched / "rocket.jpg") in paths_indexed(engine))
    (watched / "rocket.jpg").unlink()
    wait_for("the next rescan", lambda: not paths_indexed(engine))


def test_polling_takes_over_where_native_events_fail(
    make_watcher, engine: ImageSearch, watched: Path, photo_sources: Path
) -> None:
    class Exhausted(Observer):  # type: ignore[misc,valid-type]
        def schedule(self, *args: object, **kwargs: object):  # noqa: ANN202
            raise OSError(28, "inotify watch limit reached")

    watcher, _ = make_watcher(watched, native_observer=Exhausted)
    assert [s.observer for s in watcher.state()] == ["polling"]
    shutil.copy(photo_sources / "coffee.jpg", watched / "coffee.jpg")
    wait_for("the polled change", lambda: str(watched / "coffee.jpg") in paths_indexed(engine))


def test_a_folder_added_to_the_list_elsewhere_is_picked_up(
    make_watcher, engine: ImageSearch, settings: Settings, tmp_path: Path, photo_sources: Path
) -> None:
    watcher, _ = make_watcher()
    assert watcher.folders == []
    later = tmp_path / "later"
    later.mkdir()
    shutil.copy(photo_sources / "camera.png", later / "camera.png")
    WatchList(settings.data_dir).add(later)  # as `mmsearch watch add` would, from outside
    wait_for("the new folder", lambda: str(later.resolve() / "camera.png") in paths_indexed(engine))
    WatchList(settings.data_dir).remove(later)
    wait_for("the removal", lambda: watcher.folders == [])


def test_a_missing_folder_is_not_pruned(
    make_watcher, engine: ImageSearch, watched: Path, photo_sources: Path, tmp_path: Path
) -> None:
    shutil.copy(photo_sources / "coffee.jpg", watched / "coffee.jpg")
    watcher, _ = make_watcher(watched, rescan_s=0.5)
    wait_for("the first sync", lambda: len(paths_indexed(engine)) == 1)
    away = tmp_path / "unmounted"
    watched.rename(away)  # an unplugged drive: the folder is gone, not its files
    wait_for("the folder to be seen missing", lambda: watcher.state()[0].observer == "missing")
    assert watcher.wait_idle(DEADLINE_S)
    assert paths_indexed(engine) == {str(watched / "coffee.jpg")}
    away.rename(watched)
    shutil.copy(photo_sources / "rocket.jpg", watched / "rocket.jpg")
    wait_for("the folder's return", lambda: len(paths_indexed(engine)) == 2)


def test_watches_resume_when_the_host_starts_again(
    engine: ImageSearch, settings: Settings, watched: Path, photo_sources: Path
) -> None:
    WatchList(settings.data_dir).add(watched)
    shutil.copy(photo_sources / "chelsea.png", watched / "chelsea.png")  # while nothing ran
    host_settings = settings.model_copy(update={"watch_debounce_s": 0.2})
    watcher = start_watching(engine, None, host_settings)
    try:
        assert watcher.folders == [watched]
        wait_for("the catch-up sync", lambda: bool(paths_indexed(engine)))
    finally:
        watcher.stop()


def _all_ended(jobs: IndexJobs) -> bool:
    return not any(job.active for job in jobs.recent(100))


def test_with_a_job_manager_a_burst_is_one_job(
    engine: ImageSearch, settings: Settings, watched: Path, tmp_path: Path
) -> None:
    jobs = IndexJobs(engine, tmp_path / "jobs")
    host = settings.model_copy(
        update={"watch": [watched], "watch_debounce_s": 2.0, "watch_rescan_s": None}
    )
    watcher = start_watching(engine, jobs, host)
    try:
        wait_for("the first job", lambda: len(jobs.recent(100)) == 1 and _all_ended(jobs))
        write_images(watched / "import", 30)
        wait_for("the burst", lambda: len(paths_indexed(engine)) == 30)
        wait_for("the jobs to end", lambda: _all_ended(jobs))
        assert watcher.wait_idle(DEADLINE_S)
        burst_jobs = jobs.recent(100)[:-1]
        assert [(j.paths, j.prune, j.state) for j in burst_jobs] == [
            ([str(watched)], True, "finished")
        ]
    finally:
        watcher.stop()
        jobs.close()


def test_changes_during_a_running_sync_job_get_a_job_of_their_own(
    settings: Settings, shared_embedder, watched: Path, tmp_path: Path
) -> None:
    gated = GatedEmbedder(shared_embedder)
    engine = ImageSearch(settings, embedder_factory=lambda s: gated)
    jobs = IndexJobs(engine, tmp_path / "jobs")
    write_images(watched, 2, seed=1)
    host = settings.model_copy(
        update={"watch": [watched], "watch_debounce_s": 0.3, "watch_rescan_s": None}
    )
    watcher = start_watching(engine, jobs, host)
    try:
        gated.reached()  # the first job has scanned the folder and waits to embed
        late = write_images(watched / "late", 1, seed=2)[0]
        syncs = watcher.syncs
        wait_for("a sync that joins the running job", lambda: watcher.syncs > syncs)
        assert len(jobs.recent(100)) == 1
        gated.open()
        wait_for("the late file", lambda: str(late) in paths_indexed(engine))
        wait_for("the jobs to end", lambda: _all_ended(jobs))
        assert len(jobs.recent(100)) == 2
    finally:
        watcher.stop()
        jobs.close()
        engine.close()
