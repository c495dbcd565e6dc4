"""Model families, one folder each: config, checkpoint loader and preprocessing side by side."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import nn

MODEL_BUILD_LOCK = threading.RLock()
"""Held while any model's modules are constructed. Models are built with storage-less
parameters by briefly patching ``nn.Module.register_parameter`` for the whole process
(:func:`parameters_on_meta`); a model built in another thread at that moment (the server
loads the embedder and the reranker lazily, possibly at once) would get storage-less
parameters too."""


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create parameters without storage, so that no time goes into random initial values
    the checkpoint replaces anyway, while buffers such as rotary frequencies are computed
    normally. Holds :data:`MODEL_BUILD_LOCK`."""
    with MODEL_BUILD_LOCK:
        # read under the lock: read before it, a waiting thread could take another
        # thread's patch for the original and restore that
        original = nn.Module.register_parameter

        def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
            original(module, name, param)
            if param is not None:
                p = module._parameters[name]
                module._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

        nn.Module.register_parameter = register  # type: ignore[method-assign]
        try:
            yield
        finally:
            nn.Module.register_parameter = original  # type: ignore[method-assign]


def allocate_parameters(module: nn.Module) -> None:
    """Give every storage-less parameter uninitialised CPU storage of its shape and dtype,
    for a strict ``load_state_dict`` to fill."""
    for sub in module.modules():
        for name, param in sub._parameters.items():
            if param is not None and param.is_meta:
                sub._parameters[name] = nn.Parameter(
                    torch.empty_like(param, device="cpu"), requires_grad=param.requires_grad
                )
