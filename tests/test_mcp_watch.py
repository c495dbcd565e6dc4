"""The watch_folders tool: the same watch list as ``mmsearch watch``, inside the roots."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from mcp_support import RecordingSearch, write_photos
from mcp_types import ListRootsResult, Root
from PIL import Image
from test_mcp_server import call, text_of

from mcp_server import create_server
from mcp_server.watch_tools import start_server_watching
from mmsearch.config import Settings
from mmsearch.watchlist import WatchList

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    write_photos(folder)
    return folder.resolve()


@pytest.fixture
def library(tmp_path: Path, photos: Path) -> RecordingSearch:
    return RecordingSearch(
        Settings(data_dir=tmp_path / "data", allowed_roots=[photos], watch_debounce_s=0.2)
    )


@pytest.fixture
def server(library: RecordingSearch):
    return create_server(library.settings, search_factory=lambda settings: library)


def stored(library: RecordingSearch) -> list[Path]:
    return WatchList(library.settings.data_dir).stored()


async def test_a_folder_inside_the_roots_is_added_listed_and_removed(
    server, library, photos
) -> None:
    added = await call(server, "watch_folders", {"action": "add", "folder": str(photos)})
    assert not added.is_error, text_of(added)
    assert stored(library) == [photos]
    listed = await call(server, "watch_folders", {"action": "list"})
    assert listed.structured_content == {
        "folders": [{"path": str(photos), "source": "list", "exists": True}],
        "hidden": 0,
    }
    removed = await call(server, "watch_folders", {"action": "remove", "folder": str(photos)})
    assert not removed.is_error and stored(library) == []


async def test_a_folder_outside_the_roots_is_refused(server, library, tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    result = await call(server, "watch_folders", {"action": "add", "folder": str(outside)})
    assert result.is_error and "outside the allowed roots" in text_of(result)
    dotdot = await call(
        server, "watch_folders", {"action": "add", "folder": f"{tmp_path}/photos/.."}
    )
    assert dotdot.is_error and "AccessDeniedError" in text_of(dotdot)
    assert stored(library) == []


async def test_client_roots_narrow_what_may_be_watched(server, library, photos) -> None:
    inner = photos / "inner"
    inner.mkdir()

    async def roots(_ctx) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=inner.as_uri())])

    args = {"action": "add", "folder": str(photos)}
    refused = await call(server, "watch_folders", args, list_roots_callback=roots)
    assert refused.is_error
    args["folder"] = str(inner)
    assert not (await call(server, "watch_folders", args, list_roots_callback=roots)).is_error
    assert stored(library) == [inner]


async def test_folders_outside_the_roots_are_neither_shown_nor_removable(
    server, library, tmp_path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    WatchList(library.settings.data_dir).add(elsewhere)  # added from the command line
    listed = await call(server, "watch_folders", {"action": "list"})
    assert listed.structured_content == {"folders": [], "hidden": 1}
    assert str(elsewhere) not in text_of(listed)
    refused = await call(server, "watch_folders", {"action": "remove", "folder": str(elsewhere)})
    assert refused.is_error and stored(library) == [elsewhere.resolve()]


async def test_bad_requests_get_a_clear_error(server, photos) -> None:
    no_folder = await call(server, "watch_folders", {"action": "add"})
    assert no_folder.is_error and "give the folder to add" in text_of(no_folder)
    missing = await call(
        server, "watch_folders", {"action": "add", "folder": str(photos / "missing")}
    )
    assert missing.is_error and "WatchError" in text_of(missing)
    assert "no such folder" in text_of(missing)
    not_watched = await call(server, "watch_folders", {"action": "remove", "folder": str(photos)})
    assert not_watched.is_error and "is not watched" in text_of(not_watched)


async def test_the_server_process_syncs_a_folder_added_over_mcp(server, library, photos) -> None:
    watcher = start_server_watching(server, library.settings)
    try:
        assert watcher.folders == []
        await call(server, "watch_folders", {"action": "add", "folder": str(photos)})
        deadline = time.monotonic() + 60
        while not any(c[0] == "index" and c[1]["paths"] == [photos] for c in library.calls):
            assert time.monotonic() < deadline, "the added folder was never synced"
            await anyio.sleep(0.1)
        assert watcher.folders == [photos]
    finally:
        watcher.stop()


@pytest.mark.slow
async def test_the_stdio_server_keeps_a_watched_folder_in_sync(tmp_path, photos) -> None:
    """The real server process: a folder watched before it starts is caught up, and a
    file added while it runs is found by search within a bounded time."""
    from mcp_transports import server_env, stdio_client

    from mmsearch.testing import tiny

    model = Path(tiny.write_tiny_visual_bge(tmp_path / "model") or tmp_path / "model")
    data = tmp_path / "data"
    WatchList(data).add(photos)
    env = server_env(
        MMSEARCH_EMBED_MODEL=str(model),
        MMSEARCH_DATA_DIR=str(data),
        MMSEARCH_ALLOWED_ROOTS=str(photos),
        MMSEARCH_DEVICE="cpu",
        MMSEARCH_WATCH_DEBOUNCE_S="0.3",
    )
    new = photos / "later" / "new.png"
    async with stdio_client(env, tmp_path) as client:

        async def top_hit(image: Path) -> str | None:
            result = await client.call_tool("multimodal_search", {"image": str(image), "top_k": 1})
            hits = [] if result.is_error else result.structured_content["hits"]
            return hits[0]["path"] if hits else None

        deadline = time.monotonic() + 120
        first = photos / "astronaut.jpg"
        while await top_hit(first) != str(first):
            assert time.monotonic() < deadline, "the watched folder was not caught up"
            await anyio.sleep(0.2)
        new.parent.mkdir()
        Image.new("RGB", (64, 48), (200, 30, 90)).save(new)
        while await top_hit(new) != str(new):
            assert time.monotonic() < deadline, "the added file was not indexed"
            await anyio.sleep(0.2)
