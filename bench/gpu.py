"""GPU benchmarks in one run, for a machine without Milvus or the MCP SDK: (a) embedder
throughput of the full-size Visualized BGE base architecture (random weights) from image
files, batched with decoding overlapped, against one image per call, and the cosine of
half-precision embeddings to float32; (b) rerank latency of the full-size Phi-3 Vision
architecture (random weights) with the permutation constraint against unconstrained
decoding. Each part writes its own JSON into ``--out`` (default ``$OUT``), an error file
when it fails. ``--smoke``: tiny models on the CPU, to check the script anywhere.

    bench/gpu.sh            # installs missing wheels from .whl/, runs both parts
    python bench/gpu.py --part embed|rerank [--smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from _common import (
    embed_files_overlapped,
    machine,
    make_photo_folder,
    print_table,
    write_results,
)

from mmsearch.images import load_image_file
from mmsearch.models.visual_bge import create_embedder


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def one_per_call(embedder: Any, paths: list[Path]) -> float:
    """The tutorial's loop without a store: decode in this thread, one image per call."""
    _sync()
    start = time.perf_counter()
    for path in paths:
        embedder.encode(images=[load_image_file(path).image])
    _sync()
    return len(paths) / (time.perf_counter() - start)


def overlapped(embedder: Any, paths: list[Path], batch: int, workers: int) -> tuple[float, Any]:
    _sync()
    start = time.perf_counter()
    vecs = embed_files_overlapped(embedder, paths, batch_size=batch, workers=workers)
    _sync()
    return len(paths) / (time.perf_counter() - start), vecs


def model_only(embedder: Any, pixels: list[torch.Tensor], batch: int, reps: int) -> float:
    embedder.encode(images=pixels[:batch], batch_size=batch)
    _sync()
    start = time.perf_counter()
    for _ in range(reps):
        embedder.encode(images=pixels, batch_size=batch)
    _sync()
    return reps * len(pixels) / (time.perf_counter() - start)


def part_embed(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from mmsearch.testing.tiny import write_full_size_visual_bge, write_tiny_visual_bge

    if args.smoke:
        device, n_files, n_single, batch, workers = "cpu", 24, 6, 8, 2
        model = write_tiny_visual_bge(tmp / "model")
    else:
        device, n_files, n_single, batch, workers = "cuda", 384, 64, 128, 12
        model = Path(os.environ.get("FULL_BASE", "/tmp/full_base"))
        if not (model / "Visualized_base_en_v1.5.pth").is_file():
            write_full_size_visual_bge(model)
    workers = min(workers, os.cpu_count() or 1)
    paths = make_photo_folder(tmp / "photos", n_files)
    rows, results, vectors = [], {}, {}
    base_rate = None
    for dtype in ("float32", "float16", "bfloat16"):
        emb = create_embedder(model, device=device, dtype=dtype)
        emb.encode(images=[load_image_file(p).image for p in paths[:2]])  # warm-up
        single = one_per_call(emb, paths[:n_single])
        rate, vecs = overlapped(emb, paths, batch, workers)
        rate2, vecs = overlapped(emb, paths, batch, workers)  # second pass: warm caches
        pixels = [emb.preprocess(load_image_file(p).image) for p in paths[: batch * 2]]
        pure = model_only(emb, pixels, batch, reps=2 if args.smoke else 5)
        vectors[dtype] = vecs
        base_rate = base_rate or single
        entry = {
            "one_per_call_img_s": single,
            "overlapped_img_s_first": rate,
            "overlapped_img_s": rate2,
            "model_only_img_s": pure,
            "x_fp32_one_per_call": rate2 / base_rate,
        }
        cos = ""
        if dtype != "float32":
            c = (vecs * vectors["float32"]).sum(1)
            entry["min_cosine_vs_fp32"] = float(c.min())
            entry["mean_cosine_vs_fp32"] = float(c.mean())
            cos = f"{c.min():.6f}"
        results[dtype] = entry
        rows.append([dtype, single, rate2, pure, rate2 / base_rate, cos])
        print(f"{dtype} done", flush=True)
        del emb
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(
        f"\nVisualized BGE base (random weights) on {device}; {n_files} photos, batch {batch}, "
        f"{workers} decode workers; one-per-call on {n_single}\n"
    )
    print_table(
        [
            "dtype",
            "1/call img/s",
            "overlapped img/s",
            "model-only img/s",
            "x fp32 1/call",
            "min cos vs fp32",
        ],
        rows,
    )
    return {
        "device": device,
        "files": n_files,
        "batch": batch,
        "workers": workers,
        "results": results,
    }


def part_rerank(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from rerank_latency import bench_rerank, full_size_phi3v, report

    photos = make_photo_folder(tmp / "photos", 10)
    if args.smoke:
        small = {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "vocab_size": 32064,
        }
        vlm = full_size_phi3v(
            tmp / "phi3v", "cpu", torch.float32, text=small, clip_layers=1, num_crops=1
        )
        where, runs = "smoke: small Phi-3 Vision, cpu", 1
    else:
        vlm = full_size_phi3v(tmp / "phi3v", "cuda", torch.bfloat16)
        where, runs = "full-size Phi-3 Vision (random weights), cuda, bfloat16", args.runs
    results = bench_rerank(vlm, photos, runs)
    report(results, where)
    return {"model": where, **results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["embed", "rerank"], required=True)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/results")))
    args = parser.parse_args()
    name = f"gpu_{args.part}" + ("_smoke" if args.smoke else "")
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            part = part_embed if args.part == "embed" else part_rerank
            payload = part(args, Path(tmp))
            path = write_results(name, {"machine": info, **payload}, args.out)
        except Exception as exc:  # noqa: BLE001 - record the failure, keep the other parts
            traceback.print_exc()
            path = write_results(
                name + "_error",
                {"machine": info, "error": repr(exc), "traceback": traceback.format_exc()},
                args.out,
            )
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
