"""Where a model runs and in which precision: one reading of the ``device`` and ``dtype``
settings for every model family."""

from __future__ import annotations

import torch

from mmsearch.errors import ConfigurationError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto``: CUDA, else Apple's MPS, else the CPU. Anything else must name a device
    this machine has."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigurationError(f"unknown device {device!r}: {exc}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {device!r} asked for, but CUDA is not available")
    return resolved


def resolve_dtype(
    dtype: str | torch.dtype, device: torch.device, *, accelerator: torch.dtype
) -> torch.dtype:
    """``auto`` is float32 on the CPU and ``accelerator`` (the model family's half
    precision) elsewhere; otherwise one of :data:`DTYPES`."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else accelerator
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ConfigurationError(
            f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPES)}"
        ) from None
