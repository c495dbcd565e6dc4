"""``mmsearch eval``: measure retrieval quality on a benchmark the user downloaded.

The command is built by :func:`make_eval_command` so the main CLI can inject how the
embedder and the reranker are created; :data:`eval_command` is the default, which builds
the embedder from ``Settings.embed_model`` and has no reranker; the ``mmsearch`` command
passes :func:`default_reranker`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mmsearch.config import Settings
from mmsearch.embedding import ImageTextEmbedder
from mmsearch.errors import MMSearchError
from mmsearch.evaluation.datasets import BENCHMARKS, FASHIONIQ_CATEGORIES, load_benchmark
from mmsearch.evaluation.datasets.base import Query
from mmsearch.evaluation.runner import RerankFn, RunOptions, format_table, run

logger = logging.getLogger(__name__)

EmbedderFactory = Callable[[Settings], ImageTextEmbedder]
RerankerFactory = Callable[[Settings], RerankFn]


def default_embedder(settings: Settings) -> ImageTextEmbedder:
    """The Visualized BGE model of ``settings.embed_model`` (the library's own factory)."""
    from mmsearch.library import default_embedder_factory

    return default_embedder_factory(settings)


def default_reranker(settings: Settings) -> RerankFn:
    """The configured vision-language reranker (``MMSEARCH_RERANK_*``), as the runner
    calls it: ``rerank(query, candidate_paths) -> the paths, best first``.

    Candidates are identified by their paths; the query gives its text and, for composed
    queries, its reference image. A query the model fails on (or times out on) keeps the
    retrieval order, as in search, with a warning naming the query and the reason."""
    from mmsearch.rerank.pipeline import Reranker

    reranker = Reranker.from_settings(settings)

    def rerank(query: Query, paths: list[str]) -> list[str]:
        result = reranker.rerank(
            [(path, path) for path in paths],
            text=query.text or None,
            image=query.reference_path,
        )
        if not result.reranked:
            logger.warning("query %s kept the retrieval order: %s", query.id, result.note)
        return list(result.ids)

    return rerank


def _progress_bar() -> tuple[Callable[[str, int, int], None], Callable[[], None]]:
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(
                total=total,
                desc=stage,
                unit="img" if stage == "gallery" else "q",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del bars[stage]

    def close() -> None:
        for bar in bars.values():
            bar.close()
        bars.clear()

    return progress, close


def make_eval_command(
    build_embedder: EmbedderFactory = default_embedder,
    build_reranker: RerankerFactory | None = None,
    settings_factory: Callable[[], Settings] = Settings,
) -> click.Command:
    @click.command("eval")
    @click.argument("benchmark", type=click.Choice(BENCHMARKS, case_sensitive=False))
    @click.option(
        "--data-dir",
        required=True,
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="Directory holding the benchmark in its official layout.",
    )
    @click.option(
        "--split",
        default=None,
        help="Split to evaluate (default: val; test for flickr30k/coco; CIRR: val or test1).",
    )
    @click.option(
        "--category",
        "categories",
        multiple=True,
        type=click.Choice(FASHIONIQ_CATEGORIES),
        help="FashionIQ category (repeatable; default: all three).",
    )
    @click.option(
        "--rerank-top",
        default=0,
        show_default=True,
        type=click.IntRange(min=0),
        help="Rerank this many top candidates per query with the reranker.",
    )
    @click.option(
        "--json-out",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Write the JSON report here.",
    )
    @click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Gallery embedding cache (default: eval-cache/ in MMSEARCH_DATA_DIR).",
    )
    @click.option(
        "--submission-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Where test-split prediction files for the evaluation servers go (default: .).",
    )
    @click.option(
        "--query-template",
        default="{text}",
        show_default=True,
        help="Query text; {text} is the modification text or caption, CIRCO adds {shared_concept}.",
    )
    @click.option(
        "--keep-reference",
        is_flag=True,
        help="Keep the reference image among the candidates (CIRR/CIRCO remove it by default).",
    )
    @click.option(
        "--limit",
        type=click.IntRange(min=1),
        help="Evaluate only the first N queries (smoke test; numbers not comparable).",
    )
    def eval_command(
        benchmark: str,
        data_dir: Path,
        split: str | None,
        categories: tuple[str, ...],
        rerank_top: int,
        json_out: Path | None,
        cache_dir: Path | None,
        submission_dir: Path | None,
        query_template: str,
        keep_reference: bool,
        limit: int | None,
    ) -> None:
        """Measure retrieval quality on BENCHMARK (cirr, fashioniq, circo, flickr30k, coco)."""
        progress, close = _progress_bar()
        try:
            settings = settings_factory()
            benchmarks = load_benchmark(benchmark.lower(), data_dir, split, categories)
            reranker = None
            if rerank_top:
                if build_reranker is None:
                    raise click.UsageError("--rerank-top needs a reranker, and none is configured")
                if rerank_top > settings.max_rerank_candidates:
                    raise click.UsageError(
                        f"--rerank-top {rerank_top} is more than the reranker takes at once "
                        f"(MMSEARCH_MAX_RERANK_CANDIDATES={settings.max_rerank_candidates})"
                    )
                reranker = build_reranker(settings)
            embedder = build_embedder(settings)
            options = RunOptions(
                cache_dir=cache_dir or settings.data_dir / "eval-cache",
                batch_size=settings.batch_size,
                decode_workers=settings.decode_workers,
                rerank=reranker,
                rerank_top=rerank_top,
                query_template=query_template,
                exclude_reference=False if keep_reference else None,
                submission_dir=submission_dir or Path.cwd(),
                limit=limit,
                progress=progress,
            )
            report = run(embedder, benchmarks, options)
        except MMSearchError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            close()
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(report, indent=2))
        click.echo(format_table(report))

    return eval_command


eval_command = make_eval_command()
