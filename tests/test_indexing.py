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


def test_indexing_a_folder_stores_every_photo(engine: ImageSearch, photo_dir: Path) -> None:
    report = engine.index([photo_dir])
    assert (report.indexed, report.unchanged, report.failed, report.total) == (5, 0, [], 5)
    stored = _ids(engine)
    assert set(stored) == {str(p) for p in photo_dir.iterdir()}
    for path, id_ in stored.items():
        assert id_ == content_hash(Path(path).read_bytes())


def test_reindexing_unchanged_files_embeds_nothing(engine: ImageSearch, photo_dir: Path) -> None:
    engine.index([photo_dir])
    calls = engine.embedder.encode_calls
    report = engine.index([photo_dir])
    assert (report.indexed, report.unchanged) == (0, 5)
    assert engine.embedder.encode_calls == calls
    assert engine.stats().count == 5


def test_changed_file_replaces_its_record(engine: ImageSearch, photo_dir: Path) -> None:
    engine.index([photo_dir])
    target = photo_dir / "chelsea.png"
    old_id = _ids(engine)[str(target)]
    Image.open(target).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target)
    report = engine.index([photo_dir])
    assert (report.indexed, report.unchanged) == (1, 4)
    stored = _ids(engine)
    new_id = content_hash(target.read_bytes())
    assert stored[str(target)] == new_id != old_id
    assert engine.get([old_id]) == []
    assert engine.stats().count == 5


def test_touched_file_with_same_bytes_is_not_reembedded(
    engine: ImageSearch, photo_dir: Path
) -> None:
    engine.index([photo_dir])
    calls = engine.embedder.encode_calls
    target = photo_dir / "coffee.jpg"
    os.utime(target, (1_000_000_000, 1_000_000_000))
    report = engine.index([photo_dir])
    assert (report.indexed, report.unchanged) == (0, 5)
    assert engine.embedder.encode_calls == calls
    assert engine.get([content_hash(target.read_bytes())])[0].mtime == 1_000_000_000


def test_corrupt_file_is_reported_and_others_indexed(engine: ImageSearch, photo_dir: Path) -> None:
    (photo_dir / "broken.jpg").write_bytes((photo_dir / "coffee.jpg").read_bytes()[:300])
    (photo_dir / "empty.png").write_bytes(b"")
    (photo_dir / "text.gif").write_bytes(b"not a gif at all")
    report = engine.index([photo_dir])
    assert report.indexed == 5
    reasons = {Path(f.path).name: f.reason for f in report.failed}
    assert set(reasons) == {"broken.jpg", "empty.png", "text.gif"}
    assert "truncated" in reasons["broken.jpg"]
    assert "empty" in reasons["empty.png"]
    assert "not an image" in reasons["text.gif"]
    assert engine.stats().count == 5


def test_same_bytes_under_two_paths_are_stored_once(engine: ImageSearch, photo_dir: Path) -> None:
    shutil.copy(photo_dir / "rocket.jpg", photo_dir / "rocket_copy.jpg")
    report = engine.index([photo_dir])
    assert (report.indexed, report.duplicates) == (5, 1)
    assert engine.stats().count == 5
    again = engine.index([photo_dir])
    assert (again.indexed, again.duplicates) == (0, 1)


def test_moved_file_keeps_its_vector_under_the_new_path(
    engine: ImageSearch, photo_dir: Path
) -> None:
    engine.index([photo_dir])
    calls = engine.embedder.encode_calls
    (photo_dir / "camera.png").rename(photo_dir / "cameraman.png")
    report = engine.index([photo_dir], prune=True)
    assert (report.indexed, report.removed) == (1, 0)
    assert engine.embedder.encode_calls == calls
    assert str(photo_dir / "cameraman.png") in _ids(engine)
    assert str(photo_dir / "camera.png") not in _ids(engine)


