"""Pieces shared by the index job tests: an embedder whose image batches wait for the
test's go-ahead, and folders of distinct small images."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


class GatedEmbedder:
    """Wraps an embedder; each image batch waits until the test releases it, so a test
    decides how far a job gets. Text queries pass freely (searches during a job)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model_id: str = inner.model_id
        self.dim: int = inner.dim
        self.gate = threading.Semaphore(0)
        self.waiting = threading.Semaphore(0)
        """Released once per image batch that reached the gate."""
        self.image_batches = 0

    def preprocess(self, image: Image.Image) -> Any:
        return self.inner.preprocess(image)

    def encode(self, texts=None, images=None, *, batch_size=None) -> np.ndarray:  # noqa: ANN001
        if images is not None:
            self.waiting.release()
            if not self.gate.acquire(timeout=60):
                raise TimeoutError("the test never released this batch")
            self.image_batches += 1
        return self.inner.encode(texts=texts, images=images, batch_size=batch_size)

    def open(self, batches: int = 1_000_000) -> None:
        """Let ``batches`` more image batches through (default: all)."""
        self.gate.release(batches)

    def reached(self, timeout: float = 60) -> None:
        """Block until an image batch is waiting at the gate."""
        assert self.waiting.acquire(timeout=timeout), "no batch reached the gate"


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` distinct 24x24 noise PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths
