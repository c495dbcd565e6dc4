"""Readers for the official annotation layouts of each benchmark."""

from __future__ import annotations

from pathlib import Path

from mmsearch.errors import DatasetError
from mmsearch.evaluation.datasets.base import Benchmark, Query
from mmsearch.evaluation.datasets.circo import load_circo
from mmsearch.evaluation.datasets.cirr import load_cirr
from mmsearch.evaluation.datasets.fashioniq import CATEGORIES as FASHIONIQ_CATEGORIES
from mmsearch.evaluation.datasets.fashioniq import load_fashioniq
from mmsearch.evaluation.datasets.karpathy import load_karpathy

BENCHMARKS = ("cirr", "fashioniq", "circo", "flickr30k", "coco")
DEFAULT_SPLITS = {
    "cirr": "val",
    "fashioniq": "val",
    "circo": "val",
    "flickr30k": "test",
    "coco": "test",
}


def load_benchmark(
    name: str, data_dir: Path, split: str | None = None, categories: tuple[str, ...] = ()
) -> list[Benchmark]:
    """Load ``name`` from ``data_dir``: one :class:`Benchmark` per FashionIQ category, else one."""
    split = split or DEFAULT_SPLITS.get(name, "val")
    if name == "cirr":
        return [load_cirr(data_dir, split)]
    if name == "circo":
        return [load_circo(data_dir, split)]
    if name == "fashioniq":
        return [load_fashioniq(data_dir, c, split) for c in (categories or FASHIONIQ_CATEGORIES)]
    if name in ("flickr30k", "coco"):
        return [load_karpathy(name, data_dir, split)]
    raise DatasetError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")


__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "FASHIONIQ_CATEGORIES",
    "Query",
    "load_benchmark",
    "load_circo",
    "load_cirr",
    "load_fashioniq",
    "load_karpathy",
]
