"""Indexing throughput (images/second) of the full-size Visualized BGE base architecture
(random weights: the real model's compute) on real photos, against the tutorial's loop.

Baseline, as the upstream tutorial does it: one image per ``encode`` call, decoded in the
same thread, one Milvus insert per image, float32. Ours: ``ImageSearch.index`` into a
Milvus Lite file (batched; decoding and preprocessing on worker threads overlapped with
the model), in float32 and in each ``--dtype`` given. The model is loaded before timing
in every case. Also reports the cosine of every indexed vector to its float32 one.

    python bench/index_throughput.py [--files 48] [--dtype bfloat16] [--model DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import (
    full_base_checkpoint,
    machine,
    make_photo_folder,
    print_table,
    write_results,
)
from PIL import Image

from mmsearch.config import Settings
from mmsearch.library import ImageSearch
from mmsearch.models.visual_bge import create_embedder

TEXTS = ["an astronaut", "a cup of coffee on a table", "a cat", "a rocket launch at night"]


def tutorial_loop(embedder, paths: list[Path], db: Path) -> tuple[float, float]:
    """The tutorial's way: per image open, embed alone, insert alone. Returns the seconds
    in all and those spent in inserts."""
    from pymilvus import MilvusClient

    client = MilvusClient(str(db))
    client.create_collection("tutorial", dimension=embedder.dim, auto_id=True)
    inserting = 0.0
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            vec = embedder.encode(images=[im.convert("RGB")])[0]
        before = time.perf_counter()
        client.insert("tutorial", [{"vector": vec.tolist(), "path": str(path)}])
        inserting += time.perf_counter() - before
    elapsed = time.perf_counter() - start
    client.close()
    return elapsed, inserting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("/tmp/full_base"))
    parser.add_argument("--files", type=int, default=48)
    parser.add_argument("--baseline-files", type=int, default=None, help="default: --files")
    parser.add_argument("--dtype", action="append", default=None, help="besides float32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    extra = args.dtype if args.dtype is not None else ["bfloat16"]
    model_dir = full_base_checkpoint(args.model)
    info = machine()
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        paths = make_photo_folder(tmp / "photos", args.files)
        areas = [w * h for w, h in (Image.open(p).size for p in paths)]
        n_base = args.baseline_files or args.files

        fp32 = create_embedder(model_dir, device="cpu", dtype="float32")
        fp32.encode(images=[Image.open(paths[0])])  # warm-up
        elapsed, inserting = tutorial_loop(fp32, paths[:n_base], tmp / "tutorial.db")
        base_rate = n_base / elapsed
        results["tutorial_fp32"] = {
            "images": n_base,
            "seconds": elapsed,
            "insert_seconds": inserting,
            "images_per_s": base_rate,
        }
        rows.append(["tutorial: 1 image/call, same thread", "float32", n_base, base_rate, 1.0, ""])

        vectors: dict[str, dict[str, np.ndarray]] = {}
        texts: dict[str, np.ndarray] = {}
        for dtype in ["float32", *extra]:
            emb = fp32 if dtype == "float32" else create_embedder(model_dir, "cpu", dtype)
            emb.encode(images=[Image.open(p) for p in paths[:2]])  # warm-up
            settings = Settings(
                data_dir=tmp / dtype,
                batch_size=args.batch,
                decode_workers=args.workers,
                dtype=dtype,  # type: ignore[arg-type]
            )
            with ImageSearch(settings, embedder_factory=lambda s, e=emb: e) as search:
                start = time.perf_counter()
                report = search.index(tmp / "photos")
                elapsed = time.perf_counter() - start
                assert report.indexed == len(paths), report
                records = search.store.iter_records(settings.collection, "")
                ids = [r.id for r in records]
                stored = search.store.get_rows(settings.collection, ids, with_vectors=True)
                vectors[dtype] = {i: np.asarray(stored[i]["vector"], np.float32) for i in ids}
            texts[dtype] = emb.encode(texts=TEXTS)
            rate = len(paths) / elapsed
            cos = ""
            entry = {"images": len(paths), "seconds": elapsed, "images_per_s": rate}
            if dtype != "float32":
                ref = vectors["float32"]
                cos_img = min(float(ref[i] @ v) for i, v in vectors[dtype].items())
                cos_txt = float((texts[dtype] * texts["float32"]).sum(1).min())
                entry |= {"min_cosine_image_vs_fp32": cos_img, "min_cosine_text_vs_fp32": cos_txt}
                cos = f"{cos_img:.6f} / {cos_txt:.6f}"
            entry["ratio_vs_tutorial"] = rate / base_rate
            results[f"ours_{dtype}"] = entry
            rows.append(["ours: ImageSearch.index", dtype, len(paths), rate, rate / base_rate, cos])
            if emb is not fp32:
                del emb

    info["loadavg_at_end"] = os.getloadavg()
    print(
        f"\nVisualized BGE base (random weights), CPU: {info['cpu']}, {info['cpu_count']} "
        f"cores, torch {info['torch']} ({torch.get_num_threads()} threads); {len(paths)} photos "
        f"{min(areas) ** 0.5:.0f}..{max(areas) ** 0.5:.0f} px (sqrt area); "
        f"batch {args.batch}, {args.workers} decode workers\n"
    )
    print_table(
        ["pipeline", "dtype", "images", "img/s", "x tutorial", "min cos image/text vs fp32"], rows
    )
    share = results["tutorial_fp32"]["insert_seconds"] / results["tutorial_fp32"]["seconds"]
    print(f"\n(the tutorial loop spent {share:.0%} of its time in per-image Milvus inserts)")
    path = write_results(
        "index_throughput",
        {"machine": info, "batch": args.batch, "workers": args.workers, "results": results},
        args.out,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
