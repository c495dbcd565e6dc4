"""Crash safety: an indexing process killed with SIGKILL in the middle of its work, then
started again, leaves every image stored exactly once with the vector of its own file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from security_support import snapshot

from mmsearch.config import Settings
from mmsearch.images import content_hash, load_image_file
from mmsearch.library import ImageSearch

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 240

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL")

CHILD = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from conftest import build_test_embedder
    from mmsearch.config import Settings
    from mmsearch.library import ImageSearch
    embedder = build_test_embedder({checkpoint!r})
    settings = Settings(data_dir={data!r}, batch_size=8, decode_workers=2)
    with ImageSearch(settings, embedder_factory=lambda s: embedder) as lib:
        def progress(p):
            print(p.done, flush=True)
        lib.index([{folder!r}], progress=progress)
    print("finished", flush=True)
    """
)


def write_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def index_until_killed(script: str, kill_after: int) -> str:
    """Run the indexer; SIGKILL it once it reports ``kill_after`` files done."""
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    last = ""
    try:
        for line in child.stdout:
            last = line.strip()
            if last.isdigit() and int(last) >= kill_after:
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.wait(timeout=120)
    return last


@pytest.mark.slow
def test_indexing_killed_twice_then_rerun_stores_each_image_once_with_its_vector(
    tmp_path: Path, embedder_spec: str, shared_embedder
) -> None:
    folder = tmp_path / "images"
    files = write_images(folder, N_IMAGES)
    data = tmp_path / "data"
    script = CHILD.format(
        tests=str(ROOT / "tests"), checkpoint=embedder_spec, data=str(data), folder=str(folder)
    )
    first = index_until_killed(script, kill_after=60)
    second = index_until_killed(script, kill_after=150)
    assert first.isdigit() and second.isdigit(), (first, second)  # killed mid-run both times

    settings = Settings(data_dir=data, batch_size=16, decode_workers=2)
    with ImageSearch(settings, embedder_factory=lambda s: shared_embedder) as lib:
        report = lib.index([folder])
        rows = snapshot(lib.store, settings.collection)
        count = lib.stats().count
    assert report.failed == []
    assert report.unchanged > 0  # what the killed runs stored was kept, not redone
    assert report.indexed + report.unchanged == N_IMAGES
    assert count == N_IMAGES == len(rows)
    by_path = {path: (id_, vec) for id_, (path, vec) in rows.items()}
    assert set(by_path) == {str(p) for p in files}
    images = [load_image_file(p) for p in files]
    expected = shared_embedder.encode(
        images=[shared_embedder.preprocess(im.image) for im in images], batch_size=16
    )
    for path, loaded, vec in zip(files, images, expected, strict=True):
        stored_id, stored_vec = by_path[str(path)]
        assert stored_id == loaded.sha256 == content_hash(path.read_bytes())
        np.testing.assert_allclose(stored_vec, vec, atol=1e-5)
    assert json.dumps(report.model_dump())  # the report of the rerun is well formed
