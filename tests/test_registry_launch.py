"""The package as the MCP registry presents it: the README line that proves ownership,
and the command line a registry client builds from server.json."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_transports import REPO_ROOT, server_env

TOOLS = {
    "index_images",
    "index_status",
    "cancel_index",
    "multimodal_search",
    "rerank",
    "collection_stats",
    "remove_images",
    "watch_folders",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def package() -> dict:
    server = json.loads((REPO_ROOT / "server.json").read_text())
    (pypi,) = [p for p in server["packages"] if p["registryType"] == "pypi"]
    return pypi


def test_readme_names_the_server_for_the_registry() -> None:
    """The registry verifies a PyPI package by ``mcp-name: <name>`` in its README."""
    name = json.loads((REPO_ROOT / "server.json").read_text())["name"]
    readme = (REPO_ROOT / "README.md").read_text()
    assert re.search(rf"^<!-- mcp-name: {re.escape(name)} -->$", readme, re.MULTILINE)


def _registry_command_line(package: dict) -> list[str]:
    """What a registry client runs: the console script named like the package, then the
    package arguments (positional values as they are, named ones as ``--flag value``)."""
    args: list[str] = []
    for argument in package.get("packageArguments", []):
        if argument["type"] == "named":
            args.append(argument["name"])
        args.append(argument["value"])
    script = Path(sys.executable).parent / package["identifier"]
    return [str(script), *args]


@pytest.mark.anyio
async def test_the_registry_command_line_starts_the_server(package, tmp_path: Path) -> None:
    command, *args = _registry_command_line(package)
    assert Path(command).is_file(), f"{command}: install the package (pip install -e .)"
    env = server_env(MMSEARCH_DATA_DIR=str(tmp_path / "data"), MMSEARCH_ALLOWED_ROOTS=str(tmp_path))
    params = StdioServerParameters(command=command, args=args, env=env, cwd=str(tmp_path))
    with anyio.fail_after(90):
        async with Client(params) as client:
            tools = (await client.list_tools()).tools
    assert {tool.name for tool in tools} == TOOLS
