"""Packed (int8 / float16) language-model weights for the reranker on a CPU."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from mmsearch.config import Settings
from mmsearch.errors import ConfigurationError
from mmsearch.rerank import Reranker, load_vlm
from mmsearch.rerank.backends import Phi3VisionVLM
from mmsearch.rerank.budget import CostModel
from mmsearch.rerank.quantize import (
    PackedLinear,
    packed_weight_bytes,
    quantize_language_model,
)


@pytest.fixture(scope="module")
def unpacked(tiny_phi3v_dir: Path) -> Phi3VisionVLM:
    return Phi3VisionVLM.load(str(tiny_phi3v_dir), "cpu", torch.float32)


def _packed(tiny_phi3v_dir: Path, mode: str) -> Phi3VisionVLM:
    vlm = Phi3VisionVLM.load(str(tiny_phi3v_dir), "cpu", torch.float32)
    quantize_language_model(vlm.model, mode)  # type: ignore[arg-type]
    return vlm


@pytest.mark.parametrize(("mode", "tolerance"), [("int8", 0.03), ("float16", 1e-3)])
def test_a_packed_linear_computes_the_same_product(mode: str, tolerance: float) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    packed = PackedLinear(linear, mode)  # type: ignore[arg-type]
    x = torch.randn(2, 5, 96)
    with torch.inference_mode():
        expected = linear(x)
        got = packed(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert float((got - expected).abs().max() / expected.abs().max()) < tolerance


def test_packed_weights_take_a_quarter_or_half_of_the_bytes() -> None:
    linear = torch.nn.Linear(256, 128, bias=False)
    assert PackedLinear(linear, "float16").weight_bytes == 2 * 256 * 128
    assert PackedLinear(linear, "int8").weight_bytes < 256 * 128 * 4 / 3.5


@pytest.mark.parametrize("mode", ["int8", "float16"])
def test_only_the_language_model_is_packed(tiny_phi3v_dir: Path, mode: str) -> None:
    vlm = _packed(tiny_phi3v_dir, mode)
    lm = vlm.model.language_model
    assert not any(isinstance(m, torch.nn.Linear) for m in lm.modules())
    assert isinstance(lm.lm_head, PackedLinear)
    vision_linears = [m for m in vlm.model.vision.modules() if isinstance(m, torch.nn.Linear)]
    assert vision_linears and not any(
        isinstance(m, PackedLinear) for m in vlm.model.vision.modules()
    )


def test_float16_weights_rank_exactly_as_float32(
    unpacked: Phi3VisionVLM, tiny_phi3v_dir: Path, candidate_images: list[Path]
) -> None:
    packed = _packed(tiny_phi3v_dir, "float16")
    first = Reranker(unpacked, reason_max_chars=8, cell_size=32)
    second = Reranker(packed, reason_max_chars=8, cell_size=32)
    rng = random.Random(1)
    reordered = 0
    for _ in range(20):
        n = rng.randint(2, 12)
        cands = [(f"i{k}", str(candidate_images[k])) for k in rng.sample(range(24), n)]
        text = rng.choice(["red", "a cat", "blue sky", "green"])
        a = first.rerank(cands, text=text, with_reason=False)
        b = second.rerank(cands, text=text, with_reason=False)
        assert a.reranked and b.reranked
        assert a.ids == b.ids
        reordered += a.ids != [c[0] for c in cands]
    assert reordered > 0


def test_int8_weights_keep_every_permutation_guarantee(
    tiny_phi3v_dir: Path, candidate_images: list[Path]
) -> None:
    reranker = Reranker(_packed(tiny_phi3v_dir, "int8"), reason_max_chars=8, cell_size=32)
    rng = random.Random(2)
    for _ in range(15):
        n = rng.randint(2, 20)
        ids = [f"id{k}" for k in rng.sample(range(1000), n)]
        cands = list(zip(ids, (str(p) for p in rng.sample(candidate_images, n)), strict=True))
        result = reranker.rerank(cands, text="red", with_reason=rng.random() < 0.5)
        assert result.reranked, result.note
        assert sorted(result.ids) == sorted(ids)


@pytest.mark.parametrize(("mode", "bound"), [("int8", 0.25), ("float16", 1e-4)])
def test_packed_logits_stay_near_the_unpacked_ones(
    unpacked: Phi3VisionVLM, tiny_phi3v_dir: Path, candidate_images: list[Path], mode, bound
) -> None:  # noqa: ANN001
    packed = _packed(tiny_phi3v_dir, mode)
    reranker = Reranker(unpacked, cell_size=32)
    from mmsearch.rerank.pipeline import _open_candidate

    thumbs = [_open_candidate(str(p), 32, 1 << 26, 1 << 26) for p in candidate_images[:6]]
    inputs = unpacked._to_model(
        unpacked.build_inputs(reranker._messages(thumbs, None, "red", None))
    )
    with torch.inference_mode():
        a = unpacked.model(**inputs).logits[0, -1]
        b = packed.model(**inputs).logits[0, -1]
    assert float((a - b).abs().max() / a.abs().max()) < bound


def test_the_decoding_estimate_counts_the_packed_bytes(
    unpacked: Phi3VisionVLM, tiny_phi3v_dir: Path
) -> None:
    packed = _packed(tiny_phi3v_dir, "int8")
    assert packed_weight_bytes(packed.model) > 0
    full = CostModel(unpacked.model).rates()
    small = CostModel(packed.model).rates()
    assert full is not None and small is not None
    assert small.step_s < full.step_s


def test_the_setting_packs_the_loaded_reranker(tiny_phi3v_dir: Path, monkeypatch) -> None:  # noqa: ANN001
    from mmsearch.rerank import backends

    monkeypatch.setattr(backends, "_LOADED", {})
    settings = Settings(
        rerank_model=str(tiny_phi3v_dir),
        rerank_device="cpu",
        dtype="float32",
        rerank_quantize="float16",
    )
    vlm = load_vlm(settings)
    assert isinstance(vlm.model.language_model.lm_head, PackedLinear)


def test_packing_a_bfloat16_reranker_is_refused_before_loading(
    tiny_phi3v_dir: Path, monkeypatch
) -> None:  # noqa: ANN001
    from mmsearch.rerank import backends

    monkeypatch.setattr(backends, "_LOADED", {})
    loaded = []
    monkeypatch.setattr(
        backends.Phi3VisionVLM, "load", classmethod(lambda *a, **k: loaded.append(a))
    )
    settings = Settings(
        rerank_model=str(tiny_phi3v_dir),
        rerank_device="cpu",
        dtype="bfloat16",
        rerank_quantize="int8",
    )
    with pytest.raises(ConfigurationError, match="MMSEARCH_RERANK_QUANTIZE=int8.*float32"):
        load_vlm(settings)
    assert loaded == []


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown mode"):
        quantize_language_model(torch.nn.Linear(2, 2), "int4")  # type: ignore[arg-type]


def test_int8_quantizes_each_token_in_its_own_range() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32, bias=False)
    packed = PackedLinear(linear, "int8")
    x = torch.randn(2, 64) * 0.01
    loud = torch.randn(1, 64) * 1000  # a token of large activations beside quiet ones
    with torch.inference_mode():
        beside = packed(torch.cat([x, loud]))[:2]
        expected = linear(x)
    assert float((beside - expected).abs().max() / expected.abs().max()) < 0.03


@pytest.mark.parametrize("mode", ["int8", "float16"])
def test_packing_loads_from_the_half_precision_checkpoint_where_float32_would_not_fit(
    tiny_phi3v_dir: Path, monkeypatch, mode: str
) -> None:  # noqa: ANN001
    from mmsearch.errors import ModelLoadError
    from mmsearch.rerank import backends, budget

    half = budget.checkpoint_weight_bytes(tiny_phi3v_dir, torch.bfloat16, "bfloat16")
    full = budget.checkpoint_weight_bytes(tiny_phi3v_dir, torch.float32, "bfloat16")
    monkeypatch.setattr(budget, "available_memory", lambda: (half + full) // 2)
    monkeypatch.setattr(backends, "_LOADED", {})
    base = {"rerank_model": str(tiny_phi3v_dir), "rerank_device": "cpu", "dtype": "float32"}
    with pytest.raises(ModelLoadError, match="needs about.*MMSEARCH_RERANK_QUANTIZE=float16"):
        load_vlm(Settings(**base))
    vlm = load_vlm(Settings(**base, rerank_quantize=mode))
    assert {p.dtype for p in vlm.model.parameters()} == {torch.float32}
    assert isinstance(vlm.model.language_model.lm_head, PackedLinear)


def test_each_layer_is_freed_as_soon_as_it_is_packed(tiny_phi3v_dir: Path, monkeypatch) -> None:  # noqa: ANN001
    import gc
    import weakref

    from mmsearch.rerank import quantize

    vlm = Phi3VisionVLM.load(str(tiny_phi3v_dir), "cpu", torch.float32)
    earlier: list[weakref.ref] = []
    alive_at_each_step: list[int] = []

    class Watching(PackedLinear):
        def __init__(self, linear: torch.nn.Linear, mode) -> None:  # noqa: ANN001
            gc.collect()
            alive_at_each_step.append(sum(r() is not None for r in earlier))
            earlier.append(weakref.ref(linear.weight))
            super().__init__(linear, mode)

    monkeypatch.setattr(quantize, "PackedLinear", Watching)
    quantize_language_model(vlm.model, "int8")
    assert len(alive_at_each_step) > 4
    assert max(alive_at_each_step) <= 1  # at most the one being replaced right now
