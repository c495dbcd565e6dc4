"""The gallery App rendered in a real browser (headless Chromium from the Debian
packages, driven by Playwright) inside a small host page that speaks the App protocol
and forwards the App's requests to a real mmsearch server (tiny random-weight
checkpoints, real photos from scikit-image).

``MMSEARCH_GALLERY_SCREENSHOT=docs/gallery.png`` also saves the screenshot shown in the
README.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gallery_host import (
    CHROMIUM,
    CHROMIUM_ARGS,
    browser_missing,
    host_page,
    make_forwarder,
    save_small_png,
)
from mcp import Client
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp_support import index_until_done
from PIL import Image

from mcp_server import create_server
from mcp_server.gallery import GALLERY_URI
from mmsearch.library import ImageSearch

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MORE_PHOTOS = ("hubble_deep_field", "immunohistochemistry", "retina")
TOP_K = 8


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def gallery_photos(photo_dir: Path) -> Path:
    from skimage import data

    for name in MORE_PHOTOS:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        image.thumbnail((256, 256))
        image.save(photo_dir / f"{name}.jpg", quality=90)
    return photo_dir


async def test_gallery_renders_hits_opens_an_image_and_asks_for_more_like_it(
    settings, embedder, gallery_photos: Path, tmp_path: Path
) -> None:
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    settings = settings.model_copy(update={"allowed_roots": [gallery_photos]})
    server = create_server(
        settings, search_factory=lambda s: ImageSearch(s, embedder_factory=lambda _: embedder)
    )
    apps = [advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})]
    arguments = {"text": "a cat on a sofa", "top_k": TOP_K}
    try:
        async with Client(server, extensions=apps) as client:
            report = await index_until_done(client, {"paths": [str(gallery_photos)]})
            assert report.structured_content["indexed"] == 8
            html = (await client.read_resource(GALLERY_URI)).contents[0].text
            result = await client.call_tool("multimodal_search", arguments)
            hits = result.structured_content["hits"]
            assert len(hits) == TOP_K
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
                )
                try:
                    page = await browser.new_page(viewport={"width": 900, "height": 545})
                    blocked: list[str] = []
                    page.on(
                        "request",
                        lambda r: (
                            blocked.append(r.url)
                            if not r.url.startswith(("data:", "about:"))
                            else None
                        ),
                    )
                    await page.expose_function("mcpForward", make_forwarder(client))
                    page_html = host_page(
                        html, arguments, result.model_dump(by_alias=True, mode="json"), "light"
                    )
                    await page.set_content(page_html)
                    app = page.frame_locator("#app")
                    tiles = app.locator(".tile")
                    await tiles.nth(TOP_K - 1).wait_for(timeout=20_000)
                    assert await tiles.count() == TOP_K
                    # Score order: the tiles carry the hits' ids in the server's order.
                    ids = [await tiles.nth(i).get_attribute("data-id") for i in range(TOP_K)]
                    assert ids == [h["id"] for h in hits]
                    scores = [h["score"] for h in hits]
                    assert scores == sorted(scores, reverse=True)
                    first_label = await tiles.nth(0).locator(".score").inner_text()
                    assert f"{hits[0]['score']:.3f}" in first_label
                    # Every thumbnail arrived through resources/read and decoded.
                    images = app.locator(".tile img")
                    for i in range(TOP_K):
                        await _wait_loaded(images.nth(i))
                    shot = tmp_path / "gallery.png"
                    await page.screenshot(path=str(shot))
                    target = os.environ.get("MMSEARCH_GALLERY_SCREENSHOT")
                    if target:
                        save_small_png(shot.read_bytes(), Path(target))

                    # Keyboard: focus the second tile, open it with Enter.
                    await tiles.nth(0).focus()
                    await page.keyboard.press("ArrowRight")
                    await page.keyboard.press("Enter")
                    detail = app.locator("#detail")
                    await detail.wait_for(state="visible", timeout=5_000)
                    assert hits[1]["path"] in await app.locator("#detail-fields").inner_text()
                    await _wait_loaded(app.locator("#detail-img"))

                    # More like this: a tools/call with the stored image's id.
                    await app.locator("#more-like-this").click()
                    await (
                        app.locator("#title").filter(has_text="More like").wait_for(timeout=20_000)
                    )
                    requests = await page.evaluate("window.appRequests")
                    calls = [r for r in requests if r["method"] == "tools/call"]
                    assert calls == [
                        {
                            "method": "tools/call",
                            "params": {
                                "name": "multimodal_search",
                                "arguments": {"similar_to": hits[1]["id"], "top_k": 9},
                            },
                        }
                    ]
                    await tiles.nth(6).wait_for(timeout=20_000)
                    new_ids = [
                        await tiles.nth(i).get_attribute("data-id")
                        for i in range(await tiles.count())
                    ]
                    assert len(new_ids) == 7 and hits[1]["id"] not in new_ids
                    reads = [r for r in requests if r["method"] == "resources/read"]
                    assert all(
                        r["params"]["uri"].startswith("mmsearch://thumbnail/") for r in reads
                    )
                    assert blocked == [], f"the gallery reached the network: {blocked}"

                    # Dark theme from the host context.
                    dark = host_page(
                        html, arguments, result.model_dump(by_alias=True, mode="json"), "dark"
                    )
                    page = await browser.new_page(viewport={"width": 900, "height": 640})
                    await page.expose_function("mcpForward", make_forwarder(client))
                    await page.set_content(dark)
                    app = page.frame_locator("#app")
                    await app.locator(".tile").nth(TOP_K - 1).wait_for(timeout=20_000)
                    background = await app.locator("body").evaluate(
                        "b => getComputedStyle(b).backgroundColor"
                    )
                    assert _luminance(background) < 0.2, background
                finally:
                    await browser.close()
    finally:
        server.shared_search.close()


async def _wait_loaded(img) -> None:
    await img.evaluate(
        """i => new Promise((resolve, reject) => {
             const done = () => i.naturalWidth > 0 ? resolve() : reject(new Error('no image'));
             if (i.complete && i.src) { done(); return; }
             i.addEventListener('load', done, { once: true });
             i.addEventListener('error', () => reject(new Error('broken image')), { once: true });
             setTimeout(() => reject(new Error('image timed out')), 20000);
           })"""
    )


def _luminance(css_color: str) -> float:
    r, g, b = (int(v) for v in css_color[css_color.index("(") + 1 : -1].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255
