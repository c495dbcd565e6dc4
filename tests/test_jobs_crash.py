"""A process killed with SIGKILL while its index job runs: the next job manager on the
data directory reports the job interrupted, and indexing the folder again resumes it,
leaving every image stored exactly once with the vector of its own file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jobs_support import write_images
from security_support import snapshot

from mmsearch.config import Settings
from mmsearch.images import content_hash, load_image_file
from mmsearch.jobs import IndexJobs
from mmsearch.library import ImageSearch

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 160

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL")

CHILD = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from conftest import build_test_embedder
    from mmsearch.config import Settings
    from mmsearch.jobs import IndexJobs
    from mmsearch.library import ImageSearch
    embedder = build_test_embedder({checkpoint!r})
    settings = Settings(data_dir={data!r}, batch_size=8, decode_workers=2)
    lib = ImageSearch(settings, embedder_factory=lambda s: embedder)
    jobs = IndexJobs(lib, settings.data_dir)
    job = jobs.submit([{folder!r}])
    print("job", job.id, flush=True)
    while jobs.wait(job.id, timeout=0.2).active:
        print("done", jobs.get(job.id).done, flush=True)
    print("finished", flush=True)
    """
)


def run_job_until_killed(script: str, kill_after: int) -> tuple[str, int]:
    """Run a job in a child process; SIGKILL it once ``kill_after`` files are done.
    Returns the job id and the last progress seen."""
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    job_id, done = "", -1
    try:
        for line in child.stdout:
            word, _, value = line.strip().partition(" ")
            if word == "job":
                job_id = value
            elif word == "done":
                done = int(value)
                if done >= kill_after:
                    child.send_signal(signal.SIGKILL)
                    break
    finally:
        child.wait(timeout=120)
    return job_id, done


@pytest.mark.slow
def test_a_job_killed_mid_run_is_reported_interrupted_and_resumes(
    tmp_path: Path, embedder_spec: str, shared_embedder: Any
) -> None:
    folder = tmp_path / "images"
    files = write_images(folder, N_IMAGES)
    data = tmp_path / "data"
    script = CHILD.format(
        tests=str(ROOT / "tests"), checkpoint=embedder_spec, data=str(data), folder=str(folder)
    )
    job_id, done = run_job_until_killed(script, kill_after=40)
    assert job_id and 40 <= done < N_IMAGES, (job_id, done)  # killed mid-run

    settings = Settings(data_dir=data, batch_size=16, decode_workers=2)
    with ImageSearch(settings, embedder_factory=lambda s: shared_embedder) as lib:
        jobs = IndexJobs(lib, data)
        killed = jobs.get(job_id)
        assert killed.state == "interrupted", killed
        assert "stopped before it ended" in killed.error
        resumed = jobs.wait(jobs.submit([folder]).id, timeout=300)
        jobs.close()
        rows = snapshot(lib.store, settings.collection)
    assert resumed.state == "finished", resumed.error
    report = resumed.report
    assert report.failed == []
    assert report.unchanged >= 40  # what the killed job stored was kept, not redone
    assert report.indexed + report.unchanged == N_IMAGES
    assert len(rows) == N_IMAGES
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
