"""Hostile files and a snapshot of what a collection holds, for the reliability tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from mmsearch.store import MilvusStore


def snapshot(store: MilvusStore, collection: str) -> dict[str, tuple[str, np.ndarray]]:
    """id -> (path, vector) of every stored row: compared before and after a bad call."""
    ids = [r.id for r in store.iter_records(collection)]
    rows = store.get_rows(collection, ids, with_vectors=True)
    return {i: (r["path"], np.asarray(r["vector"], dtype=np.float32)) for i, r in rows.items()}


def assert_same(before: dict, after: dict) -> None:
    assert set(after) == set(before), "records were added or lost"
    for key, (path, vec) in before.items():
        assert after[key][0] == path
        np.testing.assert_array_equal(after[key][1], vec)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (about 200 bytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def pattern(width: int = 48, height: int = 32, seed: int = 0) -> Image.Image:
    """An RGB image with no symmetry, so a rotation changes it."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    arr[: height // 2, : width // 3] = (255, 0, 0)
    return Image.fromarray(arr)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def write_odd_images(folder: Path) -> dict[str, Path]:
    """One file of each awkward kind that must index correctly."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pattern()
    out: dict[str, Path] = {}

    frames = [pattern(seed=s).convert("P") for s in (1, 2, 3)]
    out["animated"] = folder / "animated.gif"
    frames[0].save(out["animated"], save_all=True, append_images=frames[1:], duration=50, loop=0)

    out["cmyk"] = folder / "cmyk.jpg"
    pattern(seed=4).convert("CMYK").save(out["cmyk"], quality=95)

    out["16bit"] = folder / "deep.png"
    ramp = (np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) * 40).astype(np.uint16)
    Image.fromarray(ramp).save(out["16bit"])

    out["palette"] = folder / "palette.png"
    pattern(seed=5).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(out["palette"])

    out["upright"] = folder / "upright.png"
    base.save(out["upright"])
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned; shown rotated 90 degrees clockwise
    out["rotated"] = folder / "rotated.png"
    base.transpose(Image.Transpose.ROTATE_90).save(out["rotated"], exif=exif)
    return out
