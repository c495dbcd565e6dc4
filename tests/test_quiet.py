"""A user's terminal shows mmsearch's own lines only: no warnings from dependencies on
the CLI or at server start, no Milvus Lite log files in the temp folder, and a quick,
clear failure when the model cannot be downloaded for lack of network."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mcp_transports import REPO_ROOT, server_env

from mmsearch.errors import ModelLoadError

DEPENDENCY_NOISE = re.compile(
    r"Warning|pkg_resources|mvccTs|GOAWAY|too_many_pings|Retrying in|Traceback"
)


@pytest.fixture
def quiet_env(tmp_path: Path, embedder_spec: str) -> dict[str, str]:
    """A private temp folder and data folder, and the tiny model (no download)."""
    (tmp_path / "tmp").mkdir()
    env = server_env(
        TMPDIR=str(tmp_path / "tmp"),
        MMSEARCH_DATA_DIR=str(tmp_path / "data"),
        MMSEARCH_EMBED_MODEL=embedder_spec,
        MMSEARCH_ALLOWED_ROOTS=str(tmp_path),
    )
    env.pop("GLOG_log_dir", None)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mmsearch.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _milvus_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("milvus*"))


def test_cli_index_and_prune_print_no_dependency_warnings(
    quiet_env: dict[str, str], photo_dir: Path, tmp_path: Path
) -> None:
    first = _cli(quiet_env, "index", str(photo_dir))
    assert first.returncode == 0, first.stderr
    next(photo_dir.iterdir()).unlink()
    pruned = _cli(quiet_env, "index", "--prune", str(photo_dir))
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 1" in pruned.stdout
    for result in (first, pruned):
        assert not DEPENDENCY_NOISE.search(result.stderr), result.stderr
    assert _milvus_files(tmp_path / "tmp") == []
    assert _milvus_files(tmp_path / "data" / "logs"), "the server's logs go to the data folder"


def _rpc(process: subprocess.Popen[str], message: dict, *, answer: bool = True) -> dict | None:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(message) + "\n")
    process.stdin.flush()
    if not answer:
        return None
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()))
    reader.start()
    reader.join(timeout=120)
    assert line and line[0], "the server did not answer"
    return json.loads(line[0])


def test_server_start_prints_no_dependency_warnings(
    quiet_env: dict[str, str], tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_server"],
        env=quiet_env,
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    errors: list[str] = []
    drain = threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True)
    drain.start()
    try:
        _rpc(
            process,
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "test", "version": "0"},
                },
            },
        )
        _rpc(process, {"jsonrpc": "2.0", "method": "notifications/initialized"}, answer=False)
        stats = _rpc(
            process,
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "collection_stats", "arguments": {}},
            },
        )
        assert stats is not None and stats["id"] == 2  # the database was opened
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    drain.join(timeout=10)
    stderr = "".join(errors)
    assert not DEPENDENCY_NOISE.search(stderr), stderr
    assert _milvus_files(tmp_path / "tmp") == []


def test_no_network_fails_in_seconds_with_the_usual_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed local port stands for a machine without network (nothing leaves it)."""
    from huggingface_hub import constants

    from mmsearch.models.visual_bge.checkpoint import VARIANTS, download_files

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="could not download Visualized BGE") as caught:
        download_files(VARIANTS["base_en_v1.5"], cache_dir=tmp_path / "hub")
    assert time.monotonic() - started < 10
    assert "MMSEARCH_EMBED_MODEL" in str(caught.value)
    assert "no network" in str(caught.value)


def test_a_cached_model_is_used_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, the cache answers at once instead of after the hub's retries."""
    from huggingface_hub import constants

    from mmsearch.models.visual_bge import checkpoint as ckpt

    variant = ckpt.VARIANTS["base_en_v1.5"]
    asked: list[bool] = []

    def from_cache(*args, local_files_only: bool = False, **kwargs) -> str:
        asked.append(local_files_only)
        folder = tmp_path / "cached"
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text("{}")
        return str(folder / variant.checkpoint_file) if args[1:] else str(folder)

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", from_cache)
    monkeypatch.setattr("huggingface_hub.snapshot_download", from_cache)
    files = ckpt.download_files(variant, cache_dir=tmp_path / "hub")
    assert asked == [True, True]
    assert files.text_dir == tmp_path / "cached"


def test_server_logs_go_beside_the_database_without_leaking_into_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Child processes started later (other servers, tools) do not inherit the folder."""
    import os

    from mmsearch.store import MilvusStore

    monkeypatch.delenv("GLOG_log_dir", raising=False)
    store = MilvusStore(str(tmp_path / "db" / "x.db"), log_dir=tmp_path / "logs")
    try:
        assert "GLOG_log_dir" not in os.environ
    finally:
        store.close()
    assert _milvus_files(tmp_path / "logs")
