"""The mmsearch command line."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmsearch.cli import cli, parse_scalar


@pytest.fixture
def run(settings, embedder, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MMSEARCH_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(
            cli, list(args), obj={"embedder_factory": lambda s: embedder}, catch_exceptions=False
        )

    return invoke


def test_index_then_search_as_json(run, photo_dir: Path) -> None:
    result = run("index", str(photo_dir), "--meta", "album=zoo", "--meta", "year=2024")
    assert result.exit_code == 0
    assert "indexed 5, unchanged 0" in result.stdout
    result = run("search", "--image", str(photo_dir / "coffee.jpg"), "--top-k", "2", "--json")
    assert result.exit_code == 0
    hits = json.loads(result.stdout)
    assert [h["path"] for h in hits][0] == str(photo_dir / "coffee.jpg")
    assert hits[0]["metadata"] == {"album": "zoo", "year": 2024}
    assert set(hits[0]) == {"id", "path", "score", "score_kind", "cosine", "caption", "metadata"}
    assert hits[0]["score_kind"] == "cosine" and hits[0]["caption"] is None


def test_index_with_captions_then_search_by_text(
    run, photo_dir: Path, tiny_vlm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMSEARCH_RERANK_MODEL", str(tiny_vlm_dir))
    monkeypatch.setenv("MMSEARCH_RERANK_DEVICE", "cpu")
    monkeypatch.setenv("MMSEARCH_CAPTION_MAX_NEW_TOKENS", "6")
    result = run("index", str(photo_dir), "--captions")
    assert result.exit_code == 0 and "captioned 5" in result.stdout
    hits = json.loads(run("search", "--text", "a photo", "--json").stdout)
    assert all(h["caption"] and h["score_kind"] == "rrf" for h in hits)


def test_index_json_report_lists_failures(run, photo_dir: Path) -> None:
    (photo_dir / "bad.png").write_bytes(b"not an image")
    result = run("index", str(photo_dir), "--json")
    report = json.loads(result.stdout)
    assert report["indexed"] == 5
    assert [Path(f["path"]).name for f in report["failed"]] == ["bad.png"]


def test_search_with_filters(run, photo_dir: Path) -> None:
    run("index", str(photo_dir))
    result = run(
        "search",
        "--text",
        "x",
        "--json",
        "--filter-path-glob",
        "*.png",
        "--filter-path-prefix",
        str(photo_dir),
    )
    names = {Path(h["path"]).name for h in json.loads(result.stdout)}
    assert names == {"astronaut.png", "chelsea.png", "camera.png"}


def test_stats_and_remove(run, embedder, photo_dir: Path) -> None:
    run("index", str(photo_dir))
    stats = json.loads(run("stats", "--json").stdout)
    assert stats["count"] == 5 and stats["dim"] == embedder.dim
    assert run("remove", str(photo_dir / "rocket.jpg")).stdout.strip() == "removed 1"
    assert json.loads(run("stats", "--json").stdout)["count"] == 4


def test_errors_are_one_line_on_stderr_with_nonzero_exit(run, photo_dir: Path) -> None:
    result = run("stats")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: collection 'images' does not exist")
    assert len(result.stderr.strip().splitlines()) == 1


def test_empty_text_is_an_error(run, photo_dir: Path) -> None:
    run("index", str(photo_dir))
    result = run("search", "--text", "  ")
    assert result.exit_code == 1
    assert "empty" in result.stderr


def test_bad_meta_option_is_a_usage_error(run, photo_dir: Path) -> None:
    result = run("index", str(photo_dir), "--meta", "novalue")
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.stderr


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("false", False), ("12", 12), ("1.5", 1.5), ("abc", "abc"), ("nan", "nan")],
)
def test_meta_values_are_typed(text: str, value: object) -> None:
    assert parse_scalar(text) == value and type(parse_scalar(text)) is type(value)


def test_ctrl_c_stops_indexing_after_the_batch(
    run, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal

    import mmsearch.cli
    from mmsearch.jobs import IndexJobs

    monkeypatch.setenv("MMSEARCH_BATCH_SIZE", "2")
    original = mmsearch.cli._ProgressBar.__call__
    original_cancel = IndexJobs.cancel
    cancelled = threading.Event()

    def cancel(self, job_id):  # noqa: ANN001, ANN202
        status = original_cancel(self, job_id)
        cancelled.set()
        return status

    def interrupt_once_started(self, p) -> None:
        original(self, p)
        if p.done == 2:  # the job runs on its own thread: hold it until Ctrl-C reached it
            os.kill(os.getpid(), signal.SIGINT)
            assert cancelled.wait(30)

    monkeypatch.setattr(IndexJobs, "cancel", cancel)

    monkeypatch.setattr(mmsearch.cli._ProgressBar, "__call__", interrupt_once_started)
    result = run("index", str(photo_dir))
    assert result.exit_code == 130
    assert "indexed 2," in result.stdout and "cancelled" in result.stdout
    assert "stopping after the current batch" in result.stderr
    monkeypatch.setattr(mmsearch.cli._ProgressBar, "__call__", original)
    assert "indexed 3, unchanged 2" in run("index", str(photo_dir)).stdout


def test_help_lists_every_command(run) -> None:
    out = run("--help").stdout
    for command in ("index", "search", "stats", "remove", "rerank", "eval"):
        assert f"  {command} " in out


def test_rerank_takes_stored_ids(
    run, photo_dir: Path, tiny_vlm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMSEARCH_RERANK_MODEL", str(tiny_vlm_dir))
    monkeypatch.setenv("MMSEARCH_RERANK_DEVICE", "cpu")
    run("index", str(photo_dir))
    hits = json.loads(run("search", "--text", "x", "--top-k", "3", "--json").stdout)
    ids = [h["id"] for h in hits]
    args = [a for i in ids for a in ("-c", i)]
    result = run("rerank", "--text", "a cat", *args, "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(json.loads(result.stdout)["ids"]) == sorted(ids)
    unknown = run("rerank", "--text", "a cat", "-c", "0" * 64)
    assert unknown.exit_code != 0
    assert "nor a stored image ID" in unknown.stderr


def test_jobs_lists_the_index_job_that_ran(run, photo_dir: Path) -> None:
    assert run("index", str(photo_dir)).exit_code == 0
    listed = run("jobs", "--json")
    [job] = json.loads(listed.stdout)
    assert job["state"] == "finished" and job["indexed"] == 5
    assert job["paths"] == [str(photo_dir)]
    assert f"{job['id']}  finished" in run("jobs").stdout


def test_detach_without_the_service_says_so(run, photo_dir: Path) -> None:
    result = run("index", "--detach", str(photo_dir))
    assert result.exit_code == 1
    assert "--detach needs the mmsearch service" in result.stderr
    assert json.loads(run("jobs", "--json").stdout) == []
