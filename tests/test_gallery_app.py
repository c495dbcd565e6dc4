"""The gallery MCP App's server side: the tools' ui:// binding, the App resource, the
thumbnail resources (roots and size limits), and unchanged results for clients that do
not negotiate MCP Apps."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp_support import RecordingSearch, index_until_done, write_photos
from PIL import Image

from mcp_server import create_server
from mcp_server.gallery import GALLERY_URI
from mmsearch.config import Settings

pytestmark = pytest.mark.anyio

APPS = [advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = (tmp_path / "photos").resolve()
    write_photos(folder)
    return folder


@pytest.fixture
def library(tmp_path: Path, photos: Path) -> RecordingSearch:
    return RecordingSearch(Settings(data_dir=tmp_path / "data", allowed_roots=[photos]))


@pytest.fixture
def server(library: RecordingSearch):
    return create_server(library.settings, search_factory=lambda settings: library)


async def test_search_and_rerank_are_bound_to_the_gallery(server) -> None:
    async with Client(server, extensions=APPS) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        html = await client.read_resource(GALLERY_URI)
    for name in ("multimodal_search", "rerank"):
        assert tools[name].meta == {"ui": {"resourceUri": GALLERY_URI}}
    assert tools["index_images"].meta is None
    content = html.contents[0]
    assert content.mime_type == APP_MIME_TYPE
    assert "ui/initialize" in content.text
    assert "default-src 'none'" in content.text  # the page's own CSP: no network
    assert content.meta["ui"]["csp"] == {}


async def test_clients_without_apps_get_the_same_blocks(server, photos) -> None:
    args = {"text": "a cat", "top_k": 3, "include_thumbnails": True}
    async with Client(server) as plain:
        await index_until_done(plain, {"paths": [str(photos)]})
        without = await plain.call_tool("multimodal_search", args)
    async with Client(server, extensions=APPS) as apps:
        with_apps = await apps.call_tool("multimodal_search", args)
    assert [b.type for b in without.content] == ["text"] + ["text", "image"] * 3
    assert without.content == with_apps.content
    assert without.structured_content == with_apps.structured_content


async def test_thumbnail_resource_is_a_bounded_jpeg(server, library, photos) -> None:
    async with Client(server, extensions=APPS) as client:
        await index_until_done(client, {"paths": [str(photos)]})
        image_id = next(iter(library.records))
        small = await client.read_resource(f"mmsearch://thumbnail/{image_id}?size=64")
        default = await client.read_resource(f"mmsearch://thumbnail/{image_id}")
    for result, size in ((small, 64), (default, 256)):
        blob = result.contents[0]
        assert blob.mime_type == "image/jpeg"
        image = Image.open(io.BytesIO(base64.b64decode(blob.blob)))
        assert image.format == "JPEG" and max(image.size) == size


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("mmsearch://thumbnail/{id}?size=4096", "between 32 and 512"),
        ("mmsearch://thumbnail/{id}?size=big", "must be an integer"),
        ("mmsearch://thumbnail/" + "0" * 64, "no indexed image"),
    ],
)
async def test_bad_thumbnail_reads_are_clear_errors(server, library, photos, uri, message):
    from mcp.shared.exceptions import MCPError

    async with Client(server) as client:
        await index_until_done(client, {"paths": [str(photos)]})
        image_id = next(iter(library.records))
        with pytest.raises(MCPError, match=message):
            await client.read_resource(uri.replace("{id}", image_id))


async def test_thumbnail_outside_the_roots_is_refused(server, library, photos, tmp_path) -> None:
    from mcp.shared.exceptions import MCPError

    async with Client(server) as client:
        await index_until_done(client, {"paths": [str(photos)]})
    # A record whose file lies outside the allowed roots (e.g. indexed before the roots
    # were narrowed) must not be readable through the thumbnail resource.
    outside = write_photos(tmp_path / "elsewhere", ("camera",))[0]
    record = next(iter(library.records.values()))
    library.records[record.id] = record.model_copy(update={"path": str(outside)})
    async with Client(server) as client:
        with pytest.raises(MCPError, match="outside"):
            await client.read_resource(f"mmsearch://thumbnail/{record.id}")
