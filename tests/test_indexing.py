"""Indexing folders into a collection: skipping, updating, failing and pruning."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image

from mmsearch.errors import InvalidQueryError
from mmsearch.images import content_hash
from mmsearch.library import ImageSearch
from mmsearch.types import IndexProgress


def _ids(engine: ImageSearch) -> dict[str, str]:
    """path -> id of everything stored."""
    return {r.path: r.id for r in engine.store.iter_records(engine.settings.collection)}


def test_indexing_a_folder_stores_every_photo(engine: ImageSearch, photos: Path) -> None:
    report = engine.index([photos])
    assert (report.indexed, report.unchanged, report.failed, report.total) == (5, 0, [], 5)
    stored = _ids(engine)
    assert set(stored) == {str(p) for p in photos.iterdir()}
    for path, id_ in stored.items():
        assert id_ == content_hash(Path(path).read_bytes())


def test_reindexing_unchanged_files_embeds_nothing(engine: ImageSearch, photos: Path) -> None:
    engine.index([photos])
    calls = engine.embedder.encode_calls
    report = engine.index([photos])
    assert (report.indexed, report.unchanged) == (0, 5)
    assert engine.embedder.encode_calls == calls
    assert engine.stats().count == 5


def test_changed_file_replaces_its_record(engine: ImageSearch, photos: Path) -> None:
    engine.index([photos])
    target = photos / "chelsea.png"
    old_id = _ids(engine)[str(target)]
    Image.open(target).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target)
    report = engine.index([photos])
    assert (report.indexed, report.unchanged) == (1, 4)
    stored = _ids(engine)
    new_id = content_hash(target.read_bytes())
    assert stored[str(target)] == new_id != old_id
    assert engine.get([old_id]) == []
    assert engine.stats().count == 5


def test_touched_file_with_same_bytes_is_not_reembedded(engine: ImageSearch, photos: Path) -> None:
    engine.index([photos])
    calls = engine.embedder.encode_calls
    target = photos / "coffee.jpg"
    os.utime(target, (1_000_000_000, 1_000_000_000))
    report = engine.index([photos])
    assert (report.indexed, report.unchanged) == (0, 5)
    assert engine.embedder.encode_calls == calls
    assert engine.get([content_hash(target.read_bytes())])[0].mtime == 1_000_000_000


def test_corrupt_file_is_reported_and_others_indexed(engine: ImageSearch, photos: Path) -> None:
    (photos / "broken.jpg").write_bytes((photos / "coffee.jpg").read_bytes()[:300])
    (photos / "empty.png").write_bytes(b"")
    (photos / "text.gif").write_bytes(b"not a gif at all")
    report = engine.index([photos])
    assert report.indexed == 5
    reasons = {Path(f.path).name: f.reason for f in report.failed}
    assert set(reasons) == {"broken.jpg", "empty.png", "text.gif"}
    assert "truncated" in reasons["broken.jpg"]
    assert "empty" in reasons["empty.png"]
    assert "not an image" in reasons["text.gif"]
    assert engine.stats().count == 5


def test_same_bytes_under_two_paths_are_stored_once(engine: ImageSearch, photos: Path) -> None:
    shutil.copy(photos / "rocket.jpg", photos / "rocket_copy.jpg")
    report = engine.index([photos])
    assert (report.indexed, report.duplicates) == (5, 1)
    assert engine.stats().count == 5
    again = engine.index([photos])
    assert (again.indexed, again.duplicates) == (0, 1)


def test_moved_file_keeps_its_vector_under_the_new_path(engine: ImageSearch, photos: Path) -> None:
    engine.index([photos])
    calls = engine.embedder.encode_calls
    (photos / "camera.png").rename(photos / "cameraman.png")
    report = engine.index([photos], prune=True)
    assert (report.indexed, report.removed) == (1, 0)
    assert engine.embedder.encode_calls == calls
    assert str(photos / "cameraman.png") in _ids(engine)
    assert str(photos / "camera.png") not in _ids(engine)


def test_prune_removes_records_of_deleted_files(engine: ImageSearch, photos: Path) -> None:
    engine.index([photos])
    (photos / "astronaut.png").unlink()
    assert engine.index([photos]).removed == 0
    assert engine.stats().count == 5
    report = engine.index([photos], prune=True)
    assert report.removed == 1
    assert str(photos / "astronaut.png") not in _ids(engine)
    assert engine.stats().count == 4


def test_prune_stays_under_the_given_roots(
    engine: ImageSearch, photos: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    shutil.move(photos / "rocket.jpg", other / "rocket.jpg")
    engine.index([photos, other])
    (other / "rocket.jpg").unlink()
    (photos / "coffee.jpg").unlink()
    report = engine.index([photos], prune=True)
    assert report.removed == 1
    assert str(other / "rocket.jpg") in _ids(engine)


def test_non_recursive_skips_subfolders(engine: ImageSearch, photos: Path) -> None:
    (photos / "sub").mkdir()
    shutil.move(photos / "rocket.jpg", photos / "sub" / "rocket.jpg")
    assert engine.index([photos], recursive=False).indexed == 4
    assert engine.index([photos], recursive=True).indexed == 1


def test_extensions_filter_folders(engine: ImageSearch, photos: Path) -> None:
    report = engine.index([photos], extensions=[".JPG"])
    assert report.indexed == 2
    assert {Path(p).suffix for p in _ids(engine)} == {".jpg"}


def test_glob_indexes_matching_files(engine: ImageSearch, photos: Path) -> None:
    report = engine.index([str(photos / "c*.png")])
    assert {Path(p).name for p in _ids(engine)} == {"chelsea.png", "camera.png"}
    assert report.indexed == 2


def test_missing_path_is_reported(engine: ImageSearch, photos: Path) -> None:
    report = engine.index([photos / "nope.jpg", photos / "coffee.jpg"])
    assert report.indexed == 1
    assert [(Path(f.path).name, f.reason) for f in report.failed] == [
        ("nope.jpg", "no such file or directory")
    ]


def test_metadata_is_stored_and_updated(engine: ImageSearch, photos: Path) -> None:
    engine.index([photos], metadata={"album": "zoo", "year": 2024})
    assert {r.metadata["album"] for r in engine.store.iter_records("images")} == {"zoo"}
    engine.index([photos], metadata={"album": "trip"})
    assert [r.metadata for r in engine.store.iter_records("images")] == [{"album": "trip"}] * 5


def test_invalid_metadata_is_refused_before_work(engine: ImageSearch, photos: Path) -> None:
    with pytest.raises(InvalidQueryError):
        engine.index([photos], metadata={"bad key": 1})


def test_progress_reaches_total(engine: ImageSearch, photos: Path) -> None:
    seen: list[IndexProgress] = []
    engine.index([photos], progress=seen.append)
    assert seen[0].done == 0
    assert seen[-1].done == seen[-1].total == 5
    assert [p.done for p in seen] == sorted(p.done for p in seen)


def test_cancel_stops_between_batches_and_keeps_store_consistent(
    engine: ImageSearch, photos: Path
) -> None:
    cancel = threading.Event()

    def progress(p: IndexProgress) -> None:
        if p.done >= 2:
            cancel.set()

    report = engine.index([photos], progress=progress, cancel=cancel)
    assert report.cancelled
    assert report.indexed == engine.settings.batch_size == engine.stats().count
    resumed = engine.index([photos])
    assert (resumed.indexed, resumed.unchanged) == (3, 2)
