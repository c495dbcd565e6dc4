"""What the CLI says and returns when there is nothing to do or something went wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mmsearch.cli import cli
from mmsearch.config import Settings
from mmsearch.store import MilvusStore


@pytest.fixture
def run(settings: Settings, embedder, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MMSEARCH_DATA_DIR", str(settings.data_dir))

    def invoke(*args: str):
        return CliRunner().invoke(
            cli, list(args), obj={"embedder_factory": lambda s: embedder}, catch_exceptions=False
        )

    return invoke


def test_indexing_a_missing_folder_exits_non_zero(run, tmp_path: Path) -> None:
    result = run("index", str(tmp_path / "nonexistent"))
    assert result.exit_code == 1
    assert "nonexistent" in result.stderr


def test_indexing_with_some_failures_exits_non_zero_after_indexing_the_rest(
    run, photo_dir: Path
) -> None:
    (photo_dir / "bad.png").write_bytes(b"not an image")
    result = run("index", str(photo_dir))
    assert result.exit_code == 1
    assert "indexed 5" in result.stdout and "failed 1" in result.stdout


def test_removing_a_folder_is_refused_clearly(run, photo_dir: Path) -> None:
    run("index", str(photo_dir))
    result = run("remove", str(photo_dir))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {photo_dir} is a folder")
    assert len(result.stderr.strip().splitlines()) == 1
    assert '"count": 5' in run("stats", "--json").stdout


def test_a_search_without_hits_says_so(run, photo_dir: Path) -> None:
    run("index", str(photo_dir))
    result = run("search", "--text", "x", "--filter-path-contains", "no-such-name")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "no images match" in result.stderr


def test_stats_before_the_first_index_says_what_to_run(run) -> None:
    result = run("stats")
    assert result.exit_code == 1
    assert "mmsearch index" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_failed_command_leaves_no_database_file_behind(run, settings: Settings) -> None:
    assert run("stats").exit_code == 1
    assert not (settings.data_dir / "mmsearch.db").exists()


def test_a_database_with_a_collection_is_kept(tmp_path: Path) -> None:
    uri = str(tmp_path / "kept.db")
    store = MilvusStore(uri)
    store.ensure_collection("images", "model", 4)
    store.close()
    assert Path(uri).is_file()
    reopened = MilvusStore(uri)
    assert reopened.list_collections() == ["images"]
    reopened.close()
