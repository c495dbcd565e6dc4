"""Reading image files safely: size limits, decoding to RGB(A), content hashes.

Everything that turns untrusted bytes into pixels goes through here, so the limits
against oversized files and decompression bombs are applied in one place.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmsearch.errors import ImageDecodeError

DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
DEFAULT_MAX_IMAGE_BYTES = 256 * 1024 * 1024


def content_hash(data: bytes) -> str:
    """SHA-256 of the file's bytes, hex: the identity of an image in the store."""
    return hashlib.sha256(data).hexdigest()


def read_image_bytes(
    path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> bytes:
    """Read a whole image file, refusing empty files, files above ``max_bytes`` and
    anything that is not a regular file.

    The file is opened non-blocking and checked with ``fstat`` on the open descriptor,
    so a FIFO or a device (which could block forever or never end) is refused without
    being read, even if it replaced a regular file after the folder was scanned. The
    size is checked before reading and again while reading, so a file that grows
    between the two is still bounded.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageDecodeError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"{p}: is a directory, not an image file") from None
    except PermissionError:
        raise ImageDecodeError(f"{p}: permission denied") from None
    except OSError as exc:
        raise ImageDecodeError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except ValueError:  # a NUL byte, or a surrogate that maps to no byte
        raise ImageDecodeError(
            f"{str(p)[:200]!r}: not a usable path (a NUL byte or invalid Unicode)"
        ) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageDecodeError(f"{p}: is a directory, not an image file")
        if not stat.S_ISREG(st.st_mode):
            raise ImageDecodeError(f"{p}: not a regular file (a FIFO, socket or device)")
        if st.st_size > max_bytes:
            raise ImageDecodeError(
                f"{p}: file is {st.st_size} bytes, over the {max_bytes}-byte limit"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ImageDecodeError(f"{p}: cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ImageDecodeError(f"{p}: file is over the {max_bytes}-byte limit")
    if not data:
        raise ImageDecodeError(f"{p}: file is empty (zero bytes)")
    return data


def _to_rgb_or_rgba(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, or RGBA when the image carries transparency."""
    mode = img.mode
    if mode in ("RGB", "RGBA"):
        return img
    has_alpha = (
        mode in ("LA", "PA", "La", "RGBa")
        or (mode == "P" and "transparency" in img.info)
        or (mode in ("L", "RGB") and "transparency" in img.info)
    )
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit depth greyscale: scale the actual range to 8 bits instead of clipping.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if hi > lo:
            arr = (arr - lo) * (255.0 / (hi - lo))
        else:
            arr = np.zeros_like(arr)
        return Image.fromarray(arr.round().astype(np.uint8), mode="L").convert("RGB")
    if mode == "CMYK":
        return img.convert("RGB")
    return img.convert("RGBA" if has_alpha else "RGB")


def decode_image(
    data: bytes,
    *,
    name: str = "<bytes>",
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode bytes into an RGB or RGBA PIL image, fully loaded.

    Applies the EXIF orientation, takes the first frame of animated images, and refuses
    images above ``max_pixels`` (decompression bombs) before their pixels are decoded.
    ``draft_size`` lets a JPEG decode at a reduced scale (still at least that size), for
    callers that only need a thumbnail.
    Raises :class:`ImageDecodeError` with the reason; ``name`` is used in messages.
    """
    if not data:
        raise ImageDecodeError(f"{name}: empty data (zero bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"{name}: image is {width}x{height} = {width * height} pixels, over the "
                    f"{max_pixels}-pixel limit"
                )
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            if draft_size is not None:
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name}: not an image (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"{name}: refused as a decompression bomb ({exc})") from None
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg.lower() or "broken data stream" in msg.lower():
            raise ImageDecodeError(f"{name}: truncated or corrupt image data ({msg})") from None
        raise ImageDecodeError(f"{name}: cannot decode image ({msg})") from None
    except (ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageDecodeError(f"{name}: cannot decode image ({exc})") from None
    if img.width == 0 or img.height == 0:
        raise ImageDecodeError(f"{name}: image has no pixels")
    return _to_rgb_or_rgba(img)


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image file together with the identity of its bytes."""

    image: Image.Image
    sha256: str
    size: int


def load_image_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    draft_size: int | None = None,
) -> LoadedImage:
    """Read, hash and decode one image file (the bytes are read only once)."""
    data = read_image_bytes(path, max_bytes=max_bytes)
    image = decode_image(data, name=str(path), max_pixels=max_pixels, draft_size=draft_size)
    return LoadedImage(image=image, sha256=content_hash(data), size=len(data))


def coerce_image(
    image: str | os.PathLike[str] | bytes | Image.Image,
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Accept a query image as a path, raw bytes or a PIL image; return RGB(A) PIL."""
    if isinstance(image, Image.Image):
        if image.width * image.height > max_pixels:
            raise ImageDecodeError(
                f"query image is {image.width}x{image.height}, over the {max_pixels}-pixel limit"
            )
        return _to_rgb_or_rgba(image)
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        if len(data) > max_bytes:
            raise ImageDecodeError(f"query image is over the {max_bytes}-byte limit")
        return decode_image(data, name="query image", max_pixels=max_pixels)
    if isinstance(image, str | os.PathLike):
        data = read_image_bytes(image, max_bytes=max_bytes)
        return decode_image(data, name=str(image), max_pixels=max_pixels)
    raise ImageDecodeError(
        f"query image must be a path, bytes or a PIL image, not {type(image).__name__}"
    )
