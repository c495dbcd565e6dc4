"""Before the reranker runs: the crop count it is loaded with, and whether it fits in
memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmsearch.config import Settings
from mmsearch.errors import ModelLoadError
from mmsearch.rerank import backends, budget
from mmsearch.rerank.backends import Phi3VisionVLM, default_num_crops, load_vlm
from mmsearch.rerank.budget import CostModel, checkpoint_weight_bytes


def _weights_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


def test_a_model_larger_than_the_free_memory_is_refused_naming_the_settings(
    tiny_phi3v_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "available_memory", lambda: _weights_bytes(tiny_phi3v_dir) // 2)
    with pytest.raises(ModelLoadError) as err:
        Phi3VisionVLM.load(str(tiny_phi3v_dir), "cpu", torch.float32)
    message = str(err.value)
    for setting in ("MMSEARCH_RERANK_MODEL", "MMSEARCH_DTYPE", "MMSEARCH_RERANK_MEMORY_CHECK"):
        assert setting in message
    assert "GiB" in message


def test_a_model_that_fits_loads_and_the_check_can_be_turned_off(
    tiny_phi3v_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = _weights_bytes(tiny_phi3v_dir)
    monkeypatch.setattr(budget, "available_memory", lambda: weights * 4)
    Phi3VisionVLM.load(str(tiny_phi3v_dir), "cpu", torch.float32)
    monkeypatch.setattr(budget, "available_memory", lambda: 1)
    Phi3VisionVLM.load(str(tiny_phi3v_dir), "cpu", torch.float32, memory_check=False)


def test_the_weight_estimate_scales_with_the_dtype(tiny_phi3v_dir: Path) -> None:
    stored = "float32"  # the tiny checkpoint is written in float32
    f32 = checkpoint_weight_bytes(tiny_phi3v_dir, torch.float32, stored)
    bf16 = checkpoint_weight_bytes(tiny_phi3v_dir, torch.bfloat16, stored)
    assert f32 == _weights_bytes(tiny_phi3v_dir) and bf16 == f32 // 2


def test_num_crops_setting_reaches_the_processor(
    tiny_phi3v_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "_LOADED", {})
    base = {"rerank_model": str(tiny_phi3v_dir), "rerank_device": "cpu", "dtype": "float32"}
    chosen = load_vlm(Settings(**base, rerank_num_crops=1))
    default = load_vlm(Settings(**base))
    assert chosen.processor.image_processor.num_crops == 1
    assert default.processor.image_processor.num_crops == backends.CPU_NUM_CROPS


def test_gpus_keep_the_checkpoints_crop_count() -> None:
    assert default_num_crops(torch.device("cuda")) is None
    assert default_num_crops(torch.device("cpu")) == backends.CPU_NUM_CROPS


def test_cost_model_estimates_from_measured_rates() -> None:
    cost = CostModel(torch.nn.Linear(64, 64))
    cost.observe(prompt_tokens=100, prompt_s=5.0, new_tokens=11, decode_s=2.0)
    assert cost.estimate(1000, 21) == pytest.approx(1000 * 0.05 + 21 * 0.2)


def test_cost_model_calibrates_on_the_cpu() -> None:
    rates = CostModel(torch.nn.Linear(3072, 3072)).rates()
    assert rates is not None and rates.source == "calibrated"
    assert 0 < rates.prompt_s_per_token < 1 and 0 < rates.step_s < 1
