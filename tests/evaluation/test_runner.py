"""The runner end to end, with a test-double embedder whose rankings are known in advance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmsearch.errors import RerankError
from mmsearch.evaluation.cli import make_eval_command
from mmsearch.evaluation.datasets import load_benchmark
from mmsearch.evaluation.runner import RunOptions, format_table, rank_queries, run


def _options(tmp_path: Path, **kw: object) -> RunOptions:
    return RunOptions(cache_dir=tmp_path / "cache", batch_size=2, decode_workers=2, **kw)  # type: ignore[arg-type]


def test_cirr_metrics_follow_the_known_rankings(cirr_dir: Path, embedder, tmp_path: Path) -> None:
    report = run(embedder, load_benchmark("cirr", cirr_dir), _options(tmp_path))
    # target ranks over the gallery: 1, 2, 4; within the subset: 1, 1, 4
    assert report["metrics"] == {
        "R@1": 33.33,
        "R@5": 100.0,
        "R@10": 100.0,
        "R@50": 100.0,
        "Rs@1": 66.67,
        "Rs@2": 66.67,
        "Rs@3": 66.67,
        "Avg": 83.33,
    }
    assert (report["queries"], report["gallery"], report["exclude_reference"]) == (3, 7, True)


def test_cirr_reference_is_never_a_candidate(cirr_dir: Path, embedder, tmp_path: Path) -> None:
    bench = load_benchmark("cirr", cirr_dir)[0]
    options = _options(tmp_path)
    from mmsearch.evaluation.runner import embed_gallery, embed_queries

    gallery, _ = embed_gallery(embedder, list(bench.gallery.values()), options)
    queries = embed_queries(embedder, bench, bench.queries, options)
    ranked = rank_queries(bench, queries, gallery, bench.queries, 50, options)
    assert all(q.reference not in r for q, r in zip(bench.queries, ranked.top, strict=True))
    assert ranked.top[1][:2] == ["dev-4-0-img0", "dev-2-1-img1"]  # moon, then the target
    kept = rank_queries(
        bench, queries, gallery, bench.queries, 50, _options(tmp_path, exclude_reference=False)
    )
    assert kept.top[1][0] == "dev-1-0-img0"  # the reference itself, named first


def test_second_run_embeds_no_gallery_image(cirr_dir: Path, embedder, tmp_path: Path) -> None:
    benches = load_benchmark("cirr", cirr_dir)
    first = run(embedder, benches, _options(tmp_path))
    encoded = embedder.images_encoded
    second = run(embedder, benches, _options(tmp_path))
    assert (first["embedded_images"], first["cached_images"]) == (7, 0)
    assert (second["embedded_images"], second["cached_images"]) == (0, 7)
    assert embedder.images_encoded == encoded
    assert second["metrics"] == first["metrics"]


def test_an_interrupted_gallery_pass_resumes_from_the_cache(
    cirr_dir: Path, embedder, tmp_path: Path
) -> None:
    benches = load_benchmark("cirr", cirr_dir)
    embedder.fail_after_calls = 2  # two chunks of 3 images are stored, then the crash
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(embedder, benches, _options(tmp_path, cache_every=3))
    embedder.fail_after_calls = None
    report = run(embedder, benches, _options(tmp_path, cache_every=3))
    assert (report["embedded_images"], report["cached_images"]) == (1, 6)


def test_a_changed_image_file_is_embedded_again(
    cirr_dir: Path, embedder, photos, tmp_path: Path
) -> None:
    benches = load_benchmark("cirr", cirr_dir)
    run(embedder, benches, _options(tmp_path))
    photos["moon"].save(benches[0].gallery["dev-4-0-img0"])  # rewritten: new mtime
    import os

    st = os.stat(benches[0].gallery["dev-4-0-img0"])
    os.utime(benches[0].gallery["dev-4-0-img0"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert run(embedder, benches, _options(tmp_path))["embedded_images"] == 1


def test_reranking_reorders_the_head_of_each_ranking(
    cirr_dir: Path, embedder, tmp_path: Path
) -> None:
    calls = []

    def reverse(query, candidates):
        calls.append((query.id, list(candidates)))
        return list(reversed(candidates))

    report = run(
        embedder, load_benchmark("cirr", cirr_dir), _options(tmp_path, rerank=reverse, rerank_top=2)
    )
    # query 100 had the target first; reversed, it is second. Query 101 had it second: now first.
    assert report["metrics"]["R@1"] == 33.33
    assert report["rerank_top"] == 2
    assert [len(c) for _, c in calls] == [2, 2, 2]
    assert all(Path(p).is_file() for _, c in calls for p in c)


def test_a_reranker_that_drops_candidates_is_an_error(
    cirr_dir: Path, embedder, tmp_path: Path
) -> None:
    with pytest.raises(RerankError, match="permutation"):
        run(
            embedder,
            load_benchmark("cirr", cirr_dir),
            _options(tmp_path, rerank=lambda q, c: list(c)[:1], rerank_top=3),
        )


def test_reranking_without_a_reranker_is_an_error(cirr_dir: Path, embedder, tmp_path: Path) -> None:
    with pytest.raises(RerankError, match="no reranker"):
        run(embedder, load_benchmark("cirr", cirr_dir), _options(tmp_path, rerank_top=5))


def test_cirr_test_split_writes_the_server_submission_files(
    cirr_dir: Path, embedder, tmp_path: Path
) -> None:
    out = tmp_path / "submission"
    report = run(
        embedder, load_benchmark("cirr", cirr_dir, "test1"), _options(tmp_path, submission_dir=out)
    )
    assert "metrics" not in report
    recall = json.loads((out / "cirr_test1_recall.json").read_text())
    subset = json.loads((out / "cirr_test1_recall_subset.json").read_text())
    assert (recall["version"], recall["metric"]) == ("rc2", "recall")
    assert (subset["version"], subset["metric"]) == ("rc2", "recall_subset")
    assert (
        recall["100"][0] == "test1-2-1-img1" and len(recall["100"]) == 6
    )  # gallery minus reference
    assert len(subset["102"]) == 3 and "test1-2-1-img0" not in subset["102"]


def test_circo_map_uses_all_ground_truths(circo_dir: Path, embedder, tmp_path: Path) -> None:
    report = run(embedder, load_benchmark("circo", circo_dir), _options(tmp_path))
    # query 0 ranks rocket, astronaut, coffee, chelsea: AP = (1 + 1 + 3/4) / 3; query 1 finds
    # its single ground truth second: AP = 1/2
    expected = round(100 * ((1 + 1 + 0.75) / 3 + 0.5) / 2, 2)
    m = report["metrics"]
    assert m["mAP@5"] == m["mAP@10"] == m["mAP@25"] == m["mAP@50"] == expected
    assert m["R@5"] == 100.0


def test_the_query_template_can_use_circo_shared_concept(
    circo_dir: Path, embedder, tmp_path: Path
) -> None:
    opts = _options(tmp_path, query_template="{shared_concept} {text}", limit=None)
    report = run(embedder, load_benchmark("circo", circo_dir), opts)
    # query 1 now names coffee, its ground truth, first
    assert report["metrics"]["mAP@5"] == round(100 * ((1 + 1 + 0.75) / 3 + 1.0) / 2, 2)


def test_circo_test_split_writes_integer_ids_top_50(
    circo_dir: Path, embedder, tmp_path: Path
) -> None:
    out = tmp_path / "sub"
    run(
        embedder, load_benchmark("circo", circo_dir, "test"), _options(tmp_path, submission_dir=out)
    )
    body = json.loads((out / "circo_test.json").read_text())
    assert set(body) == {"0", "1"}
    assert body["0"][0] == 375057 and all(isinstance(i, int) for i in body["0"])


def test_fashioniq_reports_each_category_and_the_mean(
    fashioniq_dir: Path, embedder, tmp_path: Path
) -> None:
    report = run(embedder, load_benchmark("fashioniq", fashioniq_dir), _options(tmp_path))
    # in each category one target is found, the other is missing from the gallery
    for cat in ("dress", "shirt", "toptee"):
        assert report["categories"][cat]["metrics"] == {"R@10": 50.0, "R@50": 50.0}
    assert report["metrics"] == {"R@10": 50.0, "R@50": 50.0, "Avg": 50.0}


def test_text_to_image_recall(flickr_dir: Path, embedder, tmp_path: Path) -> None:
    report = run(embedder, load_benchmark("flickr30k", flickr_dir), _options(tmp_path))
    assert report["metrics"] == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0}
    assert report["queries"] == 20


def test_progress_reports_every_stage(flickr_dir: Path, embedder, tmp_path: Path) -> None:
    seen: dict[str, tuple[int, int]] = {}
    run(
        embedder,
        load_benchmark("flickr30k", flickr_dir),
        _options(tmp_path, progress=lambda s, d, t: seen.__setitem__(s, (d, t))),
    )
    assert seen == {"gallery": (4, 4), "queries": (20, 20)}


def test_table_layouts_follow_the_papers(
    cirr_dir, fashioniq_dir, circo_dir, coco_dir, embedder, tmp_path
) -> None:
    opts = _options(tmp_path)
    cirr = format_table(run(embedder, load_benchmark("cirr", cirr_dir), opts)).splitlines()
    assert cirr[1].split() == [
        "R@1",
        "R@5",
        "R@10",
        "R@50",
        "|",
        "Rs@1",
        "Rs@2",
        "Rs@3",
        "|",
        "Avg",
    ]
    assert cirr[2].split() == [
        "33.33",
        "100.00",
        "100.00",
        "100.00",
        "|",
        "66.67",
        "66.67",
        "66.67",
        "|",
        "83.33",
    ]
    fiq = format_table(run(embedder, load_benchmark("fashioniq", fashioniq_dir), opts)).splitlines()
    assert fiq[1].split("  ")[0].strip() == "dress R@10"
    assert "mean R@10" in fiq[1] and fiq[1].rstrip().endswith("Avg")
    circo = format_table(run(embedder, load_benchmark("circo", circo_dir), opts)).splitlines()
    assert circo[1].split() == ["mAP@5", "mAP@10", "mAP@25", "mAP@50"]
    coco = format_table(run(embedder, load_benchmark("coco", coco_dir), opts)).splitlines()
    assert coco[1].split() == ["R@1", "R@5", "R@10"]


def test_cli_prints_the_table_and_writes_the_json_report(
    cirr_dir: Path, embedder, tmp_path: Path
) -> None:
    command = make_eval_command(build_embedder=lambda settings: embedder)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        command,
        [
            "cirr",
            "--data-dir",
            str(cirr_dir),
            "--json-out",
            str(out),
            "--cache-dir",
            str(tmp_path / "c"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "R@1" in result.output and "83.33" in result.output
    assert json.loads(out.read_text())["metrics"]["Avg"] == 83.33


def test_cli_reports_a_missing_file_clearly(tmp_path: Path, embedder) -> None:
    command = make_eval_command(build_embedder=lambda settings: embedder)
    result = CliRunner().invoke(command, ["circo", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "missing file" in result.output and "annotations/val.json" in result.output


def test_cli_refuses_rerank_without_a_reranker(cirr_dir: Path, embedder, tmp_path: Path) -> None:
    command = make_eval_command(build_embedder=lambda settings: embedder)
    result = CliRunner().invoke(command, ["cirr", "--data-dir", str(cirr_dir), "--rerank-top", "5"])
    assert result.exit_code == 2 and "needs a reranker" in result.output
