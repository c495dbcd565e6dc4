"""What a client (often a model reading only the text) gets back from the tools."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_support import RecordingSearch, index_until_done, write_photos
from mcp_types import TextContent

from mcp_server import create_server
from mcp_server.results import index_summary
from mcp_server.server import INSTRUCTIONS
from mmsearch.config import Settings
from mmsearch.types import FailedFile, IndexReport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def library(tmp_path: Path) -> RecordingSearch:
    folder = tmp_path / "photos"
    write_photos(folder)
    return RecordingSearch(Settings(data_dir=tmp_path / "data", allowed_roots=[folder]))


@pytest.fixture
def server(library: RecordingSearch):
    return create_server(library.settings, search_factory=lambda settings: library)


def text_of(result: Any) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


async def test_search_text_shows_the_ids_rerank_takes(server, library, tmp_path) -> None:
    async with Client(server) as client:
        await index_until_done(client, {"paths": [str(tmp_path / "photos")]})
        result = await client.call_tool("multimodal_search", {"text": "a cat", "top_k": 2})
    shown = re.findall(r"id ([0-9a-f]+)", text_of(result))
    assert shown == [hit["id"] for hit in result.structured_content["hits"]]
    assert all(i in library.records for i in shown)


def test_index_summary_numbers_add_up_to_the_total() -> None:
    report = IndexReport(
        indexed=3, unchanged=2, duplicates=1, failed=[FailedFile(path="/x", reason="bad")], total=7
    )
    text = index_summary(report).splitlines()[0]
    numbers = [int(n) for n in re.findall(r"(\d+) (?:indexed|unchanged|duplicate|failed)", text)]
    assert sum(numbers) == 7, text
    assert text.endswith("of 7 files")


def test_one_of_a_kind_is_singular() -> None:
    text = index_summary(IndexReport(indexed=1, duplicates=1, total=2))
    assert "1 duplicate," in text and "1 duplicates" not in text
    assert index_summary(IndexReport(indexed=1, total=1)).endswith("of 1 file")


async def test_collection_stats_of_one_image_is_singular(server, tmp_path) -> None:
    photo = next((tmp_path / "photos").glob("*.jpg"))
    async with Client(server) as client:
        await index_until_done(client, {"paths": [str(photo)]})
        stats = await client.call_tool("collection_stats", {})
        removed = await client.call_tool("remove_images", {"paths": [str(photo)]})
    assert "1 image," in text_of(stats)
    assert text_of(removed).startswith("1 image removed")


async def test_invalid_arguments_are_one_clear_line(server) -> None:
    async with Client(server) as client:
        result = await client.call_tool("multimodal_search", {"text": "x", "top_k": -1})
    text = text_of(result)
    assert result.is_error
    assert (
        text
        == "multimodal_search: invalid arguments: top_k: Input should be greater than or equal to 1"
    )


async def test_invalid_arguments_do_not_echo_the_value(server) -> None:
    async with Client(server) as client:
        result = await client.call_tool("index_images", {"paths": "secret-value-123"})
    text = text_of(result)
    assert result.is_error and "\n" not in text and "pydantic" not in text
    assert "secret-value-123" not in text and text.startswith(
        "index_images: invalid arguments: paths"
    )


def test_instructions_are_one_paragraph() -> None:
    assert "\n" not in INSTRUCTIONS
    assert "index_images" in INSTRUCTIONS and "  " not in INSTRUCTIONS
