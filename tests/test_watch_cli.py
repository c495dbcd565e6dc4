"""``mmsearch watch add|remove|list``: the watch list from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmsearch.cli import cli
from mmsearch.watchlist import WatchList


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MMSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MMSEARCH_WATCH", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, list(args), obj={})


def test_add_list_remove(run, tmp_path: Path) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    added = run("watch", "add", str(folder))
    assert added.exit_code == 0, added.output
    assert f"watching {folder.resolve()}" in added.stdout
    assert WatchList(tmp_path / "data").stored() == [folder.resolve()]
    listed = run("watch", "list", "--json")
    assert json.loads(listed.stdout) == [
        {"path": str(folder.resolve()), "source": "list", "exists": True}
    ]
    removed = run("watch", "remove", str(folder))
    assert removed.exit_code == 0 and WatchList(tmp_path / "data").stored() == []


def test_a_missing_folder_is_one_clear_error(run, tmp_path: Path) -> None:
    result = run("watch", "add", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'nope'}: no such folder"


def test_folders_of_the_setting_are_listed(run, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MMSEARCH_WATCH", str(tmp_path))
    listed = run("watch", "list")
    assert listed.stdout.strip() == f"{tmp_path.resolve()}  (MMSEARCH_WATCH)"
    refused = run("watch", "remove", str(tmp_path))
    assert refused.exit_code == 1 and "MMSEARCH_WATCH" in refused.stderr


def test_watch_commands_load_no_model_code(tmp_path: Path) -> None:
    probe = (
        "import sys; from mmsearch.cli import main\n"
        "try:\n    main(['watch', 'list'])\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('torch', 'pymilvus', 'numpy') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**_env(), "MMSEARCH_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.splitlines()[-1] == "[]"


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
