"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


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
