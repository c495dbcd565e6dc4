"""The MCP tools over the SDK's in-process client, with the library replaced by
``RecordingSearch`` so each test looks at one behaviour of the adapter."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_support import RecordingSearch, write_photos
from mcp_types import ImageContent, ListRootsResult, Root, TextContent
from PIL import Image

from mcp_server import create_server
from mmsearch.config import Settings
from mmsearch.errors import ModelLoadError

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
    return RecordingSearch(Settings(data_dir=tmp_path / "data", allowed_roots=[photos]))


@pytest.fixture
def server(library: RecordingSearch):
    server = create_server(library.settings, search_factory=lambda settings: library)
    yield server
    server.shared_search.close()


def text_of(result) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def call(server, tool: str, arguments: dict[str, Any], **client_kwargs):
    async with Client(server, **client_kwargs) as client:
        return await client.call_tool(tool, arguments)


async def test_tools_are_listed_with_schemas_and_annotations(server) -> None:
    async with Client(server) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {
        "index_images",
        "multimodal_search",
        "rerank",
        "collection_stats",
        "remove_images",
        "watch_folders",
        "index_status",
        "cancel_index",
    }
    for tool in tools.values():
        assert tool.output_schema is not None and tool.description
        assert "roots" not in tool.input_schema["properties"]
    assert tools["index_images"].input_schema["required"] == ["paths"]
    assert "hits" in tools["multimodal_search"].output_schema["properties"]
    assert tools["multimodal_search"].annotations.read_only_hint is True
    assert tools["remove_images"].annotations.destructive_hint is True
    assert tools["index_images"].annotations.destructive_hint is False
    assert all(tool.annotations.open_world_hint is False for tool in tools.values())


async def test_creating_the_server_does_not_open_the_library(library, photos) -> None:
    opened = []
    server = create_server(library.settings, search_factory=lambda s: opened.append(s) or library)
    async with Client(server) as client:
        await client.list_tools()
    assert opened == []


async def test_index_reports_counts_as_structured_content(server, photos) -> None:
    result = await call(server, "index_images", {"paths": [str(photos)]})
    assert not result.is_error
    assert result.structured_content["indexed"] == 4
    assert result.structured_content["total"] == 4
    assert "4 indexed" in text_of(result)


async def test_index_passes_metadata_and_recursion(server, library, photos) -> None:
    await call(
        server,
        "index_images",
        {"paths": [str(photos)], "recursive": False, "metadata": {"album": "x"}},
    )
    assert library.calls[-1] == (
        "index",
        {"paths": [photos], "recursive": False, "metadata": {"album": "x"}, "captions": None},
    )


async def test_index_passes_the_captions_request(server, library, photos) -> None:
    await call(server, "index_images", {"paths": [str(photos)], "captions": True})
    assert library.calls[-1][1]["captions"] is True


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_index_sends_progress_notifications(server, photos, mode) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(server, mode=mode) as client:
        await client.call_tool(
            "index_images", {"paths": [str(photos)]}, progress_callback=on_progress
        )
    assert [(p, t) for p, t, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert seen[0][2].endswith(".jpg")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_cancelling_the_call_leaves_the_job_running_and_cancel_index_stops_it(
    server, library, photos, mode
) -> None:
    library.block_index_until_cancelled = True
    async with Client(server, mode=mode) as client:
        with anyio.CancelScope() as scope:

            async def cancel_on_first_progress(*_: Any) -> None:
                scope.cancel()

            await client.call_tool(
                "index_images", {"paths": [str(photos)]}, progress_callback=cancel_on_first_progress
            )
        listed = await client.call_tool("index_status", {})
        [job] = listed.structured_content["jobs"]
        assert job["state"] == "running" and not library.cancel_seen.is_set()
        stopped = await client.call_tool("cancel_index", {"job_id": job["id"]})
    assert stopped.structured_content["state"] == "cancelled", text_of(stopped)
    assert library.cancel_seen.is_set()


async def test_index_outside_the_roots_is_refused(server, library, tmp_path) -> None:
    result = await call(server, "index_images", {"paths": [str(tmp_path)]})
    assert result.is_error
    assert "outside the allowed roots" in text_of(result)
    assert library.calls == []


async def test_dotdot_out_of_a_root_is_refused(server, photos) -> None:
    result = await call(server, "index_images", {"paths": [f"{photos}/../.."]})
    assert result.is_error and "AccessDeniedError" in text_of(result)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_client_roots_narrow_the_configured_roots(server, photos, mode) -> None:
    inner = photos / "inner"
    inner.mkdir()

    async def roots(_ctx) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=inner.as_uri())])

    kwargs = {"list_roots_callback": roots, "mode": mode}
    refused = await call(server, "index_images", {"paths": [str(photos)]}, **kwargs)
    allowed = await call(server, "index_images", {"paths": [str(inner)]}, **kwargs)
    assert refused.is_error and str(inner) in text_of(refused)
    assert not allowed.is_error


async def test_without_configured_roots_the_client_roots_apply(library, photos) -> None:
    settings = library.settings.model_copy(update={"allowed_roots": None})
    server = create_server(settings, search_factory=lambda s: library)

    async def roots(_ctx) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=photos.as_uri())])

    assert not (
        await call(server, "index_images", {"paths": [str(photos)]}, list_roots_callback=roots)
    ).is_error
    refused = await call(server, "index_images", {"paths": [str(photos)]})
    assert refused.is_error and "no allowed roots" in text_of(refused)


async def test_search_by_text_returns_hits(server, photos) -> None:
    await call(server, "index_images", {"paths": [str(photos)]})
    result = await call(server, "multimodal_search", {"text": "a cat", "top_k": 3})
    hits = result.structured_content["hits"]
    fields = {"id", "path", "score", "score_kind", "cosine", "caption", "metadata"}
    assert [set(hit) for hit in hits] == [fields] * 3
    assert hits[0]["path"] in text_of(result)
    assert not any(isinstance(block, ImageContent) for block in result.content)


async def test_search_by_image_path_hands_the_resolved_path_over(server, library, photos) -> None:
    await call(server, "multimodal_search", {"image": str(photos / "cat" / ".." / "chelsea.jpg")})
    assert library.calls[-1][1]["image"] == photos / "chelsea.jpg"


async def test_search_by_base64_image_hands_bytes_over(server, library, photos) -> None:
    data = (photos / "chelsea.jpg").read_bytes()
    await call(server, "multimodal_search", {"image": base64.b64encode(data).decode(), "text": "x"})
    assert library.calls[-1][1] == {"text": "x", "image": data, "top_k": 9}


async def test_search_by_data_uri_hands_bytes_over(server, library, photos) -> None:
    data = (photos / "coffee.jpg").read_bytes()
    uri = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    await call(server, "multimodal_search", {"image": uri})
    assert library.calls[-1][1]["image"] == data


async def test_search_image_outside_the_roots_is_refused(server, library, tmp_path) -> None:
    secret = tmp_path / "secret.jpg"
    write_photos(tmp_path, ("coffee",))[0].rename(secret)
    result = await call(server, "multimodal_search", {"image": str(secret)})
    assert result.is_error and "outside the allowed roots" in text_of(result)
    assert library.calls == []


async def test_search_with_thumbnails_attaches_small_jpegs(server, photos) -> None:
    await call(server, "index_images", {"paths": [str(photos)]})
    result = await call(
        server, "multimodal_search", {"text": "x", "top_k": 2, "include_thumbnails": True}
    )
    images = [block for block in result.content if isinstance(block, ImageContent)]
    assert len(images) == 2 and images[0].mime_type == "image/jpeg"
    thumb = Image.open(io.BytesIO(base64.b64decode(images[0].data)))
    assert thumb.format == "JPEG" and max(thumb.size) == 128


async def test_hits_outside_the_roots_get_no_thumbnail(server, library, photos, tmp_path) -> None:
    await call(server, "index_images", {"paths": [str(photos / "coffee.jpg")]})
    elsewhere = write_photos(tmp_path / "elsewhere", ("rocket",))[0]
    library.index([elsewhere])
    result = await call(server, "multimodal_search", {"text": "x", "include_thumbnails": True})
    assert len([b for b in result.content if isinstance(b, ImageContent)]) == 1
    assert "(no thumbnail: outside the allowed roots)" in text_of(result)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({}, "give text, image, or both"),
        ({"text": "x", "top_k": 0}, "top_k"),
        ({"text": "x", "top_k": "many"}, "top_k"),
        ({"image": "/no/such/file.jpg"}, "outside the allowed roots"),
        ({"image": "data:image/png,abc"}, "base64"),
    ],
)
async def test_bad_search_arguments_are_tool_errors(server, arguments, problem) -> None:
    result = await call(server, "multimodal_search", arguments)
    assert result.is_error and problem in text_of(result)


async def test_missing_image_inside_the_roots_is_named(server, photos) -> None:
    result = await call(server, "multimodal_search", {"image": str(photos / "gone.jpg")})
    assert result.is_error and "gone.jpg is not a file" in text_of(result)


async def test_rerank_without_a_reranker_says_it_is_not_configured(server, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mmsearch.rerank", None)
    result = await call(server, "rerank", {"candidate_ids": ["a", "b"], "text": "a cat"})
    assert result.is_error
    assert "reranker not configured" in text_of(result)


@pytest.fixture
def reranker(monkeypatch) -> list[dict[str, Any]]:
    """A stand-in ``mmsearch.rerank`` that reverses the candidates and records its calls."""
    calls: list[dict[str, Any]] = []

    def rerank(candidates, text=None, image=None, *, settings=None):
        calls.append({"candidates": candidates, "text": text, "image": image})
        ids = [c.id for c in reversed(candidates)]
        return SimpleNamespace(ids=ids, reranked=True, reason="the cat is orange", note="")

    monkeypatch.setitem(sys.modules, "mmsearch.rerank", SimpleNamespace(rerank=rerank))
    return calls


async def test_rerank_returns_the_reranker_order(server, library, photos, reranker) -> None:
    await call(server, "index_images", {"paths": [str(photos)]})
    ids = list(library.records)[:3]
    result = await call(server, "rerank", {"candidate_ids": ids, "text": "a cat"})
    assert [r["id"] for r in result.structured_content["ranking"]] == ids[::-1]
    assert [r["rank"] for r in result.structured_content["ranking"]] == [1, 2, 3]
    assert result.structured_content["reranked"] is True
    assert [c.id for c in reranker[0]["candidates"]] == ids
    assert "the cat is orange" in text_of(result)


async def test_rerank_hands_a_base64_query_image_over_decoded(
    server, library, photos, reranker
) -> None:
    await call(server, "index_images", {"paths": [str(photos)]})
    data = base64.b64encode((photos / "chelsea.jpg").read_bytes()).decode()
    await call(server, "rerank", {"candidate_ids": list(library.records)[:2], "image": data})
    assert isinstance(reranker[0]["image"], Image.Image)
    assert reranker[0]["image"].size == (451, 300)


async def test_rerank_refuses_candidates_outside_the_roots(
    server, library, tmp_path, reranker
) -> None:
    library.index(write_photos(tmp_path / "elsewhere", ("rocket",)))
    result = await call(server, "rerank", {"candidate_ids": list(library.records), "text": "x"})
    assert result.is_error and "outside the allowed roots" in text_of(result)
    assert reranker == []


async def test_rerank_names_unknown_candidate_ids(server, reranker) -> None:
    result = await call(server, "rerank", {"candidate_ids": ["nope"], "text": "a cat"})
    assert result.is_error and "unknown candidate ids: nope" in text_of(result)
    assert reranker == []


async def test_stats_report_the_collection(server, photos) -> None:
    await call(server, "index_images", {"paths": [str(photos)]})
    result = await call(server, "collection_stats", {})
    assert result.structured_content["count"] == 4


async def test_library_errors_become_clear_tool_errors(server) -> None:
    result = await call(server, "collection_stats", {"collection": "nope"})
    assert result.is_error
    assert text_of(result).endswith("CollectionNotFoundError: collection 'nope' does not exist")


async def test_library_errors_while_indexing_become_clear_tool_errors(
    server, library, photos
) -> None:
    library.index_error = ModelLoadError("no weights for base_en_v1.5 in /models")
    result = await call(server, "index_images", {"paths": [str(photos)]})
    assert result.is_error
    assert text_of(result).endswith("ModelLoadError: no weights for base_en_v1.5 in /models")


async def test_unexpected_failures_are_generic_tool_errors(server, library, caplog) -> None:
    def explode(collection=None):
        raise RuntimeError("secret internals")

    library.stats = explode
    result = await call(server, "collection_stats", {})
    assert result.is_error
    assert "internal error (RuntimeError)" in text_of(result)
    assert "secret internals" not in text_of(result)
    assert "secret internals" in caplog.text


async def test_remove_by_path_and_id(server, library, photos) -> None:
    await call(server, "index_images", {"paths": [str(photos)]})
    some_id = next(iter(library.records))
    by_id = await call(server, "remove_images", {"ids": [some_id]})
    by_path = await call(server, "remove_images", {"paths": [str(photos / "rocket.jpg")]})
    assert by_id.structured_content == {"removed": 1}
    assert by_path.structured_content == {"removed": 1}
    assert len(library.records) == 2


async def test_remove_needs_ids_or_paths(server) -> None:
    result = await call(server, "remove_images", {})
    assert result.is_error and "give ids, paths, or both" in text_of(result)


async def test_one_library_instance_serves_every_call(library, photos) -> None:
    created = []
    server = create_server(library.settings, search_factory=lambda s: created.append(1) or library)
    await call(server, "index_images", {"paths": [str(photos)]})
    await call(server, "multimodal_search", {"text": "x"})
    assert created == [1]
