"""File names that are not valid UTF-8 (any local user can create one in a shared folder)
and paths the operating system cannot take (NUL, lone surrogates): each is reported or
refused with a clear reason, every path that leaves the process is valid UTF-8, and the
stdio server keeps serving."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_support import index_until_done
from mcp_transports import server_env, stdio_client

from mmsearch.errors import MMSearchError
from mmsearch.library import ImageSearch

BAD_NAME = b"\xff\xfe-photo.jpg"


def _utf8(text: str) -> str:
    text.encode("utf-8")  # raises on a lone surrogate
    return text


def bad_named_copy(folder: Path, source: Path) -> Path:
    """A copy of ``source`` in ``folder`` under a name that is not valid UTF-8."""
    target = os.path.join(os.fsencode(folder), BAD_NAME)
    shutil.copyfile(os.fsencode(source), target)
    return Path(os.fsdecode(target))


def test_a_file_name_that_is_not_utf8_is_reported_as_failed(
    engine: ImageSearch, photo_dir: Path
) -> None:
    bad_named_copy(photo_dir, photo_dir / "coffee.jpg")
    report = engine.index([photo_dir])
    assert report.indexed == 5
    [failed] = report.failed
    assert "not valid UTF-8" in failed.reason
    assert _utf8(failed.path).endswith("\\xff\\xfe-photo.jpg")
    json.dumps(report.model_dump(), ensure_ascii=False).encode("utf-8")
    assert all(_utf8(h.path) for h in engine.search(text="a photo", top_k=9))


def test_an_error_about_a_bad_file_name_is_valid_utf8(engine: ImageSearch, photo_dir: Path) -> None:
    bad = bad_named_copy(photo_dir, photo_dir / "coffee.jpg")
    engine.index([photo_dir / "coffee.jpg"])
    for call in (
        lambda: engine.search(image=str(bad) + ".missing"),
        lambda: engine.remove(paths=[bad]),
    ):
        with pytest.raises(MMSearchError) as info:
            call()
        assert "\\xff" in _utf8(str(info.value))


def test_the_cli_prints_a_bad_file_name_escaped(
    settings: Any, photo_dir: Path, embedder_spec: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    bad_named_copy(photo_dir, photo_dir / "coffee.jpg")
    env = server_env(
        MMSEARCH_EMBED_MODEL=embedder_spec,
        MMSEARCH_DATA_DIR=str(tmp_path / "cli-data"),
        MMSEARCH_DEVICE="cpu",
        PYTHONIOENCODING="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "mmsearch.cli", "index", str(photo_dir), "--no-progress"],
        env=env,
        capture_output=True,
        timeout=300,
    )
    err = done.stderr.decode("utf-8")
    assert "Traceback" not in err, err
    assert "\\xff\\xfe-photo.jpg" in err and "not valid UTF-8" in err


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_stdio_server_reports_a_bad_file_name_and_keeps_serving(
    tmp_path: Path, photo_dir: Path, embedder_spec: str, anyio_backend: str
) -> None:
    root = photo_dir.resolve()
    bad_named_copy(root, root / "coffee.jpg")
    env = server_env(
        MMSEARCH_EMBED_MODEL=embedder_spec,
        MMSEARCH_DATA_DIR=str(tmp_path / "data"),
        MMSEARCH_ALLOWED_ROOTS=str(root),
        MMSEARCH_DEVICE="cpu",
    )
    with anyio.fail_after(240):
        async with stdio_client(env, tmp_path) as client:
            result = await index_until_done(client, {"paths": [str(root)]})
            stats = await client.call_tool("collection_stats", {})
    assert not result.is_error, result.content[0].text
    [failed] = result.structured_content["report"]["failed"]
    assert "not valid UTF-8" in failed["reason"]
    assert failed["path"].endswith("\\xff\\xfe-photo.jpg")
    assert not stats.is_error and stats.structured_content["count"] == 5
