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


def native_bfloat16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (x86 AVX512-BF16 or AMX), so
    that bfloat16 products run about twice as fast as float32 ones rather than slower."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:  # pragma: no cover - a torch build without the probe's backend
            continue
    return False


def resolve_dtype(
    dtype: str | torch.dtype, device: torch.device, *, accelerator: torch.dtype
) -> torch.dtype:
    """``auto`` is ``accelerator`` (the model family's half precision) on a GPU; on the
    CPU, bfloat16 where it multiplies bfloat16 natively (:func:`native_bfloat16_cpu`)
    and float32 elsewhere. Otherwise one of :data:`DTYPES`."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type != "cpu":
            return accelerator
        return torch.bfloat16 if native_bfloat16_cpu() else torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ConfigurationError(
            f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPES)}"
        ) from None
