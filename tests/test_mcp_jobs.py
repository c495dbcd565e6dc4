"""Index jobs through MCP over the real library: a client whose calls are capped indexes
a folder over several calls; cancelling a call leaves the job running, cancel_index
stops it; identical calls join one job, different folders queue."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from jobs_support import GatedEmbedder, write_images
from mcp import Client

from mcp_server import create_server
from mmsearch.config import Settings
from mmsearch.library import ImageSearch

pytestmark = pytest.mark.anyio

CAP_S = 5.0
"""Every call must answer within this, as a client with a request timeout demands."""
WAIT_S = 0.5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def gated(shared_embedder: Any) -> GatedEmbedder:
    return GatedEmbedder(shared_embedder)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = (tmp_path / "photos").resolve()
    write_images(folder / "a", 6, seed=1)
    write_images(folder / "b", 2, seed=2)
    return folder


@pytest.fixture
def server(tmp_path: Path, root: Path, gated: GatedEmbedder) -> Iterator[Any]:
    settings = Settings(
        data_dir=tmp_path / "data", allowed_roots=[root], batch_size=2, decode_workers=2
    )
    server = create_server(
        settings, search_factory=lambda s: ImageSearch(s, embedder_factory=lambda _: gated)
    )
    yield server
    gated.open()
    server.shared_search.close()


async def capped(client: Client, tool: str, arguments: dict[str, Any]) -> Any:
    started = time.monotonic()
    with anyio.fail_after(CAP_S):
        result = await client.call_tool(tool, arguments)
    assert time.monotonic() - started < CAP_S
    assert not result.is_error, result.content
    return result.structured_content


async def in_thread(fn: Any) -> Any:
    return await anyio.to_thread.run_sync(fn)


async def test_a_capped_client_indexes_a_folder_over_several_calls(
    server: Any, root: Path, gated: GatedEmbedder
) -> None:
    args = {"paths": [str(root / "a")], "wait_s": WAIT_S}
    async with Client(server) as client:
        first = await capped(client, "index_images", args)
        assert first["state"] == "running" and first["report"] is None
        ids, states = {first["id"]}, []
        for _ in range(3):  # one batch of two images per call
            await in_thread(gated.reached)
            gated.open(1)
            again = await capped(client, "index_images", args)
            ids.add(again["id"])
            states.append(again["state"])
            if again["state"] == "finished":
                break
        status = await capped(client, "index_status", {"job_id": first["id"]})
        stats = await capped(client, "collection_stats", {})
    assert ids == {first["id"]}  # every call joined the one job
    assert states[-1] == "finished" and "running" in states
    [job] = status["jobs"]
    assert job["state"] == "finished"
    assert (job["done"], job["total"], job["indexed"]) == (6, 6, 6)
    assert job["report"]["indexed"] == 6
    assert stats["count"] == 6


async def test_cancelling_the_call_does_not_stop_the_job(
    server: Any, root: Path, gated: GatedEmbedder
) -> None:
    async with Client(server) as client:
        with anyio.CancelScope() as scope:

            async def cancel_on_first_progress(*_: Any) -> None:
                scope.cancel()

            await client.call_tool(
                "index_images",
                {"paths": [str(root / "a")], "wait_s": 30},
                progress_callback=cancel_on_first_progress,
            )
        assert scope.cancelled_caught
        [job] = (await capped(client, "index_status", {}))["jobs"]
        assert job["state"] == "running"
        gated.open()
        done = await capped(client, "index_images", {"paths": [str(root / "a")], "wait_s": 4})
    assert done["id"] == job["id"] and done["state"] == "finished"
    assert done["report"]["indexed"] == 6


async def test_cancel_index_stops_the_job_and_indexing_again_resumes(
    server: Any, root: Path, gated: GatedEmbedder
) -> None:
    args = {"paths": [str(root / "a")], "wait_s": 0}
    async with Client(server) as client:
        job = await capped(client, "index_images", args)
        await in_thread(gated.reached)
        asked = await capped(client, "cancel_index", {"job_id": job["id"], "wait_s": 0})
        assert asked["state"] == "running"  # it stops after the batch it holds
        gated.open()
        stopped = await capped(client, "cancel_index", {"job_id": job["id"], "wait_s": 4})
        resumed = await capped(client, "index_images", {**args, "wait_s": 4})
    assert stopped["state"] == "cancelled" and stopped["report"]["indexed"] == 2
    assert resumed["id"] != job["id"] and resumed["state"] == "finished"
    assert (resumed["report"]["unchanged"], resumed["report"]["indexed"]) == (2, 4)


async def test_jobs_for_two_folders_queue(server: Any, root: Path, gated: GatedEmbedder) -> None:
    async with Client(server) as client:
        a = await capped(client, "index_images", {"paths": [str(root / "a")], "wait_s": 0})
        b = await capped(client, "index_images", {"paths": [str(root / "b")], "wait_s": 0})
        assert (a["state"], b["state"]) == ("running", "queued")
        queued = await client.call_tool("index_status", {"job_id": b["id"]})
        assert "starts when" in queued.content[0].text
        gated.open()
        b_done = await capped(client, "index_images", {"paths": [str(root / "b")], "wait_s": 4})
        listed = await capped(client, "index_status", {})
    assert b_done["id"] == b["id"] and b_done["state"] == "finished"
    assert [j["id"] for j in listed["jobs"]] == [b["id"], a["id"]]
    assert all(j["state"] == "finished" for j in listed["jobs"])


async def test_unknown_job_ids_are_tool_errors(server: Any) -> None:
    async with Client(server) as client:
        status = await client.call_tool("index_status", {"job_id": "nope"})
        cancel = await client.call_tool("cancel_index", {"job_id": "nope"})
    assert status.is_error and "JobNotFoundError" in status.content[0].text
    assert cancel.is_error and "no index job" in cancel.content[0].text


async def test_wait_s_is_capped_under_a_minute(server: Any, root: Path) -> None:
    async with Client(server) as client:
        result = await client.call_tool("index_images", {"paths": [str(root)], "wait_s": 120})
    assert result.is_error and "wait_s" in result.content[0].text


async def test_prune_removes_gone_files_only_under_the_given_folder(
    server: Any, root: Path, gated: GatedEmbedder
) -> None:
    gated.open()
    async with Client(server) as client:
        first = await capped(client, "index_images", {"paths": [str(root)], "wait_s": 4})
        assert first["report"]["indexed"] == 8
        (root / "a" / "img0000.png").unlink()
        (root / "b" / "img0000.png").unlink()
        args = {"paths": [str(root / "a")], "wait_s": 4}
        plain = await capped(client, "index_images", args)
        pruned = await capped(client, "index_images", {**args, "prune": True})
        stats = await capped(client, "collection_stats", {})
    assert plain["report"]["removed"] == 0 and plain["prune"] is False
    assert pruned["id"] != plain["id"] and pruned["prune"] is True
    assert pruned["report"]["removed"] == 1
    assert stats["count"] == 7  # b's gone file was not under the pruned folder


async def test_extensions_choose_the_files_of_a_folder(
    server: Any, root: Path, gated: GatedEmbedder
) -> None:
    gated.open()
    (root / "a" / "img0000.png").rename(root / "a" / "copy.JPG")
    async with Client(server) as client:
        args = {"paths": [str(root / "a")], "wait_s": 4}
        only_jpg = await capped(client, "index_images", {**args, "extensions": [".jpg"]})
        empty = await client.call_tool("index_images", {**args, "extensions": [" , "]})
        stats = await capped(client, "collection_stats", {})
    assert only_jpg["extensions"] == ["jpg"]
    assert only_jpg["report"]["indexed"] == 1 and only_jpg["report"]["total"] == 1
    assert empty.is_error and "extensions list is empty" in empty.content[0].text
    assert stats["count"] == 1


async def test_prune_outside_the_allowed_roots_is_refused(
    server: Any, root: Path, tmp_path: Path, gated: GatedEmbedder
) -> None:
    gated.open()
    outside = tmp_path / "elsewhere"
    write_images(outside, 1, seed=3)
    async with Client(server) as client:
        for path in (outside, root / ".." / "elsewhere"):
            refused = await client.call_tool(
                "index_images", {"paths": [str(path)], "prune": True, "wait_s": 4}
            )
            assert refused.is_error
            assert "outside the allowed roots" in refused.content[0].text
        listed = await capped(client, "index_status", {})
    assert listed["jobs"] == []
