"""``mmsearch eval --rerank-top N`` with the configured vision-language reranker (a tiny
random-weight Qwen2-VL) and the evaluation's default embedder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mmsearch.cli import cli
from mmsearch.config import Settings
from mmsearch.evaluation.cli import default_embedder, default_reranker
from mmsearch.evaluation.datasets import load_benchmark
from mmsearch.evaluation.datasets.base import Query
from mmsearch.rerank.pipeline import Reranker


@pytest.fixture
def reranker_env(
    tiny_vlm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, single_thread_torch: None
) -> None:
    monkeypatch.setenv("MMSEARCH_RERANK_MODEL", str(tiny_vlm_dir))
    monkeypatch.setenv("MMSEARCH_RERANK_DEVICE", "cpu")
    monkeypatch.setenv("MMSEARCH_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def rerank_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records every request the reranker model gets, then lets it answer."""
    calls: list[dict[str, Any]] = []
    original = Reranker.rerank

    def spy(self: Reranker, candidates: Any, text: Any = None, image: Any = None, **kw: Any) -> Any:
        result = original(self, candidates, text, image, **kw)
        calls.append(
            {"candidates": list(candidates), "text": text, "image": image, "result": result}
        )
        return result

    monkeypatch.setattr(Reranker, "rerank", spy)
    return calls


def test_the_default_reranker_returns_a_permutation_of_the_paths(
    cirr_dir: Path, reranker_env: None, rerank_calls: list[dict[str, Any]]
) -> None:
    bench = load_benchmark("cirr", cirr_dir)[0]
    query = bench.queries[0]
    paths = [str(p) for p in list(bench.gallery.values())[:4]]
    order = default_reranker(Settings())(query, paths)
    assert sorted(order) == sorted(paths)
    [call] = rerank_calls
    assert call["text"] == query.text and call["image"] == query.reference_path
    assert call["result"].reranked and order == call["result"].ids


def test_a_text_to_image_query_is_reranked_by_its_text_alone(
    flickr_dir: Path, reranker_env: None, rerank_calls: list[dict[str, Any]]
) -> None:
    bench = load_benchmark("flickr30k", flickr_dir)[0]
    paths = [str(p) for p in list(bench.gallery.values())[:3]]
    query = Query(id="q", text=bench.queries[0].text)
    assert sorted(default_reranker(Settings())(query, paths)) == sorted(paths)
    assert rerank_calls[0]["image"] is None


def test_eval_reranks_the_head_of_every_query_end_to_end(
    cirr_dir: Path,
    embedder: Any,
    tmp_path: Path,
    reranker_env: None,
    rerank_calls: list[dict[str, Any]],
) -> None:
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli,
        ["eval", "cirr", "--data-dir", str(cirr_dir), "--rerank-top", "3"]
        + ["--cache-dir", str(tmp_path / "c"), "--json-out", str(out)],
        obj={"embedder_factory": lambda settings: embedder},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["rerank_top"] == 3 and "rerank_top=3" in result.output
    assert set(report["metrics"]) >= {"R@1", "R@5", "Rs@1", "Avg"}
    assert len(rerank_calls) == report["queries"] == 3
    assert all(len(c["candidates"]) == 3 and c["result"].reranked for c in rerank_calls)


def test_rerank_top_beyond_what_the_reranker_takes_is_a_usage_error(
    cirr_dir: Path, embedder: Any, reranker_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMSEARCH_MAX_RERANK_CANDIDATES", "4")
    result = CliRunner().invoke(
        cli,
        ["eval", "cirr", "--data-dir", str(cirr_dir), "--rerank-top", "5"],
        obj={"embedder_factory": lambda settings: embedder},
    )
    assert result.exit_code == 2 and "MMSEARCH_MAX_RERANK_CANDIDATES=4" in result.output


def test_the_default_embedder_builds_the_configured_model(
    embedder_spec: str, single_thread_torch: None
) -> None:
    built = default_embedder(Settings(embed_model=embedder_spec, device="cpu", dtype="float32"))
    assert built.encode(texts=["a cat"]).shape == (1, built.dim)
