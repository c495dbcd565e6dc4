"""Bad arguments through the MCP tools, over the real library: every one comes back as
a tool error naming the problem (never a hang, never a dead server), and the records
already stored are untouched (count and vectors)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from security_support import assert_same, encode, pattern, png_bomb, snapshot

from mcp_server import create_server
from mmsearch.config import Settings
from mmsearch.library import ImageSearch

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def root(tmp_path: Path, photo_dir: Path) -> Path:
    return photo_dir.resolve()


@pytest.fixture
def server(tmp_path: Path, root: Path, shared_embedder: Any):
    settings = Settings(
        data_dir=tmp_path / "data",
        allowed_roots=[root],
        batch_size=4,
        decode_workers=2,
        max_rerank_candidates=3,
    )
    server = create_server(
        settings, lambda s: ImageSearch(s, embedder_factory=lambda _: shared_embedder)
    )
    yield server
    server.shared_search.close()


def store_of(server):
    lib = server.shared_search.get()
    return lib.store, lib.settings.collection


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> Any:
    with anyio.fail_after(60):
        return await client.call_tool(tool, arguments)


def error_text(result: Any) -> str:
    assert result.is_error, result
    return result.content[0].text


async def test_paths_outside_the_roots_are_refused(server, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "out-link").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root / "loop")
    async with Client(server) as client:
        await call(client, "index_images", {"paths": [str(root)]})
        before = snapshot(*store_of(server))
        for path, message in [
            ("/etc", "outside the allowed roots"),
            (str(root / ".." / "outside"), "outside the allowed roots"),
            (str(root / "out-link"), "outside the allowed roots"),
            (str(root / "loop"), "cannot be resolved"),
            ("", "empty path"),
            ("a\x00b", "NUL"),
            ("~nosuchuser/x", "outside|cannot be resolved"),
            ("x" * 10_000, "outside|cannot be resolved"),
        ]:
            result = await call(client, "index_images", {"paths": [path]})
            text = error_text(result)
            assert any(m in text for m in message.split("|")), text
        for args in (
            {"paths": []},
            {"paths": "not a list"},
            {"paths": [3]},
            {"paths": [str(root)] * 1001},
        ):
            error_text(await call(client, "index_images", args))
        missing = await call(client, "index_images", {"paths": [str(root / "gone.jpg")]})
        assert (
            missing.structured_content["report"]["failed"][0]["reason"]
            == "no such file or directory"
        )
        stats = await call(client, "collection_stats", {})
    assert stats.structured_content["count"] == 5
    assert_same(before, snapshot(*store_of(server)))


async def test_folder_links_out_of_the_roots_are_reported_not_read(
    server, root: Path, tmp_path: Path, photo_dir: Path
) -> None:
    secret = tmp_path / "secret.png"
    pattern(seed=9).save(secret)
    (root / "link.png").symlink_to(secret)
    async with Client(server) as client:
        report = await call(client, "index_images", {"paths": [str(root)]})
    failed = {
        Path(f["path"]).name: f["reason"] for f in report.structured_content["report"]["failed"]
    }
    assert "outside the allowed roots" in failed["link.png"]
    stored = {path for path, _ in snapshot(*store_of(server)).values()}
    assert str(root / "link.png") not in stored and len(stored) == 5


async def test_bad_search_arguments_are_tool_errors(server, root: Path) -> None:
    fifo = root / "pipe.png"
    os.mkfifo(fifo)
    not_image = base64.b64encode(b"plain text, not an image" * 4).decode()
    async with Client(server) as client:
        await call(client, "index_images", {"paths": [str(root)]})
        before = snapshot(*store_of(server))
        cases: list[tuple[dict[str, Any], str]] = [
            ({"text": "cat", "top_k": 10**9}, "top_k"),
            ({"text": "cat", "top_k": 0}, "top_k"),
            ({"text": "cat", "top_k": "many"}, "top_k"),
            ({}, "give text, image, or both"),
            ({"text": "   "}, "give text, image, or both"),
            ({"text": "x" * 200_000}, "max_query_chars"),
            ({"image": "not base64 and not a file"}, "outside the allowed roots"),
            ({"image": str(root / "nothing.png")}, "not a file"),
            ({"image": str(fifo)}, "not a file"),
            ({"image": "data:image/png;base64,@@@@"}, "not valid base64"),
            ({"image": "data:image/png,rawbytes"}, "base64 encoded"),
            ({"image": f"data:image/png;base64,{not_image}"}, "not an image"),
            ({"image": base64.b64encode(png_bomb()).decode()}, "bomb"),
            ({"image": "A" * 5_000_000}, "neither a path"),
            ({"text": "cat", "filter": "path == '/etc/passwd'"}, "filter"),
            ({"text": "cat", "filter": {"path_glob": 5}}, "path_glob"),
            ({"text": "cat", "filter": {"mtime_min": 5, "mtime_max": 1}}, "mtime_min"),
            ({"text": "cat", "filter": {"metadata": {"k": {"nested": 1}}}}, "metadata"),
            ({"text": "cat", "collection": "nosuch"}, "CollectionNotFoundError"),
            ({"text": "cat", "collection": "../x"}, "invalid collection name"),
        ]
        for args, message in cases:
            text = error_text(await call(client, "multimodal_search", args))
            assert message in text, (args if len(str(args)) < 200 else list(args), text)
        good = await call(
            client,
            "multimodal_search",
            {"image": base64.b64encode(encode(pattern(), "PNG")).decode(), "top_k": 2},
        )
        stats = await call(client, "collection_stats", {})
    assert not good.is_error and len(good.structured_content["hits"]) == 2
    assert stats.structured_content["count"] == 5
    assert_same(before, snapshot(*store_of(server)))


async def test_bad_rerank_and_remove_arguments_are_tool_errors(server, root: Path) -> None:
    async with Client(server) as client:
        await call(client, "index_images", {"paths": [str(root)]})
        before = snapshot(*store_of(server))
        ids = list(before)
        too_many = await call(
            client, "rerank", {"candidate_ids": [f"{i:064x}" for i in range(101)], "text": "a"}
        )
        over_setting = await call(client, "rerank", {"candidate_ids": ids[:4], "text": "a"})
        unknown = await call(client, "rerank", {"candidate_ids": ["f" * 64], "text": "a"})
        bad_id = await call(client, "remove_images", {"ids": ["' or true"]})
        nothing = await call(client, "remove_images", {})
        outside = await call(client, "remove_images", {"paths": ["/etc/passwd"]})
    assert "candidate_ids" in error_text(too_many)
    assert "max_rerank_candidates" in error_text(over_setting)
    assert "unknown candidate ids" in error_text(unknown)
    assert "invalid image id" in error_text(bad_id)
    assert "give ids, paths" in error_text(nothing)
    assert "outside the allowed roots" in error_text(outside)
    assert_same(before, snapshot(*store_of(server)))


async def test_thumbnail_of_a_file_replaced_by_a_fifo_or_a_bomb_does_not_fail_the_search(
    server, root: Path
) -> None:
    async with Client(server) as client:
        await call(client, "index_images", {"paths": [str(root)]})
        (root / "coffee.jpg").unlink()
        os.mkfifo(root / "coffee.jpg")
        (root / "camera.png").write_bytes(png_bomb(12_000, 12_000))
        result = await call(
            client, "multimodal_search", {"text": "x", "top_k": 5, "include_thumbnails": True}
        )
    assert not result.is_error
    notes = [b.text for b in result.content if getattr(b, "type", "") == "text"]
    assert any("no thumbnail" in n and "regular file" in n for n in notes)
    assert any("no thumbnail" in n and "pixel limit" in n for n in notes)
