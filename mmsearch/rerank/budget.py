"""Will a rerank finish in time, and does the model fit in memory? Both asked before
the work starts, so that a slow or small machine gets a clear answer at once instead of
minutes of computing or a swapping machine.

Time: a prompt pass is matrix products over every prompt token (image tokens included),
a decoding step reads every weight once. On a CPU the first estimate comes from this
machine's measured matrix-multiply speed and copy bandwidth (a second of micro-benchmarks,
once per process); every finished generation then replaces it with the rates it measured.
The estimate leaves out attention and the image encoder's own cost, so it errs on the
fast side: a rerank refused by it could not have finished. On GPUs no estimate is made
(the deadline is still checked between layers).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from mmsearch.errors import ModelLoadError

logger = logging.getLogger(__name__)

MEMORY_HEADROOM = 1.15
"""Loading needs the weights plus activations, the KV cache and the runtime's own
memory: at least 15 % more than the weights."""


@dataclass(frozen=True, slots=True)
class Rates:
    prompt_s_per_token: float
    step_s: float
    source: str
    """``calibrated`` (micro-benchmarks) or ``measured`` (a previous generation)."""


def _best_of(repeats: int, run: Any) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


@lru_cache(maxsize=8)
def matmul_flops(dtype: torch.dtype, tokens: int = 512, repeats: int = 3) -> float:
    """Best FLOP/s of a ``tokens`` x 3072 x 8192 matrix product (the language model's
    MLP shape) on this CPU: what bounds the prompt pass."""
    a = torch.randn(tokens, 3072).to(dtype)
    w = torch.randn(8192, 3072).to(dtype)
    seconds = _best_of(repeats, lambda: torch.nn.functional.linear(a, w))
    return 2 * tokens * 3072 * 8192 / seconds


@lru_cache(maxsize=4)
def copy_bandwidth(n_bytes: int = 1 << 28, repeats: int = 3) -> float:
    """Best bytes/s (read + written) of an ``n_bytes`` copy on this machine: a decoding
    step reads every weight once, so it goes no faster than its bytes at this rate."""
    src = torch.ones(n_bytes // 4)
    dst = torch.empty_like(src)
    seconds = _best_of(repeats, lambda: dst.copy_(src))
    return 2 * n_bytes / seconds


PACKED_PROMPT_SPEEDUP = {"int8": 1.9, "float16": 1.1}
"""Prompt-pass speed of packed weights over float32, measured at the language model's
MLP shape on an AVX2 CPU (bench/README.md); estimates may only err low."""


def _linear_weights(model: torch.nn.Module) -> tuple[float, int, torch.dtype]:
    """Float32-equivalent parameters of the linear layers (packed ones counted at their
    measured prompt speed-up), the bytes a decoding step reads, and the float dtype."""
    from mmsearch.rerank.quantize import PackedLinear

    params = 0.0
    n_bytes = 0
    dtype = torch.float32
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            params += m.weight.numel()
            n_bytes += m.weight.numel() * m.weight.element_size()
            dtype = m.weight.dtype
        elif isinstance(m, PackedLinear):
            params += m.in_features * m.out_features / PACKED_PROMPT_SPEEDUP[m.mode]
            n_bytes += m.weight_bytes
    return params, n_bytes, dtype


class CostModel:
    """Seconds a generation will take on one loaded model (``None``: no estimate)."""

    def __init__(self, model: torch.nn.Module | None) -> None:
        self._model = model
        self._rates: Rates | None = None
        self._calibrated = False

    def rates(self) -> Rates | None:
        if self._rates is None and not self._calibrated:
            self._calibrated = True
            self._rates = self._calibrate()
        return self._rates

    def _calibrate(self) -> Rates | None:
        model = self._model
        if model is None:
            return None
        try:
            device = next(model.parameters()).device
        except StopIteration:
            return None
        if device.type != "cpu":
            return None
        params, n_bytes, dtype = _linear_weights(model)
        if params == 0:
            return None
        flops = matmul_flops(dtype)
        bandwidth = copy_bandwidth()
        rates = Rates(
            prompt_s_per_token=2 * params / flops,
            step_s=n_bytes / bandwidth,
            source="calibrated",
        )
        logger.info(
            "reranker cost on this CPU: %.0f GFLOP/s, %.1f GB/s -> %.3f s per prompt token, "
            "%.2f s per new token",
            flops / 1e9,
            bandwidth / 1e9,
            rates.prompt_s_per_token,
            rates.step_s,
        )
        return rates

    def observe(
        self, prompt_tokens: int, prompt_s: float | None, new_tokens: int, decode_s: float | None
    ) -> None:
        """Replace the estimate by what a finished generation measured."""
        if prompt_s is None or prompt_tokens <= 0:
            return
        current = self.rates()
        step = current.step_s if current is not None else 0.0
        if decode_s is not None and new_tokens > 1:
            step = decode_s / (new_tokens - 1)
        self._rates = Rates(prompt_s / prompt_tokens, step, "measured")
        self._calibrated = True

    def estimate(self, prompt_tokens: int, new_tokens: int) -> float | None:
        rates = self.rates()
        if rates is None:
            return None
        return prompt_tokens * rates.prompt_s_per_token + new_tokens * rates.step_s


# --- memory -------------------------------------------------------------------------


def available_memory() -> int | None:
    """Bytes the system can give without swapping (``MemAvailable``); ``None`` where
    unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def device_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (system memory for the CPU)."""
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError):
            return None
        return int(free)
    if device.type == "cpu":
        return available_memory()
    return None


_STORED_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def checkpoint_weight_bytes(directory: Path, dtype: torch.dtype, stored: str | None) -> int:
    """Bytes the checkpoint's weights take once loaded in ``dtype``: the weight files'
    size scaled from the stored precision (``torch_dtype`` of config.json)."""
    files = [*directory.glob("*.safetensors"), *directory.glob("*.bin")]
    on_disk = sum(f.stat().st_size for f in files)
    stored_bytes = _STORED_BYTES.get(str(stored), 2)
    target = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 1
    return on_disk * target // stored_bytes


def check_memory(needed: int, device: torch.device, what: str) -> None:
    """Refuse to load when ``needed`` bytes (plus headroom) exceed what ``device`` has
    free, naming the settings that make the model smaller."""
    free = device_memory(device)
    if free is None or needed <= 0:
        return
    want = int(needed * MEMORY_HEADROOM)
    if want > free:
        gib = 1024**3
        raise ModelLoadError(
            f"{what} needs about {want / gib:.1f} GiB on {device} and only "
            f"{free / gib:.1f} GiB is available: loading it would swap or be killed. "
            "Use a smaller model (MMSEARCH_RERANK_MODEL), half precision where the device "
            "supports it (MMSEARCH_DTYPE=bfloat16), "
            + (
                "packed weights on this CPU (MMSEARCH_RERANK_QUANTIZE=float16 or int8), "
                if device.type == "cpu"
                else ""
            )
            + "a GPU (MMSEARCH_RERANK_DEVICE), or free "
            "memory; MMSEARCH_RERANK_MEMORY_CHECK=false skips this check."
        )
