"""The device and dtype settings mean the same thing for every model family."""

from __future__ import annotations

import pytest
import torch

from mmsearch.errors import ConfigurationError
from mmsearch.models import devices
from mmsearch.models.devices import native_bfloat16_cpu, resolve_device, resolve_dtype

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_is_the_family_half_precision_on_a_gpu_and_bfloat16_only_on_able_cpus(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(devices, "native_bfloat16_cpu", lambda: native)
    on_cpu = torch.bfloat16 if native else torch.float32
    assert resolve_dtype("auto", CPU, accelerator=torch.float16) is on_cpu
    assert resolve_dtype("auto", CUDA, accelerator=torch.bfloat16) is torch.bfloat16
    assert resolve_dtype("auto", CUDA, accelerator=torch.float16) is torch.float16
    assert resolve_dtype("float32", CPU, accelerator=torch.float16) is torch.float32


def test_named_dtypes_are_taken_as_given() -> None:
    assert resolve_dtype("bfloat16", CPU, accelerator=torch.float16) is torch.bfloat16
    assert resolve_dtype(torch.float16, CPU, accelerator=torch.float16) is torch.float16


@pytest.mark.parametrize("dtype", ["int8", "float64", "half", ""])
def test_other_dtypes_are_a_configuration_error(dtype: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown dtype"):
        resolve_dtype(dtype, CPU, accelerator=torch.float16)


def test_unknown_device_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown device"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="CUDA is not available"):
        resolve_device("cuda")


def test_native_bfloat16_follows_the_cpu_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert native_bfloat16_cpu() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert native_bfloat16_cpu() is True
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert native_bfloat16_cpu() is False
