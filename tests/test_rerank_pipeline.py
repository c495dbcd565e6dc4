"""The rerank pipeline on a tiny random-weight Qwen2-VL (a transformers-native VLM)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from mmsearch.config import Settings
from mmsearch.errors import ImageDecodeError, InvalidQueryError, ModelLoadError, RerankError
from mmsearch.rerank import RerankCandidate, Reranker, detect_backend, load_vlm, rerank
from mmsearch.rerank.backends import Generation, Phi3VisionVLM, TransformersVLM
from mmsearch.rerank.constrained import parse_answer
from mmsearch.rerank.pipeline import TIMEOUT_SETTING


class Recording:
    """The wrapped model, with every generation kept for inspection."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.generations: list[tuple[dict[str, Any], Generation]] = []
        self.prompts: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def build_inputs(self, messages: Any) -> Any:
        self.prompts.append(messages)
        return self.inner.build_inputs(messages)

    def generate(self, inputs: Any, **kwargs: Any) -> Generation:
        generated = self.inner.generate(inputs, **kwargs)
        self.generations.append((kwargs, generated))
        return generated


class Broken(Recording):
    def generate(self, inputs: Any, **kwargs: Any) -> Generation:
        raise RuntimeError("CUDA out of memory")


def _reranker(model: Any, **kwargs: Any) -> Reranker:
    options: dict[str, Any] = {"reason_max_chars": 8, "cell_size": 32, "max_candidates": 20}
    return Reranker(model, **(options | kwargs))


def _adversarial_ids(rng: random.Random, n: int) -> list[str]:
    pool = [
        '"',
        "\\",
        '\\"',
        "'",
        "",
        " ",
        "\n",
        "null",
        "[]",
        '{"ranking": ["1"]}',
        "1",
        "2",
        "10",
        "01",
        "-1",
        "0",
        "\u0662",
        "\uff11",
        "\u00fc\u00df",
        "\U0001f600",
        "label 3",
        "x" * 5000,
    ]
    ids: list[str] = []
    while len(ids) < n:
        kind = rng.random()
        if kind < 0.4:
            candidate = rng.choice(pool)
        elif kind < 0.7:
            candidate = str(rng.randint(0, 25))
        else:
            candidate = "".join(
                rng.choice('"\\,[]{}1\u00e9\u4e2d ') for _ in range(rng.randint(1, 9))
            )
        if candidate not in ids:
            ids.append(candidate)
    return ids


def _candidates(ids: list[str], images: list[Path]) -> list[RerankCandidate]:
    return [RerankCandidate(id=i, path=str(images[k])) for k, i in enumerate(ids)]


