"""Decoding untrusted image bytes."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsearch.errors import ImageDecodeError
from mmsearch.images import coerce_image, content_hash, decode_image, load_image_file


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


RGB = Image.fromarray(np.arange(48 * 32 * 3, dtype=np.uint8).reshape(32, 48, 3))


def test_content_hash_is_sha256_hex() -> None:
    assert content_hash(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_zero_bytes_is_refused() -> None:
    with pytest.raises(ImageDecodeError, match="zero bytes"):
        decode_image(b"")


def test_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty"):
        load_image_file(tmp_path / "empty.jpg")


def test_non_image_bytes_are_refused() -> None:
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(b"this is a text file, not a picture")


def test_truncated_jpeg_is_refused() -> None:
    data = _encode(RGB, "JPEG")
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_pixel_limit_refuses_before_decoding() -> None:
    with pytest.raises(ImageDecodeError, match="pixel limit"):
        decode_image(_encode(RGB, "PNG"), max_pixels=100)


def test_byte_limit_refuses_large_files(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(_encode(RGB, "PNG"))
    with pytest.raises(ImageDecodeError, match="byte limit"):
        load_image_file(path, max_bytes=100)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img = decode_image(_encode(RGB, "JPEG", exif=exif))
    assert img.size == (32, 48)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    img = decode_image(buf.getvalue())
    assert img.mode == "RGB"
    r, g, b = img.getpixel((4, 4))
    assert r > 200 and b < 50


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("L", "RGB"), ("CMYK", "RGB"), ("P", "RGB"), ("LA", "RGBA"), ("RGBA", "RGBA"), ("1", "RGB")],
)
def test_modes_become_rgb_or_rgba(mode: str, expected: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    img = decode_image(_encode(RGB.convert(mode), fmt))
    assert img.mode == expected


def test_16_bit_greyscale_keeps_its_contrast() -> None:
    arr = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    img = decode_image(_encode(Image.fromarray(arr), "PNG"))
    out = np.asarray(img)
    assert img.mode == "RGB"
    assert out.min() == 0 and out.max() == 255


def test_palette_with_transparency_keeps_alpha() -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    img.info["transparency"] = 0
    assert decode_image(_encode(img, "PNG")).mode == "RGBA"


def test_load_image_file_hashes_the_file_bytes(tmp_path: Path) -> None:
    data = _encode(RGB, "PNG")
    (tmp_path / "a.png").write_bytes(data)
    loaded = load_image_file(tmp_path / "a.png")
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert loaded.size == len(data)
    assert loaded.image.size == (48, 32)


def test_query_image_accepts_path_bytes_and_pil(tmp_path: Path) -> None:
    data = _encode(RGB, "PNG")
    (tmp_path / "q.png").write_bytes(data)
    for query in (tmp_path / "q.png", str(tmp_path / "q.png"), data, RGB):
        assert coerce_image(query).size == (48, 32)


def test_query_image_of_wrong_type_is_refused() -> None:
    with pytest.raises(ImageDecodeError, match="path, bytes or a PIL image"):
        coerce_image(12345)  # type: ignore[arg-type]


def test_missing_file_is_reported() -> None:
    with pytest.raises(ImageDecodeError, match="no such file"):
        load_image_file("/nonexistent/photo.jpg")
