"""Memory of packing the reranker's language model (``MMSEARCH_RERANK_QUANTIZE``).

Builds the full Phi-3 Vision architecture (random weights) in bfloat16, the precision its
checkpoint is stored in and packing loads from, then packs it; prints the resident and
peak memory of this process before and after. Needs about 10 GB free.

    python bench/rerank_packing_memory.py int8
    python bench/rerank_packing_memory.py float16
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch
from rerank_latency import full_size_phi3v

from mmsearch.rerank.quantize import packed_weight_bytes, quantize_language_model

GIB = 2**30


def _resident() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / GIB


def _peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["int8", "float16"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        vlm = full_size_phi3v(Path(tmp) / "phi3v", "cpu", torch.bfloat16)
        print(f"bfloat16 model: resident {_resident():.1f} GiB, peak {_peak():.1f} GiB")
        quantize_language_model(vlm.model, args.mode)
        print(
            f"packed {args.mode}: resident {_resident():.1f} GiB, peak {_peak():.1f} GiB, "
            f"packed weights {packed_weight_bytes(vlm.model) / GIB:.1f} GiB "
            f"({time.perf_counter() - started:.0f} s in all)"
        )


if __name__ == "__main__":
    main()
