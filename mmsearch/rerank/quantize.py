"""Smaller weights for the reranker's language model on a CPU (opt-in).

A decoding step reads every weight of the language model once, so on a CPU it is bound
by memory bandwidth: the full Phi-3 Vision reads about 15 GB per token in float32.
Two modes pack the language model's linear layers (decoder layers and output head; the
image encoder is left alone) into PyTorch's prepacked x86 (fbgemm) kernels:

- ``int8``: weights in int8, one scale per output channel; each call quantizes its
  activations on the fly to the 7-bit range the kernels need without VNNI, per token
  (each row is scaled to the same range first, since the kernel quantizes per tensor).
  About 4x fewer bytes per step and integer matrix products in the prompt pass.
- ``float16``: weights in float16, activations and accumulation in float32. Half the
  bytes; results within float16 rounding of the weights.

Weight-only int8 kernels were measured first and rejected on an AVX2-only CPU
(bench/README.md): ``torch._weight_int8pack_mm`` ran a 3072x8192 matrix-vector product
2x slower than float32, dequantizing in chunks only 1.35x faster. Both modes run on a CPU
with a float32 model only; the agreement with the unquantized model is measured by
``bench/rerank_latency.py --quantize`` and tested on the tiny checkpoints.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch

from mmsearch.errors import ConfigurationError

QuantizeMode = Literal["none", "int8", "float16"]
SETTING = "MMSEARCH_RERANK_QUANTIZE"


class PackedLinear(torch.nn.Module):
    """A :class:`torch.nn.Linear` whose weight is prepacked for the x86 kernels in
    int8 (per output channel) or float16; input and output stay float32."""

    def __init__(self, linear: torch.nn.Linear, mode: Literal["int8", "float16"]) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.mode = mode
        if mode == "int8":
            scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
            zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # quantized tensors are deprecated; the op is not
                warnings.simplefilter("ignore")
                q = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(q, None)
            self._bias = bias  # added after the per-token rescaling
            self.weight_bytes = weight.numel() + 8 * weight.shape[0]
        elif mode == "float16":
            self._packed = torch.ops.quantized.linear_prepack_fp16(weight, bias)
            self.weight_bytes = 2 * weight.numel()
        else:
            raise ValueError(f"unknown quantization mode {mode!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        if self.mode == "float16":
            return torch.ops.quantized.linear_dynamic_fp16(x, self._packed)
        # One range per token, not one per call: a token of large activations would
        # otherwise leave the others a few levels of the 7-bit range.
        scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12)
        y = torch.ops.quantized.linear_dynamic(x / scale, self._packed, True) * scale
        return y if self._bias is None else y + self._bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.mode}"


def language_model_linears(model: torch.nn.Module) -> list[str]:
    """Names of the linear layers that hold the language model's weights: those inside a
    submodule named ``language_model`` (ours and most ``transformers`` VLMs) and an
    ``lm_head`` beside it. The image encoder and projector stay outside."""
    prefixes = tuple(
        name + "."
        for name, _ in model.named_modules()
        if name.rsplit(".", 1)[-1] == "language_model"
    )
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and (name.startswith(prefixes) or name.rsplit(".", 1)[-1] == "lm_head")
    ]


def quantize_language_model(model: torch.nn.Module, mode: QuantizeMode) -> int:
    """Replace the language model's linear layers of ``model`` in place, then make the
    rest float32; returns how many were replaced. ``none`` changes nothing. The model
    must be on a CPU, in float32 or in its checkpoint's half precision (packed from it
    layer by layer, a float32 copy of the whole model never exists); anything else is a
    :class:`ConfigurationError` naming the setting."""
    if mode == "none":
        return 0
    if mode not in ("int8", "float16"):
        raise ConfigurationError(f"{SETTING}: unknown mode {mode!r} (none, int8 or float16)")
    param = next(model.parameters(), None)
    if param is None:
        raise ConfigurationError(f"{SETTING}: the model has no weights")
    check_target(mode, param.device, torch.float32)
    if param.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ConfigurationError(f"{SETTING}: cannot pack weights of {param.dtype}")
    names = language_model_linears(model)
    if not names:
        raise ConfigurationError(
            f"{SETTING}: cannot find the language model inside {type(model).__name__}"
        )
    # Names, not modules: each layer's weights are freed as soon as it is replaced, so
    # packing needs little more memory than the model it starts from.
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, PackedLinear(getattr(parent, attr), mode))
    model.float()
    return len(names)


def check_target(mode: QuantizeMode, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse, before any weight is loaded, a mode the device or dtype cannot run."""
    if mode == "none":
        return
    if device.type != "cpu" or dtype != torch.float32:
        raise ConfigurationError(
            f"{SETTING}={mode} packs weights for the CPU's x86 kernels and needs the reranker "
            f"on a CPU in float32 (here: {device.type}, {str(dtype).removeprefix('torch.')}); "
            f"set MMSEARCH_RERANK_DEVICE=cpu and MMSEARCH_DTYPE=float32, or unset {SETTING}"
        )
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise ConfigurationError(
            f"{SETTING}={mode} needs PyTorch's x86 (fbgemm) kernels, which this build or "
            f"CPU lacks; unset {SETTING}"
        )


def packed_weight_bytes(model: torch.nn.Module) -> int:
    return sum(m.weight_bytes for m in model.modules() if isinstance(m, PackedLinear))
