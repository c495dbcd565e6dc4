"""Building models in several threads at once (the server loads the embedder and the
reranker lazily, possibly at the same moment) must not let one model's storage-less
construction leak into another."""

from __future__ import annotations

import threading
from pathlib import Path

from torch import nn

from mmsearch.models import parameters_on_meta
from mmsearch.models.visual_bge import create_embedder


def test_embedder_built_while_phi3v_is_being_built_gets_real_parameters(
    tiny_checkpoints: Path,
) -> None:
    original = nn.Module.register_parameter
    built: list[object] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            built.append(create_embedder(tiny_checkpoints / "visual_bge", device="cpu"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    with parameters_on_meta():
        worker = threading.Thread(target=build)
        worker.start()
        worker.join(timeout=2.0)
        waited_for_the_lock = worker.is_alive()
    worker.join()
    assert waited_for_the_lock
    assert not errors, errors
    embedder = built[0]
    assert not any(p.is_meta for p in embedder.module.parameters())
    # the embedder is itself built storage-less: the thread that waited must not have
    # taken the other's patch for the original and left it in place
    assert nn.Module.register_parameter is original
