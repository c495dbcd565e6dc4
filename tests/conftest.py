"""Shared fixtures: real photos on disk, a store in a temporary folder, an embedder."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsearch.config import Settings
from mmsearch.library import ImageSearch

PHOTOS = {
    "astronaut.png": "astronaut",
    "coffee.jpg": "coffee",
    "chelsea.png": "chelsea",
    "rocket.jpg": "rocket",
    "camera.png": "camera",
}


class PixelHashEmbedder:
    """A small deterministic embedder for tests: images are a fixed random projection
    of 16x16 pixels, texts a sum of hashed token vectors, pairs the normalised sum.

    It only stands in for the protocol; nothing about retrieval quality is tested with it.
    """

    def __init__(self, dim: int = 32, model_id: str = "test-pixel-hash-v1") -> None:
        self.dim = dim
        self.model_id = model_id
        rng = np.random.default_rng(0)
        self._proj = rng.standard_normal((3 * 16 * 16, dim)).astype(np.float32)
        self.encode_calls = 0

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        if image.mode == "RGBA":
            bg = Image.new("RGB", image.size, (255, 255, 255))
            bg.paste(image, mask=image.getchannel("A"))
            image = bg
        small = image.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR)
        arr = np.asarray(small, dtype=np.float32) / 255.0 - 0.5
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())

    def _text_vec(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        for token in text.lower().split():
            seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")
            vec += np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return vec

    def encode(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[Image.Image | torch.Tensor] | None = None,
        *,
        batch_size: int | None = None,
    ) -> np.ndarray:
        self.encode_calls += 1
        rows = []
        if images is not None:
            for im in images:
                t = im if isinstance(im, torch.Tensor) else self.preprocess(im)
                rows.append(t.numpy().reshape(-1) @ self._proj)
        if texts is not None:
            tv = [self._text_vec(t) for t in texts]
            rows = [r + 0.5 * t for r, t in zip(rows, tv, strict=True)] if rows else tv
        out = np.stack(rows).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def photo_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skimage import data

    folder = tmp_path_factory.mktemp("photo_sources")
    for name, attr in PHOTOS.items():
        img = Image.fromarray(getattr(data, attr)())
        img.thumbnail((256, 256))  # keeps the suite fast; still real photographs
        img.save(folder / name)
    return folder


@pytest.fixture
def photos(tmp_path: Path, photo_sources: Path) -> Path:
    """A fresh folder holding the test photos (safe to modify)."""
    folder = tmp_path / "photos"
    shutil.copytree(photo_sources, folder)
    return folder


@pytest.fixture
def make_embedder() -> type[PixelHashEmbedder]:
    """Build more embedders (another model id or dimension) in a test."""
    return PixelHashEmbedder


@pytest.fixture
def embedder(make_embedder: type[PixelHashEmbedder]) -> PixelHashEmbedder:
    return make_embedder()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", batch_size=2, decode_workers=2)


@pytest.fixture
def engine(settings: Settings, embedder: PixelHashEmbedder) -> Iterator[ImageSearch]:
    lib = ImageSearch(settings, embedder_factory=lambda s: embedder)
    yield lib
    lib.close()
