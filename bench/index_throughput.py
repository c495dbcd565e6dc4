"""Indexing throughput (images/second) of the full-size Visualized BGE base architecture
(random weights: the real model's compute) on real photos, against the tutorial's loop.

Baseline, as the upstream tutorial does it: one image per ``encode`` call, decoded in the
same thread, one Milvus insert per image, float32. Ours: ``ImageSearch.index`` into a
Milvus Lite file (batched; decoding and preprocessing on worker threads overlapped with
the model), in float32 and in each ``--dtype`` given. The model is loaded before timing
in every case. Also reports the cosine of every indexed vector to its float32 one.

    python bench/index_throughput.py [--files 64] [--rounds 2] [--dtype bfloat16] [--model DIR]
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


def tutorial_loop(embedder, client, paths: list[Path]) -> tuple[float, float]:
    """The tutorial's way: per image open, embed alone, insert alone. Returns the seconds
    in all and those spent in inserts."""
    inserting = 0.0
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            vec = embedder.encode(images=[im.convert("RGB")])[0]
        before = time.perf_counter()
        client.insert("tutorial", [{"vector": vec.tolist(), "path": str(path)}])
        inserting += time.perf_counter() - before
    return time.perf_counter() - start, inserting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("/tmp/full_base"))
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtype", action="append", default=None, help="besides float32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    extra = args.dtype if args.dtype is not None else ["bfloat16"]
    model_dir = full_base_checkpoint(args.model)
    info = machine()
    dtypes = ["float32", *extra]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        paths = make_photo_folder(tmp / "all", args.files)
        areas = [w * h for w, h in (Image.open(p).size for p in paths)]
        chunks = [paths[r :: args.rounds] for r in range(args.rounds)]
        for r, chunk in enumerate(chunks):
            (tmp / f"round{r}").mkdir()
            for p in chunk:
                p.rename(tmp / f"round{r}" / p.name)
        chunks = [[tmp / f"round{r}" / p.name for p in c] for r, c in enumerate(chunks)]

        from pymilvus import MilvusClient

        embedders = {d: create_embedder(model_dir, device="cpu", dtype=d) for d in dtypes}
        for emb in embedders.values():
            emb.encode(images=[Image.open(p) for p in chunks[0][:2]])  # warm-up
        client = MilvusClient(str(tmp / "tutorial.db"))
        client.create_collection("tutorial", dimension=embedders["float32"].dim, auto_id=True)
        searches = {
            d: ImageSearch(
                Settings(
                    data_dir=tmp / d,
                    batch_size=args.batch,
                    decode_workers=args.workers,
                    dtype=d,  # type: ignore[arg-type]
                ),
                embedder_factory=lambda s, e=embedders[d]: e,
            )
            for d in dtypes
        }
        seconds = dict.fromkeys(["tutorial", *dtypes], 0.0)
        inserting = 0.0
        # Rounds alternate the pipelines over parts of the folder, so that load from
        # other processes on a shared machine weighs on each of them alike.
        for r, chunk in enumerate(chunks):
            elapsed, ins = tutorial_loop(embedders["float32"], client, chunk)
            seconds["tutorial"] += elapsed
            inserting += ins
            for d in dtypes:
                start = time.perf_counter()
                report = searches[d].index(tmp / f"round{r}")
                seconds[d] += time.perf_counter() - start
                assert report.indexed == len(chunk), report
        client.close()

        vectors: dict[str, dict[str, np.ndarray]] = {}
        for d, search in searches.items():
            ids = [rec.id for rec in search.store.iter_records(search.settings.collection, "")]
            stored = search.store.get_rows(search.settings.collection, ids, with_vectors=True)
            vectors[d] = {i: np.asarray(stored[i]["vector"], np.float32) for i in ids}
            search.close()
        texts = {d: e.encode(texts=TEXTS) for d, e in embedders.items()}

    n = len(paths)
    base_rate = n / seconds["tutorial"]
    results: dict[str, dict[str, float]] = {
        "tutorial_fp32": {
            "images": n,
            "seconds": seconds["tutorial"],
            "insert_seconds": inserting,
            "images_per_s": base_rate,
        }
    }
    rows = [["tutorial: 1 image/call, same thread", "float32", n, base_rate, 1.0, ""]]
    for d in dtypes:
        rate = n / seconds[d]
        entry = {"images": n, "seconds": seconds[d], "images_per_s": rate}
        cos = ""
        if d != "float32":
            ref = vectors["float32"]
            cos_img = min(float(ref[i] @ v) for i, v in vectors[d].items())
            cos_txt = float((texts[d] * texts["float32"]).sum(1).min())
            entry |= {"min_cosine_image_vs_fp32": cos_img, "min_cosine_text_vs_fp32": cos_txt}
            cos = f"{cos_img:.6f} / {cos_txt:.6f}"
        entry["ratio_vs_tutorial"] = rate / base_rate
        results[f"ours_{d}"] = entry
        rows.append(["ours: ImageSearch.index", d, n, rate, rate / base_rate, cos])

    info["loadavg_at_end"] = os.getloadavg()
    print(
        f"\nVisualized BGE base (random weights), CPU: {info['cpu']}, {info['cpu_count']} "
        f"cores, torch {info['torch']} ({torch.get_num_threads()} threads); {n} photos "
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
        {
            "machine": info,
            "batch": args.batch,
            "workers": args.workers,
            "rounds": args.rounds,
            "results": results,
        },
        args.out,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
