"""A minimal MCP Apps host for the gallery, driven by Playwright in headless Chromium.

The host page holds the gallery in a sandboxed iframe (``srcdoc``, scripts only, so an
opaque origin like a real host's sandbox) and speaks the App protocol over postMessage:
it answers ``ui/initialize``, sends the tool input and tool result once the App says it
is initialized, and forwards the App's ``tools/call`` and ``resources/read`` to a real
MCP client session (through a function Playwright exposes to the page). Every request
the App sent is kept in ``window.appRequests`` so a test can check what it asked for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

HOST_PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<style>
  html, body { margin: 0; background: %(page_bg)s; }
  iframe { border: 0; width: 100%%; height: 100vh; display: block; }
</style></head>
<body>
<iframe id="app" sandbox="allow-scripts" title="mmsearch gallery"></iframe>
<script>
  const frame = document.getElementById("app");
  const setup = %(setup)s;
  window.appRequests = [];
  window.appReady = false;
  const reply = (msg) => frame.contentWindow.postMessage(msg, "*");
  window.addEventListener("message", async (event) => {
    if (event.source !== frame.contentWindow) return;
    const msg = event.data;
    if (!msg || msg.jsonrpc !== "2.0") return;
    if (msg.method === "ui/initialize") {
      reply({ jsonrpc: "2.0", id: msg.id, result: {
        protocolVersion: "2026-01-26",
        hostInfo: { name: "mmsearch-test-host", version: "1" },
        hostCapabilities: { serverTools: {}, serverResources: {} },
        hostContext: { theme: setup.theme, displayMode: "inline",
                       containerDimensions: { width: 900, maxHeight: 2000 } } } });
    } else if (msg.method === "ui/notifications/initialized") {
      window.appReady = true;
      reply({ jsonrpc: "2.0", method: "ui/notifications/tool-input",
              params: { arguments: setup.arguments } });
      reply({ jsonrpc: "2.0", method: "ui/notifications/tool-result", params: setup.result });
    } else if (msg.id !== undefined && msg.method) {
      window.appRequests.push({ method: msg.method, params: msg.params });
      try {
        const result = await window.mcpForward(msg.method, JSON.stringify(msg.params || {}));
        reply({ jsonrpc: "2.0", id: msg.id, result: JSON.parse(result) });
      } catch (err) {
        reply({ jsonrpc: "2.0", id: msg.id, error: { code: -32000, message: String(err) } });
      }
    }
  });
  frame.srcdoc = setup.html;
</script>
</body></html>
"""


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        return f"chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    return None


def host_page(html: str, arguments: dict[str, Any], result: dict[str, Any], theme: str) -> str:
    setup = {"html": html, "arguments": arguments, "result": result, "theme": theme}
    page_bg = "#17181a" if theme == "dark" else "#ffffff"
    # "</" is escaped so the gallery's own </script> cannot end the host's script.
    return HOST_PAGE % {
        "setup": json.dumps(setup).replace("</", "<\\/"),
        "page_bg": page_bg,
    }


def make_forwarder(client: Any):
    """The function exposed to the page: one App request -> the MCP client session."""

    async def forward(method: str, params_json: str) -> str:
        params = json.loads(params_json)
        if method == "tools/call":
            result = await client.call_tool(params["name"], params.get("arguments") or {})
        elif method == "resources/read":
            result = await client.read_resource(params["uri"])
        else:
            raise ValueError(f"the test host does not forward {method}")
        return result.model_dump_json(by_alias=True, exclude_none=True)

    return forward


def save_small_png(png: bytes, target: Path, max_bytes: int = 200_000) -> None:
    """Write a screenshot as a palette PNG, small enough to commit."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    for colors in (256, 192, 128, 96, 64):
        buffer = io.BytesIO()
        image.quantize(
            colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG
        ).save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= max_bytes:
            break
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(buffer.getvalue())