def test_every_rerank_returns_each_candidate_exactly_once(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    reranker = _reranker(tiny_vlm)
    rng = random.Random(99)
    trials, reordered = 60, 0
    for _ in range(trials):
        ids = _adversarial_ids(rng, rng.randint(1, 20))
        images = rng.sample(candidate_images, len(ids))
        result = reranker.rerank(_candidates(ids, images), text=rng.choice(["red", "a cat", '"']))
        assert result.reranked, result.note
        assert sorted(result.ids) == sorted(ids) and len(result.ids) == len(ids)
        reordered += result.ids != ids
    assert reordered > 0


def test_labels_map_back_to_the_ids_in_input_order(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    model = Recording(tiny_vlm)
    ids = ["9", "b", "\\", "1", "x" * 300, '"', "7", "\u00e9", "8"]
    result = _reranker(model).rerank(_candidates(ids, candidate_images), text="red")
    [(_, generated)] = model.generations
    reranker = _reranker(tiny_vlm)
    labels = parse_answer(reranker.vocabulary.text_of(generated.token_ids), len(ids)).labels
    assert result.ids == [ids[int(label) - 1] for label in labels]


def test_query_image_is_captioned_before_ranking(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    model = Recording(tiny_vlm)
    reranker = _reranker(model, caption_max_new_tokens=6)
    result = reranker.rerank(
        _candidates(["a", "b", "c"], candidate_images), image=candidate_images[5]
    )
    assert result.reranked
    (caption_kwargs, caption), (rank_kwargs, _) = model.generations
    assert caption_kwargs["max_new_tokens"] == 6 and len(caption.token_ids) <= 6
    assert caption_kwargs.get("logits_processor") is None
    assert rank_kwargs["logits_processor"] is not None


def _images_in(messages: Any) -> list[Image.Image]:
    return [part["image"] for m in messages for part in m["content"] if part["type"] == "image"]


@pytest.mark.parametrize("input_mode", ["sheet", "images"])
def test_an_inline_query_image_goes_into_the_ranking_prompt_without_a_caption(
    tiny_vlm, candidate_images, input_mode
) -> None:  # noqa: ANN001
    model = Recording(tiny_vlm)
    reranker = _reranker(model, query_image="inline", input_mode=input_mode)
    query = candidate_images[5]
    result = reranker.rerank(_candidates(["a", "b", "c"], candidate_images), image=query)
    assert result.reranked, result.note
    [(kwargs, _)] = model.generations  # one generation: the ranking
    assert kwargs["logits_processor"] is not None
    images = _images_in(model.prompts[-1])
    assert len(images) == (2 if input_mode == "sheet" else 4)
    with Image.open(query) as original:
        assert images[0].getpixel((0, 0)) == original.convert("RGB").getpixel((0, 0))
    text = " ".join(
        part["text"] for m in model.prompts[-1] for part in m["content"] if part["type"] == "text"
    )
    assert "example image" in text and "described as" not in text


def test_the_query_image_is_inline_on_a_cpu_and_captioned_elsewhere(tiny_vlm) -> None:  # noqa: ANN001
    from types import SimpleNamespace

    from mmsearch.rerank.pipeline import default_query_image_mode

    assert _reranker(tiny_vlm, query_image="auto").query_image == "inline"
    on_gpu = SimpleNamespace(
        model=SimpleNamespace(device=torch.device("cuda", 0)), supports_multiple_images=True
    )
    assert default_query_image_mode(on_gpu) == "caption"  # type: ignore[arg-type]
    single = SimpleNamespace(model=tiny_vlm.model, supports_multiple_images=False)
    assert default_query_image_mode(single) == "caption"  # type: ignore[arg-type]


def test_inline_needs_a_model_that_takes_several_images(tiny_vlm) -> None:  # noqa: ANN001
    class OneImage(Recording):
        supports_multiple_images = False

    with pytest.raises(RerankError, match="MMSEARCH_RERANK_QUERY_IMAGE=caption"):
        _reranker(OneImage(tiny_vlm), query_image="inline")


def test_separate_images_input_also_yields_a_permutation(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    ids = [str(i) for i in range(12)]
    result = _reranker(tiny_vlm, input_mode="images").rerank(
        _candidates(ids, candidate_images), text="blue"
    )
    assert result.reranked and sorted(result.ids) == sorted(ids)


@contextmanager
def _slowed(vlm: Any, seconds_per_layer: float) -> Iterator[None]:
    """The model as a slow CPU runs it: every layer of every stack (vision encoder,
    decoder) takes ``seconds_per_layer`` longer."""
    handles = [
        layer.register_forward_pre_hook(lambda *_: time.sleep(seconds_per_layer))
        for stack in vlm.model.modules()
        if isinstance(stack, torch.nn.ModuleList)
        for layer in stack
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _calibrated(reranker: Reranker) -> Reranker:
    reranker.cost.rates()  # the one-off micro-benchmark, outside the timed call
    return reranker


def test_timeout_returns_the_retrieval_order_unreranked(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    model = Recording(tiny_vlm)
    ids = ["c", "a", "b", "d"]
    result = _reranker(model, timeout_s=1e-9).rerank(_candidates(ids, candidate_images), text="red")
    assert result.ids == ids and not result.reranked
    assert "timed out" in result.note and TIMEOUT_SETTING in result.note
    assert model.generations == []  # the deadline had passed before the model was asked


def test_the_deadline_covers_the_prompt_pass(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    model = Recording(tiny_vlm)
    ids = ["c", "a", "b", "d"]
    reranker = _calibrated(_reranker(model, timeout_s=1.0))
    per_layer = 0.25
    with _slowed(tiny_vlm, per_layer):
        result = reranker.rerank(_candidates(ids, candidate_images), text="red")
    assert result.ids == ids and not result.reranked
    assert "prompt pass" in result.note and TIMEOUT_SETTING in result.note
    [(_, generated)] = model.generations
    assert generated.timed_out and generated.token_ids == []  # stopped inside the prompt
    assert result.elapsed_s < 1.0 + 2 * per_layer + 0.5  # within a layer of the deadline


def test_timeout_while_captioning_returns_the_retrieval_order(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    ids = ["c", "a", "b"]
    reranker = _calibrated(_reranker(tiny_vlm, timeout_s=1.0))
    with _slowed(tiny_vlm, 0.25):
        result = reranker.rerank(_candidates(ids, candidate_images), image=candidate_images[0])
    assert result.ids == ids and not result.reranked and "captioning" in result.note


def test_a_rerank_estimated_not_to_fit_returns_at_once(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    model = Recording(tiny_vlm)
    ids = ["c", "a", "b", "d"]
    reranker = _reranker(model, timeout_s=60.0)
    # A previous call measured 2 s per prompt token: hundreds of tokens cannot fit in 60 s.
    reranker.cost.observe(prompt_tokens=10, prompt_s=20.0, new_tokens=5, decode_s=8.0)
    result = reranker.rerank(_candidates(ids, candidate_images), text="red")
    assert result.ids == ids and not result.reranked
    assert "estimated" in result.note
    assert TIMEOUT_SETTING in result.note and "MMSEARCH_RERANK_NUM_CROPS" in result.note
    assert "MMSEARCH_RERANK_QUANTIZE" in result.note  # a float32 model on a CPU
    assert model.generations == [] and result.elapsed_s < 10


def test_a_rerank_estimated_to_fit_runs(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    reranker = _reranker(tiny_vlm, timeout_s=60.0)
    reranker.cost.observe(prompt_tokens=1000, prompt_s=1.0, new_tokens=11, decode_s=0.1)
    ids = ["c", "a", "b", "d"]
    result = reranker.rerank(_candidates(ids, candidate_images), text="red")
    assert result.reranked and sorted(result.ids) == sorted(ids)
    assert reranker.cost.rates().source == "measured"  # the call replaced the estimate


def test_without_the_reason_decoding_stops_at_the_closed_ranking(
    tiny_vlm,  # noqa: ANN001
    candidate_images,  # noqa: ANN001
) -> None:
    ids = [f"id{i}" for i in range(9)]
    candidates = _candidates(ids, candidate_images)
    with_reason = Recording(tiny_vlm)
    full = _reranker(with_reason, reason_max_chars=40).rerank(candidates, text="red")
    short_model = Recording(tiny_vlm)
    short = _reranker(short_model, reason_max_chars=40).rerank(
        candidates, text="red", with_reason=False
    )
    assert full.reranked and short.reranked and short.reason == ""
    assert short.ids == full.ids  # greedy: the same ranking, without what follows it
    [(_, long_gen)] = with_reason.generations
    [(_, short_gen)] = short_model.generations
    # Decoding stopped on the token that closes the ranking (which may span past it).
    texts = [_vocab_text(tiny_vlm, [t]) for t in short_gen.token_ids]
    assert "]" in texts[-1] and not any("]" in t for t in texts[:-1])
    assert len(short_gen.token_ids) < len(long_gen.token_ids)
    assert long_gen.token_ids[: len(short_gen.token_ids)] == short_gen.token_ids


def _vocab_text(vlm: Any, token_ids: list[int]) -> str:
    from mmsearch.rerank.constrained import TokenVocabulary

    return TokenVocabulary(vlm.tokenizer, vlm.eos_token_id).text_of(token_ids)


def test_model_failure_returns_the_retrieval_order_unreranked(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    ids = ["c", "a", "b"]
    result = _reranker(Broken(tiny_vlm)).rerank(_candidates(ids, candidate_images), text="red")
    assert result.ids == ids and not result.reranked
    assert "CUDA out of memory" in result.note


def test_more_candidates_than_the_limit_is_an_invalid_query(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    ids = [str(i) for i in range(6)]
    with pytest.raises(InvalidQueryError, match="at most 5"):
        _reranker(tiny_vlm, max_candidates=5).rerank(_candidates(ids, candidate_images), text="x")


def test_duplicate_candidate_ids_are_an_invalid_query(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    with pytest.raises(InvalidQueryError, match="unique.*'a'"):
        _reranker(tiny_vlm).rerank(_candidates(["a", "b", "a"], candidate_images), text="x")


def test_no_candidates_is_an_invalid_query(tiny_vlm) -> None:  # noqa: ANN001
    with pytest.raises(InvalidQueryError, match="at least one candidate"):
        _reranker(tiny_vlm).rerank([], text="x")


def test_a_query_needs_text_or_an_image(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    with pytest.raises(InvalidQueryError, match="query text, a query image"):
        _reranker(tiny_vlm).rerank(_candidates(["a", "b"], candidate_images), text="  ")


def test_unreadable_query_image_is_a_decode_error(tiny_vlm, candidate_images, tmp_path) -> None:  # noqa: ANN001
    bad = tmp_path / "q.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match="q.png"):
        _reranker(tiny_vlm).rerank(_candidates(["a", "b"], candidate_images), image=bad)


def test_unreadable_candidate_is_still_ranked_and_noted(
    tiny_vlm, candidate_images, tmp_path
) -> None:  # noqa: ANN001
    candidates = _candidates(["a", "b"], candidate_images) + [
        RerankCandidate(id="gone", path=str(tmp_path / "missing.png"))
    ]
    result = _reranker(tiny_vlm).rerank(candidates, text="x")
    assert result.reranked and sorted(result.ids) == ["a", "b", "gone"]
    assert "unreadable candidate files: gone" in result.note


def test_a_single_candidate_comes_back_without_asking_the_model(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    model = Recording(tiny_vlm)
    result = _reranker(model).rerank(_candidates(["only"], candidate_images), text="x")
    assert result.ids == ["only"] and result.reranked and model.generations == []


def test_contact_sheet_is_saved_when_asked(tiny_vlm, candidate_images, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "sheet.png"
    _reranker(tiny_vlm).rerank(
        _candidates(list("abcde"), candidate_images), text="x", save_sheet=out
    )
    with Image.open(out) as sheet:
        assert sheet.size == (3 * 32 + 4 * 8, 2 * 32 + 3 * 8)


def test_candidates_may_be_search_hits_mappings_or_pairs(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    from mmsearch.types import SearchHit

    candidates = [
        SearchHit(id="hit", path=str(candidate_images[0]), score=0.5),
        {"id": "map", "path": str(candidate_images[1])},
        ("pair", candidate_images[2]),
    ]
    result = _reranker(tiny_vlm).rerank(candidates, text="x")
    assert sorted(result.ids) == ["hit", "map", "pair"]


def test_library_function_loads_the_configured_model_once(tiny_vlm_dir, candidate_images) -> None:  # noqa: ANN001
    settings = Settings(
        rerank_model=str(tiny_vlm_dir), rerank_device="cpu", rerank_reason_max_chars=8
    )
    assert load_vlm(settings) is load_vlm(settings)
    result = rerank(_candidates(["a", "b", "c"], candidate_images), text="red", settings=settings)
    assert result.reranked and result.model_id == str(tiny_vlm_dir)
    assert sorted(result.ids) == ["a", "b", "c"]


def test_library_function_rejects_bad_requests_before_loading_a_model(candidate_images) -> None:  # noqa: ANN001
    settings = Settings(rerank_model="/nonexistent/model", max_rerank_candidates=2)
    with pytest.raises(InvalidQueryError):
        rerank(_candidates(["a", "b", "c"], candidate_images), text="x", settings=settings)


def test_backend_is_detected_from_the_config_model_type(tiny_vlm_dir, tmp_path) -> None:  # noqa: ANN001
    assert detect_backend(str(tiny_vlm_dir)) == "transformers"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "phi3_v"}))
    assert detect_backend(str(tmp_path)) == "phi3v"


def test_model_directory_without_config_is_a_load_error(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ModelLoadError, match="config.json"):
        detect_backend(str(tmp_path))


def test_unloadable_model_is_a_load_error_saying_how_to_provide_it(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    with pytest.raises(ModelLoadError, match="MMSEARCH_RERANK_MODEL"):
        TransformersVLM.load(str(tmp_path), "cpu", torch.float32)


def test_phi3v_checkpoint_is_detected_as_the_phi3v_backend(tiny_phi3v_dir) -> None:  # noqa: ANN001
    assert detect_backend(str(tiny_phi3v_dir)) == "phi3v"


def test_phi3v_reranks_into_a_permutation(
    tiny_phi3v_dir, candidate_images, single_thread_torch
) -> None:  # noqa: ANN001
    model = Phi3VisionVLM.load(str(tiny_phi3v_dir), "cpu", torch.float32)
    reranker = _reranker(model)
    rng = random.Random(5)
    for n in (2, 9, 20):
        ids = _adversarial_ids(rng, n)
        result = reranker.rerank(
            _candidates(ids, candidate_images), text="red", image=candidate_images[3]
        )
        assert result.reranked, result.note
        assert sorted(result.ids) == sorted(ids)


def test_phi3v_is_what_the_default_settings_load(tiny_phi3v_dir, candidate_images) -> None:  # noqa: ANN001
    settings = Settings(rerank_model=str(tiny_phi3v_dir), rerank_device="cpu")
    assert isinstance(load_vlm(settings), Phi3VisionVLM)
    assert Settings().rerank_model == "microsoft/Phi-3-vision-128k-instruct"


@pytest.mark.parametrize("native", [True, False])
def test_reranker_on_the_cpu_is_bfloat16_only_where_the_cpu_has_it(
    tiny_phi3v_dir, candidate_images, single_thread_torch, monkeypatch, native
) -> None:  # noqa: ANN001
    from mmsearch.models import devices
    from mmsearch.rerank import backends

    monkeypatch.setattr(devices, "native_bfloat16_cpu", lambda: native)
    monkeypatch.setattr(backends, "_LOADED", {})
    settings = Settings(
        rerank_model=str(tiny_phi3v_dir), rerank_device="cpu", rerank_reason_max_chars=8
    )
    vlm = load_vlm(settings)
    expected = torch.bfloat16 if native else torch.float32
    assert {p.dtype for p in vlm.model.parameters()} == {expected}
    ids = ["a", "b", "c", "d"]
    result = _reranker(vlm).rerank(
        _candidates(ids, candidate_images), text="red", image=candidate_images[0]
    )
    assert result.reranked, result.note
    assert sorted(result.ids) == ids