def test_prune_removes_records_of_deleted_files(engine: ImageSearch, photo_dir: Path) -> None:
    engine.index([photo_dir])
    (photo_dir / "astronaut.png").unlink()
    assert engine.index([photo_dir]).removed == 0
    assert engine.stats().count == 5
    report = engine.index([photo_dir], prune=True)
    assert report.removed == 1
    assert str(photo_dir / "astronaut.png") not in _ids(engine)
    assert engine.stats().count == 4


def test_prune_stays_under_the_given_roots(
    engine: ImageSearch, photo_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    shutil.move(photo_dir / "rocket.jpg", other / "rocket.jpg")
    engine.index([photo_dir, other])
    (other / "rocket.jpg").unlink()
    (photo_dir / "coffee.jpg").unlink()
    report = engine.index([photo_dir], prune=True)
    assert report.removed == 1
    assert str(other / "rocket.jpg") in _ids(engine)


def test_non_recursive_skips_subfolders(engine: ImageSearch, photo_dir: Path) -> None:
    (photo_dir / "sub").mkdir()
    shutil.move(photo_dir / "rocket.jpg", photo_dir / "sub" / "rocket.jpg")
    assert engine.index([photo_dir], recursive=False).indexed == 4
    assert engine.index([photo_dir], recursive=True).indexed == 1


def test_extensions_filter_folders(engine: ImageSearch, photo_dir: Path) -> None:
    report = engine.index([photo_dir], extensions=[".JPG"])
    assert report.indexed == 2
    assert {Path(p).suffix for p in _ids(engine)} == {".jpg"}


def test_glob_indexes_matching_files(engine: ImageSearch, photo_dir: Path) -> None:
    report = engine.index([str(photo_dir / "c*.png")])
    assert {Path(p).name for p in _ids(engine)} == {"chelsea.png", "camera.png"}
    assert report.indexed == 2


def test_missing_path_is_reported(engine: ImageSearch, photo_dir: Path) -> None:
    report = engine.index([photo_dir / "nope.jpg", photo_dir / "coffee.jpg"])
    assert report.indexed == 1
    assert [(Path(f.path).name, f.reason) for f in report.failed] == [
        ("nope.jpg", "no such file or directory")
    ]


def test_metadata_is_stored_and_updated(engine: ImageSearch, photo_dir: Path) -> None:
    engine.index([photo_dir], metadata={"album": "zoo", "year": 2024})
    assert {r.metadata["album"] for r in engine.store.iter_records("images")} == {"zoo"}
    engine.index([photo_dir], metadata={"album": "trip"})
    assert [r.metadata for r in engine.store.iter_records("images")] == [{"album": "trip"}] * 5


def test_invalid_metadata_is_refused_before_work(engine: ImageSearch, photo_dir: Path) -> None:
    with pytest.raises(InvalidQueryError):
        engine.index([photo_dir], metadata={"bad key": 1})


def test_progress_reaches_total(engine: ImageSearch, photo_dir: Path) -> None:
    seen: list[IndexProgress] = []
    engine.index([photo_dir], progress=seen.append)
    assert seen[0].done == 0
    assert seen[-1].done == seen[-1].total == 5
    assert [p.done for p in seen] == sorted(p.done for p in seen)


def test_cancel_stops_between_batches_and_keeps_store_consistent(
    engine: ImageSearch, photo_dir: Path
) -> None:
    cancel = threading.Event()

    def progress(p: IndexProgress) -> None:
        if p.done >= 2:
            cancel.set()

    report = engine.index([photo_dir], progress=progress, cancel=cancel)
    assert report.cancelled
    assert report.indexed == engine.settings.batch_size == engine.stats().count
    resumed = engine.index([photo_dir])
    assert (resumed.indexed, resumed.unchanged) == (3, 2)


def test_hostile_file_names_are_indexed_and_found_literally(
    engine: ImageSearch, photo_dir: Path
) -> None:
    names = ['a"b or 1==1.png', "back\\slash.png", "tab\there.png", "ünï 猫.png", "x%_y.png"]
    source = (photo_dir / "camera.png").read_bytes()
    hostile = photo_dir / "hostile"
    hostile.mkdir()
    for i, name in enumerate(names):
        (hostile / name).write_bytes(source + bytes([i]))  # distinct bytes, same picture
    report = engine.index([hostile])
    assert (report.indexed, report.failed) == (len(names), [])
    hits = engine.search(text="x", top_k=50, filter={"path_prefix": str(hostile)})
    assert sorted(Path(h.path).name for h in hits) == sorted(names)
    assert engine.remove(paths=[hostile / names[0]]) == 1
    assert engine.index([hostile]).unchanged == len(names) - 1


@pytest.mark.parametrize("name", ["bell\x07.png", "new\nline.png", "return\r.png"])
def test_file_names_a_filter_cannot_express_are_reported(
    engine: ImageSearch, photo_dir: Path, name: str
) -> None:
    odd = photo_dir / name
    odd.write_bytes((photo_dir / "camera.png").read_bytes() + b"\0")
    report = engine.index([photo_dir])
    assert report.indexed == 5
    assert [(f.path, "control character" in f.reason) for f in report.failed] == [(str(odd), True)]


def test_two_records_for_one_path_are_resolved_by_the_next_run(
    engine: ImageSearch, photo_dir: Path
) -> None:
    from mmsearch.store import StoredRow

    engine.index([photo_dir])
    target = photo_dir / "rocket.jpg"
    rec = engine.get([content_hash(target.read_bytes())])[0]
    stale = StoredRow("e" * 64, rec.path, rec.size + 1, rec.mtime, {}, [0.0] * engine.embedder.dim)
    stale.vector[0] = 1.0
    engine.store.upsert("images", [stale], model_id=engine.embedder.model_id)
    report = engine.index([photo_dir])
    assert (report.indexed, report.unchanged) == (0, 5)
    assert engine.get(["e" * 64]) == []
    assert engine.stats().count == 5


def test_prune_of_a_deleted_folder_forgets_its_images(engine: ImageSearch, photo_dir: Path) -> None:
    sub = photo_dir / "sub"
    sub.mkdir()
    shutil.move(photo_dir / "rocket.jpg", sub / "rocket.jpg")
    engine.index([photo_dir])
    shutil.rmtree(sub)
    report = engine.index([sub], prune=True)
    assert report.removed == 1
    assert [f.reason for f in report.failed] == ["no such file or directory"]
    assert engine.stats().count == 4


def test_embedding_failure_is_reported_per_file(
    engine: ImageSearch, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.index([photo_dir])
    target = photo_dir / "chelsea.png"
    old_id = content_hash(target.read_bytes())
    Image.open(target).rotate(180).save(target)
    (photo_dir / "new.png").write_bytes((photo_dir / "camera.png").read_bytes() + b"\0")
    inner = engine.embedder.encode

    def fail_on_chelsea(texts=None, images=None, *, batch_size=None):
        if images is not None and any(float(t.float().mean()) == poison for t in images):
            raise RuntimeError("out of memory")
        return inner(texts=texts, images=images, batch_size=batch_size)

    poison = float(engine.embedder.preprocess(Image.open(target).convert("RGB")).float().mean())
    monkeypatch.setattr(engine.embedder, "encode", fail_on_chelsea)
    report = engine.index([photo_dir])
    assert report.indexed == 1
    assert [(Path(f.path).name, f.reason) for f in report.failed] == [
        ("chelsea.png", "embedding failed: out of memory")
    ]
    assert engine.get([old_id])[0].path == str(target)


def test_prune_spares_a_folder_that_vanishes_during_the_run(
    engine: ImageSearch, photo_dir: Path, tmp_path: Path
) -> None:
    """An unmounted drive mid-run: its files are gone all at once, its images are not."""
    engine.index([photo_dir])
    stored = engine.store.count(engine.settings.collection)

    def unmount(progress: object) -> None:
        if photo_dir.exists():
            photo_dir.rename(tmp_path / "unmounted")

    report = engine.index([photo_dir], prune=True, progress=unmount)
    assert report.removed == 0
    assert engine.store.count(engine.settings.collection) == stored > 0
