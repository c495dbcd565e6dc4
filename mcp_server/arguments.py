"""Turning tool arguments into what the library takes: image bytes or paths, roots."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import ValidationError

from mmsearch.access import ensure_allowed
from mmsearch.errors import InvalidQueryError

MAX_PATH_CHARS = 4096

# Leading bytes of the formats an assistant is likely to send inline.
_IMAGE_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"RIFF",  # WebP
    b"BM",
    b"II*\x00",  # TIFF
    b"MM\x00*",
)


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(_IMAGE_MAGIC)


def _decode_data_uri(value: str) -> bytes:
    header, sep, payload = value.partition(",")
    if not sep or ";base64" not in header:
        raise InvalidQueryError(
            "image: a data URI must be base64 encoded (data:image/...;base64,...)"
        )
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidQueryError(f"image: the data URI is not valid base64 ({exc})") from None


def _decode_base64_image(value: str) -> bytes | None:
    compact = "".join(value.split())
    if len(compact) < 16 or len(compact) % 4:
        return None
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if _looks_like_image(data) else None


def image_argument(value: str, roots: list[Path], *, max_bytes: int) -> Path | bytes:
    """Read the ``image`` argument: a data URI, bare base64 image bytes, a ``file://`` URI
    or a path (which must lie inside ``roots``).

    Bare base64 is told from a path by decoding it and finding an image file signature,
    so a path is never mistaken for image bytes (nor the reverse). Inline data larger
    than ``max_bytes`` once decoded is refused before it is decoded.
    """
    text = value.strip()
    if not text:
        raise InvalidQueryError("image: empty string")
    if len(text) > (max_bytes + 2) // 3 * 4 + 4096:
        raise InvalidQueryError(
            f"image: {len(text)} characters of inline data, over the {max_bytes}-byte image "
            "limit (setting max_image_bytes)"
        )
    if text.startswith("data:"):
        data = _decode_data_uri(text)
    else:
        data = _decode_base64_image(text)
        if data is None and len(text) > MAX_PATH_CHARS:
            raise InvalidQueryError(
                "image: neither a path (too long) nor base64 data of a known image format"
            )
    if data is not None:
        if len(data) > max_bytes:
            raise InvalidQueryError(f"image: over the {max_bytes}-byte limit")
        return data
    path = file_uri_to_path(text) if text.startswith("file:") else Path(text)
    resolved = ensure_allowed(path, roots)
    try:
        is_file = resolved.is_file()
    except OSError:
        is_file = False
    if not is_file:
        raise InvalidQueryError(f"image: {value} is not a file (nor base64 image data)")
    return resolved


def file_uri_to_path(uri: str) -> Path:
    """``file:///home/me/Pictures`` -> ``/home/me/Pictures``."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise InvalidQueryError(f"{uri}: not a file:// URI")
    return Path(unquote(parsed.path))


def invalid_arguments_message(tool: str, error: ValidationError) -> str:
    """One line for a client: each rejected field and what it must be (never the value
    the caller sent, which may be large or private)."""
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        problems.append(f"{where}: {' '.join(str(item['msg']).split())}")
    return f"{tool}: invalid arguments: " + "; ".join(problems)
