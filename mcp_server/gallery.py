"""The results gallery: an MCP App (extension ``io.modelcontextprotocol/ui``) that shows
search and rerank results as pictures, and the thumbnail resources it reads.

The App is one HTML file (``gallery.html``, package data, no build step) bound to
``multimodal_search`` and ``rerank`` through the tools' ``_meta.ui.resourceUri``. Hosts
that render MCP Apps show it; every other client ignores the binding and gets the tools'
usual text and image blocks. Thumbnails reach the App as resources
(``mmsearch://thumbnail/{image_id}?size=256``) read through the host, so they never
enter the model's context; each read is checked against the allowed roots and the image
size limits like the thumbnails a search attaches.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mcp.server.apps import Apps, ResourceCsp, ResourcePermissions

from mcp_server.results import thumbnail_jpeg
from mmsearch.access import ensure_allowed
from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError

GALLERY_URI = "ui://mmsearch/gallery.html"
GALLERY_META = {"ui": {"resourceUri": GALLERY_URI}}
"""``_meta`` of the tools whose results the gallery renders."""
THUMBNAIL_TEMPLATE = "mmsearch://thumbnail/{image_id}{?size}"
THUMBNAIL_DEFAULT_SIZE = 256
THUMBNAIL_MIN_SIZE = 32
THUMBNAIL_MAX_SIZE = 512


def gallery_html() -> str:
    """The App's HTML, shipped with the package."""
    return resources.files("mcp_server").joinpath("gallery.html").read_text(encoding="utf-8")


def gallery_extension() -> Apps:
    """The Apps extension carrying the gallery resource: no network at all (an empty CSP
    domain list; the page's own CSP says the same), clipboard access for "copy path"."""
    apps = Apps()
    apps.add_html_resource(
        GALLERY_URI,
        gallery_html(),
        name="gallery",
        title="mmsearch results gallery",
        description="Search and rerank results as a grid of thumbnails.",
        csp=ResourceCsp(),
        permissions=ResourcePermissions(clipboard_write={}),
        prefers_border=True,
    )
    return apps


def parse_thumbnail_size(size: str | int) -> int:
    """The ``size`` of a thumbnail URI, bounded so one read stays small."""
    try:
        value = int(size)
    except (TypeError, ValueError):
        raise InvalidQueryError(f"thumbnail size must be an integer, got {size!r}") from None
    if not THUMBNAIL_MIN_SIZE <= value <= THUMBNAIL_MAX_SIZE:
        raise InvalidQueryError(
            f"thumbnail size must be between {THUMBNAIL_MIN_SIZE} and {THUMBNAIL_MAX_SIZE}, "
            f"got {value}"
        )
    return value


def read_thumbnail(path: str, size: int, roots: list[Path], settings: Settings) -> bytes:
    """The JPEG thumbnail of a stored image's file, if the file lies inside ``roots``."""
    return thumbnail_jpeg(
        ensure_allowed(path, roots),
        size,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
    )
