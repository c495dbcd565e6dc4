"""Background index jobs over the real library: queueing, joining, cancelling, records
that outlive the process, and searches answered while a job runs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jobs_support import GatedEmbedder, write_images

from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError, JobNotFoundError, ModelLoadError
from mmsearch.jobs import IndexJobs, JobRecords
from mmsearch.library import ImageSearch
from mmsearch.types import IndexJobStatus


@pytest.fixture
def gated(shared_embedder: Any) -> GatedEmbedder:
    return GatedEmbedder(shared_embedder)


@pytest.fixture
def lib(settings: Settings, gated: GatedEmbedder) -> Iterator[ImageSearch]:
    search = ImageSearch(settings, embedder_factory=lambda s: gated)
    yield search
    gated.open()
    search.close()


@pytest.fixture
def jobs(lib: ImageSearch, settings: Settings, gated: GatedEmbedder) -> Iterator[IndexJobs]:
    manager = IndexJobs(lib, settings.data_dir)
    yield manager
    gated.open()
    manager.close()


def test_a_job_indexes_the_folder_and_its_record_outlives_the_manager(
    jobs: IndexJobs, lib: ImageSearch, gated: GatedEmbedder, tmp_path: Path, settings: Settings
) -> None:
    files = write_images(tmp_path / "a", 5)
    gated.open()
    job = jobs.submit([tmp_path / "a"])
    assert job.state in ("queued", "running") and job.collection == "images"
    done = jobs.wait(job.id, timeout=60)
    assert done.state == "finished", done.error
    assert (done.done, done.total, done.indexed, done.failed) == (5, 5, 5, 0)
    assert done.report is not None and done.report.indexed == 5
    assert done.started_at is not None and done.finished_at >= done.started_at
    assert lib.stats().count == len(files)
    again = IndexJobs(lib, settings.data_dir)  # another process's view, same data dir
    assert again.get(job.id).state == "finished"
    assert [j.id for j in again.recent()] == [job.id]


def test_progress_is_visible_while_the_job_runs(
    jobs: IndexJobs, gated: GatedEmbedder, tmp_path: Path
) -> None:
    write_images(tmp_path / "a", 6)  # batch_size 2: three batches
    job = jobs.submit([tmp_path / "a"])
    gated.reached()
    gated.open(1)
    gated.reached()  # the first batch is stored, the second waits
    status = jobs.get(job.id)
    assert status.state == "running"
    assert (status.done, status.total, status.indexed) == (2, 6, 2)
    assert status.elapsed_s > 0
    gated.open()
    assert jobs.wait(job.id, 60).state == "finished"


def test_the_same_request_joins_the_running_job(
    jobs: IndexJobs, gated: GatedEmbedder, tmp_path: Path
) -> None:
    write_images(tmp_path / "a", 3)
    first = jobs.submit([tmp_path / "a"])
    gated.reached()
    again = jobs.submit([str(tmp_path / "a" / ".." / "a")])
    other_options = jobs.submit([tmp_path / "a"], recursive=False)
    pruning = jobs.submit([tmp_path / "a"], prune=True)
    only_png = jobs.submit([tmp_path / "a"], extensions=["png"])
    same_png = jobs.submit([tmp_path / "a"], extensions=[".PNG"])
    assert again.id == first.id
    assert other_options.id != first.id and other_options.state == "queued"
    assert len({first.id, other_options.id, pruning.id, only_png.id}) == 4
    assert same_png.id == only_png.id  # the same extensions, spelt otherwise
    gated.open()
    assert jobs.wait(first.id, 60).state == "finished"
    assert jobs.wait(other_options.id, 60).report.unchanged == 3


def test_jobs_of_one_collection_run_one_at_a_time_in_order(
    jobs: IndexJobs, gated: GatedEmbedder, tmp_path: Path
) -> None:
    write_images(tmp_path / "a", 2, seed=1)
    write_images(tmp_path / "b", 2, seed=2)
    first = jobs.submit([tmp_path / "a"])
    gated.reached()
    second = jobs.submit([tmp_path / "b"])
    assert jobs.get(second.id).state == "queued"
    gated.open()
    a, b = jobs.wait(first.id, 60), jobs.wait(second.id, 60)
    assert a.state == b.state == "finished"
    assert b.started_at >= a.finished_at
    assert b.report.indexed == 2


def test_searches_and_stats_are_answered_while_a_job_runs(
    jobs: IndexJobs, lib: ImageSearch, gated: GatedEmbedder, tmp_path: Path
) -> None:
    write_images(tmp_path / "a", 2, seed=1)
    gated.open()
    jobs.wait(jobs.submit([tmp_path / "a"]).id, 60)
    write_images(tmp_path / "b", 4, seed=2)
    job = jobs.submit([tmp_path / "b"])
    gated.reached()  # the job holds a batch; the library must not be locked by it
    assert lib.stats().count == 2
    assert len(lib.search(text="noise", top_k=5)) == 2
    assert jobs.get(job.id).state == "running"
    gated.open()
    assert jobs.wait(job.id, 60).state == "finished"
    assert lib.stats().count == 6


def test_cancel_stops_a_running_job_and_indexing_again_resumes(
    jobs: IndexJobs, lib: ImageSearch, gated: GatedEmbedder, tmp_path: Path
) -> None:
    write_images(tmp_path / "a", 6)
    job = jobs.submit([tmp_path / "a"])
    gated.reached()
    gated.open(1)
    gated.reached()
    jobs.cancel(job.id)
    gated.open()
    ended = jobs.wait(job.id, 60)
    assert ended.state == "cancelled" and ended.report.cancelled
    assert 2 <= lib.stats().count < 6
    stored = lib.stats().count
    resumed = jobs.wait(jobs.submit([tmp_path / "a"]).id, 60)
    assert resumed.state == "finished"
    assert (resumed.report.unchanged, resumed.report.indexed) == (stored, 6 - stored)
    assert lib.stats().count == 6


def test_cancel_of_a_queued_job_means_it_never_runs(
    jobs: IndexJobs, lib: ImageSearch, gated: GatedEmbedder, tmp_path: Path
) -> None:
    write_images(tmp_path / "a", 2, seed=1)
    write_images(tmp_path / "b", 2, seed=2)
    first = jobs.submit([tmp_path / "a"])
    gated.reached()
    second = jobs.submit([tmp_path / "b"])
    assert jobs.cancel(second.id).state == "cancelled"
    gated.open()
    assert jobs.wait(first.id, 60).state == "finished"
    assert jobs.get(second.id).started_at is None
    assert lib.stats().count == 2


def test_a_failing_job_reports_the_error(settings: Settings, tmp_path: Path) -> None:
    def broken(_: Settings) -> Any:
        raise ModelLoadError("no weights here")

    write_images(tmp_path / "a", 1)
    with ImageSearch(settings, embedder_factory=broken) as lib:
        jobs = IndexJobs(lib, settings.data_dir)
        status = jobs.wait(jobs.submit([tmp_path / "a"]).id, 60)
        jobs.close()
    assert status.state == "failed"
    assert status.error == "ModelLoadError: no weights here"


def test_bad_requests_are_refused_before_queueing(jobs: IndexJobs, tmp_path: Path) -> None:
    with pytest.raises(InvalidQueryError, match="no paths"):
        jobs.submit([])
    with pytest.raises(InvalidQueryError, match="empty path"):
        jobs.submit([""])
    with pytest.raises(InvalidQueryError):
        jobs.submit([tmp_path], collection="bad name!")
    with pytest.raises(JobNotFoundError):
        jobs.get("nope")
    assert jobs.recent() == []


def test_closing_interrupts_the_running_job(
    settings: Settings, lib: ImageSearch, gated: GatedEmbedder, tmp_path: Path
) -> None:
    write_images(tmp_path / "a", 4)
    jobs = IndexJobs(lib, settings.data_dir)
    job = jobs.submit([tmp_path / "a"])
    gated.reached()
    jobs.close(timeout=0)  # asks the job to stop; does not wait for it
    gated.open()
    jobs.close()
    status = jobs.get(job.id)
    assert status.state == "interrupted" and status.report.indexed == 2
    assert JobRecords(settings.data_dir).get(job.id).state == "interrupted"
    with pytest.raises(Exception, match="closed"):
        jobs.submit([tmp_path / "a"])


def test_a_record_left_running_by_a_dead_process_reads_interrupted(
    settings: Settings, lib: ImageSearch
) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    pid = int(dead.stdout)
    records = JobRecords(settings.data_dir)
    orphan = IndexJobStatus(
        id="orphan",
        state="running",
        collection="images",
        paths=["/x"],
        submitted_at=1.0,
        started_at=1.0,
        pid=pid,
    )
    records.save(orphan)
    assert records.get("orphan").state == "interrupted"  # read by anyone: not trusted
    IndexJobs(lib, settings.data_dir)
    status = records.get("orphan")
    assert status.state == "interrupted" and f"pid {pid}" in status.error
