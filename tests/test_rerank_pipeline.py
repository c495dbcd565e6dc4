"""The rerank pipeline on a tiny random-weight Qwen2-VL (a transformers-native VLM)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from mmsearch.config import Settings
from mmsearch.errors import ImageDecodeError, InvalidQueryError, ModelLoadError
from mmsearch.rerank import RerankCandidate, Reranker, detect_backend, load_vlm, rerank
from mmsearch.rerank.backends import Generation, Phi3VisionVLM, TransformersVLM
from mmsearch.rerank.constrained import parse_answer


class Recording:
    """The wrapped model, with every generation kept for inspection."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.generations: list[tuple[dict[str, Any], Generation]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def build_inputs(self, messages: Any) -> Any:
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


def test_separate_images_input_also_yields_a_permutation(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    ids = [str(i) for i in range(12)]
    result = _reranker(tiny_vlm, input_mode="images").rerank(
        _candidates(ids, candidate_images), text="blue"
    )
    assert result.reranked and sorted(result.ids) == sorted(ids)


def test_timeout_returns_the_retrieval_order_unreranked(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    model = Recording(tiny_vlm)
    ids = ["c", "a", "b", "d"]
    result = _reranker(model, timeout_s=1e-9).rerank(_candidates(ids, candidate_images), text="red")
    assert result.ids == ids and not result.reranked
    assert "timed out" in result.note
    [(_, generated)] = model.generations
    assert generated.timed_out and len(generated.token_ids) == 1


def test_timeout_while_captioning_returns_the_retrieval_order(tiny_vlm, candidate_images) -> None:  # noqa: ANN001
    ids = ["c", "a", "b"]
    result = _reranker(tiny_vlm, timeout_s=1e-9).rerank(
        _candidates(ids, candidate_images), image=candidate_images[0]
    )
    assert result.ids == ids and not result.reranked and "captioning" in result.note


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
