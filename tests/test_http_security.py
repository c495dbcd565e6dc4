"""The streamable HTTP transport against raw HTTP requests: loopback bind, Host and Origin
checks (DNS rebinding, cross-site pages), bearer token, request size limit."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mcp_transports import REPO_ROOT, http_server, server_env

pytestmark = pytest.mark.slow

TOKEN = "s3cret-token-for-tests"
BODY_LIMIT = 64 * 1024
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw-http-test", "version": "1"},
    },
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def open_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("http-open")
    with http_server(server_env(MMSEARCH_DATA_DIR=str(tmp / "data")), tmp) as url:
        yield url


@pytest.fixture(scope="module")
def token_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("http-token")
    env = server_env(
        MMSEARCH_DATA_DIR=str(tmp / "data"),
        MMSEARCH_HTTP_TOKEN=TOKEN,
        MMSEARCH_HTTP_MAX_BODY_BYTES=str(BODY_LIMIT),
        MMSEARCH_HTTP_ALLOWED_ORIGINS="https://app.example.org",
    )
    with http_server(env, tmp) as url:
        yield url


def post(url: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> int:
    """POST ``body`` (default: an initialize request) and return the status code."""
    parsed = urlparse(url)
    content = body if body is not None else json.dumps(INITIALIZE).encode()
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        connection.request("POST", parsed.path, content, {**HEADERS, **(headers or {})})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_binds_to_loopback_by_default(open_url: str) -> None:
    assert urlparse(open_url).hostname == "127.0.0.1"


def test_a_plain_local_request_is_served(open_url: str) -> None:
    assert post(open_url) == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example"])
def test_foreign_host_header_is_refused_against_dns_rebinding(open_url: str, host: str) -> None:
    assert post(open_url, {"Host": host}) == 421


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "https://localhost.evil.io"])
def test_foreign_origin_is_refused(open_url: str, origin: str) -> None:
    assert post(open_url, {"Origin": origin}) == 403


def test_local_origin_is_accepted(open_url: str) -> None:
    port = urlparse(open_url).port
    assert post(open_url, {"Origin": f"http://localhost:{port}"}) == 200


def test_missing_token_is_401(token_url: str) -> None:
    parsed = urlparse(token_url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    connection.request("POST", parsed.path, json.dumps(INITIALIZE), HEADERS)
    response = connection.getresponse()
    connection.close()
    assert response.status == 401
    assert response.getheader("www-authenticate") == "Bearer"


@pytest.mark.parametrize(
    "value", [f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", TOKEN, f"Basic {TOKEN}", "Bearer "]
)
def test_wrong_token_is_401(token_url: str, value: str) -> None:
    assert post(token_url, {"Authorization": value}) == 401


def test_right_token_is_served(token_url: str) -> None:
    assert post(token_url, {"Authorization": f"Bearer {TOKEN}"}) == 200


def test_configured_origin_is_accepted_and_others_still_refused(token_url: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert post(token_url, {**auth, "Origin": "https://app.example.org"}) == 200
    assert post(token_url, {**auth, "Origin": "https://other.example.org"}) == 403


def test_body_over_the_limit_is_413(token_url: str) -> None:
    body = json.dumps({**INITIALIZE, "pad": "x" * (BODY_LIMIT + 10)}).encode()
    assert post(token_url, {"Authorization": f"Bearer {TOKEN}"}, body) == 413


def test_declared_huge_body_is_refused_before_it_is_sent(token_url: str) -> None:
    """Only the headers go out: the 413 must come back without the server waiting for
    (or reading) the gigabyte it was promised."""
    parsed = urlparse(token_url)
    request = (
        f"POST {parsed.path} HTTP/1.1\r\nHost: 127.0.0.1:{parsed.port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        "Accept: application/json, text/event-stream\r\n"
        f"Content-Length: {10**9}\r\n\r\n"
    ).encode()
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
        sock.sendall(request)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert b" 413 " in status_line


def test_unauthenticated_huge_body_is_refused_without_reading_it(token_url: str) -> None:
    parsed = urlparse(token_url)
    request = (
        f"POST {parsed.path} HTTP/1.1\r\nHost: 127.0.0.1:{parsed.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {10**9}\r\n\r\n"
    ).encode()
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
        sock.sendall(request)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert b" 401 " in status_line


def test_non_loopback_bind_without_a_token_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_server", "--transport", "http", "--host", "0.0.0.0"],
        env=server_env(MMSEARCH_DATA_DIR=str(tmp_path)),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "MMSEARCH_HTTP_TOKEN" in done.stderr
