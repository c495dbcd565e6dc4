"""Small things a new user meets: the bearer scheme's case, the download command named
in the reranker's offline error, and the rerank command's error line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from mcp_server.http import BearerTokenMiddleware
from mmsearch.cli import cli
from mmsearch.errors import ModelLoadError

TOKEN = "s3cret-token"


def _status(authorization: bytes | None) -> int:
    """The status the middleware answers a request carrying ``authorization`` with."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    headers = [] if authorization is None else [(b"authorization", authorization)]
    middleware = BearerTokenMiddleware(app, TOKEN)
    anyio.run(middleware, {"type": "http", "headers": headers}, receive, send)
    return sent[0]["status"]


@pytest.mark.parametrize("scheme", [b"Bearer", b"bearer", b"BEARER", b"bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(scheme: bytes) -> None:
    assert _status(scheme + b" " + TOKEN.encode()) == 200


@pytest.mark.parametrize(
    "value",
    [None, b"bearer", b"bearer ", b"Basic " + TOKEN.encode(), TOKEN.encode(), b"bearer x"],
)
def test_anything_else_is_still_refused(value: bytes | None) -> None:
    assert _status(value) == 401


def test_the_token_itself_stays_case_sensitive() -> None:
    assert _status(b"Bearer " + TOKEN.upper().encode()) == 401


def test_offline_reranker_error_names_the_hf_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from mmsearch.models.phi3v.checkpoint import DEFAULT_MODEL, resolve_checkpoint_dir

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ModelLoadError) as caught:
        resolve_checkpoint_dir(DEFAULT_MODEL)
    assert f"hf download {DEFAULT_MODEL}" in str(caught.value)
    assert "huggingface-cli" not in str(caught.value)


def test_readme_names_the_installed_download_command() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "huggingface-cli" not in readme
    assert "hf download" in readme


def test_rerank_errors_are_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMSEARCH_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(
        cli, ["rerank", "--text", "a cat", "-c", str(tmp_path / "missing.jpg")]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
