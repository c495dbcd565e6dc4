"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from mmsearch.testing.tiny import WRITERS


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with every tiny random-weight model in its own subfolder
    (``visual_bge/``, ...), as ``python -m mmsearch.testing.tiny DIR`` writes them."""
    root = tmp_path_factory.mktemp("tiny_checkpoints")
    for name, writer in WRITERS.items():
        writer(root / name)
    return root


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    """Real photographs: an astronaut, a coffee cup, a cat, a rocket launch."""
    return {
        name: Image.fromarray(np.asarray(getattr(data, name)()))
        for name in ("astronaut", "coffee", "chelsea", "rocket")
    }
