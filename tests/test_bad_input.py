"""Bad input through the library: each call fails (or reports the file) with a clear
reason, never blocks, and leaves what was already stored exactly as it was."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from security_support import assert_same, png_bomb, snapshot, write_odd_images

from mmsearch.errors import (
    CollectionNotFoundError,
    ImageDecodeError,
    InvalidQueryError,
)
from mmsearch.library import ImageSearch


@pytest.fixture
def stored(engine: ImageSearch, photo_dir: Path) -> dict:
    """The photos indexed, and a snapshot of the collection to compare against."""
    engine.index([photo_dir])
    before = snapshot(engine.store, engine.settings.collection)
    assert len(before) == 5
    return before


def finishes(fn: Callable[[], Any], timeout: float = 30) -> Any:
    """Run ``fn`` in a thread; fail the test (instead of hanging it) if it blocks."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the call blocked"
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def reasons(report) -> dict[str, str]:
    return {Path(f.path).name: f.reason for f in report.failed}


def test_missing_paths_are_reported_and_nothing_is_lost(
    engine: ImageSearch, stored: dict, tmp_path: Path
) -> None:
    report = engine.index([tmp_path / "nope", tmp_path / "nope.jpg"], prune=True)
    assert reasons(report) == {
        "nope": "no such file or directory",
        "nope.jpg": "no such file or directory",
    }
    assert_same(stored, snapshot(engine.store, engine.settings.collection))


