"""Retrieval-quality evaluation on the public benchmarks (CIRR, FashionIQ, CIRCO, Flickr30k,
COCO), read from the official annotation files a user has downloaded."""

from mmsearch.evaluation.runner import RerankFn, RunOptions, format_table, run

__all__ = ["RerankFn", "RunOptions", "format_table", "run"]
