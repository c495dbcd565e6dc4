"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from tiny_models import write_tiny_qwen2vl, write_tiny_text_lm

from mmsearch.testing.tiny import WRITERS


@pytest.fixture(scope="session")
def tiny_phi3v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Phi-3 Vision checkpoint in the official layout (56 px tiles)."""
    from mmsearch.testing.tiny_phi3v import write_tiny_phi3v

    return write_tiny_phi3v(tmp_path_factory.mktemp("phi3v"), seed=0)


@pytest.fixture(scope="session")
def tiny_phi3v(tiny_phi3v_dir: Path):
    """(model, processor) loaded from the tiny checkpoint, on the CPU in float32."""
    from mmsearch.models.phi3v import load_phi3v

    return load_phi3v(tiny_phi3v_dir, device="cpu", dtype="float32")


# --- reranker -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def single_thread_torch() -> Iterator[None]:
    """Tiny models run several times faster on one thread than fighting over shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_text_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_text_lm(tmp_path_factory.mktemp("tiny-text-lm"))


@pytest.fixture(scope="session")
def tiny_text_lm(tiny_text_lm_dir: Path, single_thread_torch: None):  # noqa: ANN201
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_text_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_text_lm_dir).eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


@pytest.fixture(scope="session")
def tiny_vlm(tiny_vlm_dir: Path, single_thread_torch: None):  # noqa: ANN201
    from mmsearch.rerank.backends import TransformersVLM

    return TransformersVLM.load(str(tiny_vlm_dir), "cpu", torch.float32)


@pytest.fixture(scope="session")
def candidate_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """24 small solid-colour PNGs, all different."""
    folder = tmp_path_factory.mktemp("candidates")
    paths = []
    for i in range(24):
        path = folder / f"c{i:02d}.png"
        colour = ((i * 53) % 256, (i * 97 + 40) % 256, (255 - i * 11) % 256)
        Image.new("RGB", (40 + 3 * i, 30 + 2 * i), colour).save(path)
        paths.append(path)
    return paths


# --- embedder ---------------------------------------------------------------------------


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