def test_broken_files_are_reported_each_with_its_reason(
    engine: ImageSearch, stored: dict, photo_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    jpeg = (photo_dir / "coffee.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (bad / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (bad / "text.jpg").write_text("not a picture at all")
    (bad / "bomb.png").write_bytes(png_bomb(12_000, 12_000))  # under Pillow's own limit
    report = finishes(lambda: engine.index([bad]))
    why = reasons(report)
    assert report.indexed == 0 and len(why) == 5
    assert "empty" in why["empty.jpg"]
    assert "truncated" in why["truncated.jpg"]
    assert "cannot decode" in why["corrupt.png"] or "not an image" in why["corrupt.png"]
    assert "not an image" in why["text.jpg"]
    assert "pixel limit" in why["bomb.png"]
    assert_same(stored, snapshot(engine.store, engine.settings.collection))


def test_decompression_bomb_as_a_query_is_refused_before_decoding(
    engine: ImageSearch, stored: dict
) -> None:
    with pytest.raises(ImageDecodeError, match="decompression bomb|pixel limit"):
        finishes(lambda: engine.search(image=png_bomb()))
    with pytest.raises(ImageDecodeError, match="pixel limit"):
        engine.search(image=png_bomb(12_000, 12_000))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifos_and_devices_are_never_read(
    engine: ImageSearch, stored: dict, tmp_path: Path
) -> None:
    folder = tmp_path / "pipes"
    folder.mkdir()
    os.mkfifo(folder / "pipe.jpg")
    report = finishes(lambda: engine.index([folder]))
    assert report.indexed == 0
    explicit = finishes(lambda: engine.index([folder / "pipe.jpg"]))
    assert reasons(explicit) == {"pipe.jpg": "not a regular file"}
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        finishes(lambda: engine.search(image=folder / "pipe.jpg"))
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        finishes(lambda: engine.search(image="/dev/zero"))
    assert_same(stored, snapshot(engine.store, engine.settings.collection))


def test_links_inside_a_folder_cannot_lead_out_of_the_allowed_roots(
    engine: ImageSearch, stored: dict, photo_dir: Path, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes((photo_dir / "camera.png").read_bytes())
    (outside / "deep").mkdir()
    (outside / "deep" / "also.png").write_bytes((photo_dir / "chelsea.png").read_bytes())
    (allowed / "inside.png").write_bytes((photo_dir / "astronaut.png").read_bytes())
    (allowed / "link.png").symlink_to(outside / "secret.png")
    (allowed / "sub" / "dir-link").symlink_to(outside / "deep", target_is_directory=True)
    (allowed / "loop.png").symlink_to(allowed / "loop.png")

    report = finishes(
        lambda: engine.index([allowed], roots=[allowed.resolve()], collection="confined")
    )
    stored_paths = {r.path for r in engine.store.iter_records("confined")}
    assert stored_paths == {str(allowed / "inside.png")}
    why = reasons(report)
    assert "outside the allowed roots" in why["link.png"]
    assert "loop.png" in why
    assert "also.png" not in why  # linked folders are not walked at all
    glob_report = engine.index([str(allowed / "**" / "*.png")], roots=[allowed.resolve()])
    assert "outside the allowed roots" in reasons(glob_report)["link.png"]
    assert_same(stored, snapshot(engine.store, engine.settings.collection))


def test_awkward_but_valid_images_index_correctly(engine: ImageSearch, tmp_path: Path) -> None:
    files = write_odd_images(tmp_path / "odd")
    report = engine.index([tmp_path / "odd"])
    assert report.failed == [] and report.indexed == len(files)
    rows = snapshot(engine.store, engine.settings.collection)
    by_path = {path: vec for path, vec in rows.values()}
    assert set(by_path) == {str(p) for p in files.values()}
    for vec in by_path.values():
        assert np.isfinite(vec).all() and abs(float(np.linalg.norm(vec)) - 1) < 1e-4
    upright, rotated = by_path[str(files["upright"])], by_path[str(files["rotated"])]
    assert float(upright @ rotated) > 0.9999
    hit = engine.search(image=files["rotated"], top_k=2)
    assert {h.path for h in hit} == {str(files["upright"]), str(files["rotated"])}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "cat", "top_k": 0}, "top_k"),
        ({"text": "cat", "top_k": -5}, "top_k"),
        ({"text": "cat", "top_k": 10**12}, "top_k"),
        ({"text": "cat", "top_k": True}, "top_k"),
        ({"text": "cat", "top_k": "9"}, "top_k"),
        ({}, "give a text"),
        ({"text": ""}, "empty"),
        ({"text": " \n\t "}, "empty"),
        ({"text": "x" * 100_000}, "max_query_chars"),
        ({"text": 42}, "must be a string"),
        ({"text": "cat", "filter": "path like '%'"}, "filter must be an object"),
        ({"text": "cat", "filter": {"size_min": "big"}}, "size_min"),
        ({"text": "cat", "filter": {"metadata": {"a b": 1}}}, "metadata key"),
        ({"text": "cat", "filter": {"metadata": {"k": [1]}}}, "metadata"),
        ({"text": "cat", "filter": {"unknown": 1}}, "unknown"),
        ({"text": "cat", "filter": {"path_glob": 'a" or path != "'}}, None),
        ({"text": "cat", "collection": "x; drop"}, "invalid collection name"),
        ({"image": b"\x00" * 100}, "not an image"),
        ({"image": 3.5}, "must be a path"),
    ],
)
def test_malformed_searches_are_refused(
    engine: ImageSearch, stored: dict, kwargs: dict, message: str | None
) -> None:
    if message is None:  # a hostile but valid filter: answered, and literally
        assert engine.search(**kwargs) == []
    else:
        with pytest.raises((InvalidQueryError, ImageDecodeError), match=message):
            engine.search(**kwargs)
    assert_same(stored, snapshot(engine.store, engine.settings.collection))


def test_unknown_collection_is_named(engine: ImageSearch, stored: dict) -> None:
    with pytest.raises(CollectionNotFoundError, match="nosuch"):
        engine.search(text="cat", collection="nosuch")
    with pytest.raises(CollectionNotFoundError):
        engine.remove(ids=["0" * 64], collection="nosuch")


def test_malformed_removals_are_refused(engine: ImageSearch, stored: dict) -> None:
    for ids in (["zz"], ["' or 1==1"], [5], ["A" * 64]):
        with pytest.raises(InvalidQueryError, match="invalid image id"):
            engine.remove(ids=ids)
    assert engine.remove(paths=['/x" or path != "']) == 0
    assert_same(stored, snapshot(engine.store, engine.settings.collection))
