"""Indexing throughput (images/second) of the full-size Visualized BGE base architecture
(random weights: the real model's compute) on real photos, against the tutorial's loop.

Baseline, as the Milvus tutorial does it: one image per ``encode`` call, decoded in the
same thread, float32, then one Milvus insert of all the vectors. It runs on our model
code (the same arithmetic as upstream's) and, with ``--upstream-src`` and
``--upstream-python``, also on the upstream code itself in its own environment. Ours:
``ImageSearch.index`` into a Milvus Lite file (batched; decoding and preprocessing on
worker threads overlapped with the model), in float32 and in each ``--dtype`` given. The
model is loaded before timing in every case. Also reports the cosine of every indexed
vector to its float32 one, and the bound the CPU's matrix-multiply speed puts on the ratio.

    python bench/index_throughput.py [--files 64] [--rounds 2] [--dtype bfloat16] [--model DIR]
        [--upstream-src FlagEmbedding/research/visual_bge --upstream-python /path/bin/python]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
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
from mmsearch.models.devices import native_bfloat16_cpu
from mmsearch.models.visual_bge import create_embedder

TEXTS = ["an astronaut", "a cup of coffee on a table", "a cat", "a rocket launch at night"]


def tutorial_loop(embedder, client, paths: list[Path]) -> tuple[float, float]:
    """The tutorial's way: per image open and embed alone, then insert every vector at
    once. Returns the seconds in all and those spent in the insert."""
    start = time.perf_counter()
    vectors = {}
    for path in paths:
        with Image.open(path) as im:
            vectors[path] = embedder.encode(images=[im.convert("RGB")])[0].tolist()
    before = time.perf_counter()
    client.insert("tutorial", [{"vector": v, "path": str(p)} for p, v in vectors.items()])
    end = time.perf_counter()
    return end - start, end - before


def upstream_loop(args: argparse.Namespace, model_dir: Path, folder: Path) -> float:
    """Seconds the tutorial's loop takes on the upstream code (its own environment)."""
    with tempfile.TemporaryDirectory() as names:
        # the upstream constructor picks its vision tower from the text model's name
        bge_dir = Path(names) / "bge-base-en-v1.5"
        bge_dir.symlink_to(model_dir.resolve(), target_is_directory=True)
        done = subprocess.run(
            [
                str(args.upstream_python),
                str(Path(__file__).with_name("_upstream_tutorial_loop.py")),
                str(args.upstream_src),
                str(bge_dir),
                str(model_dir / "Visualized_base_en_v1.5.pth"),
                str(folder),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        sys.exit(f"the upstream loop failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["seconds"])


def matmul_rates(tokens: int, hidden: int) -> dict[str, float]:
    """Floating-point operations per second of this CPU's matrix products in float32 and
    bfloat16, at the shape of the model's MLP layers for a batch (the best case)."""
    rates = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a = torch.randn(tokens, hidden).to(dtype)
        w = torch.randn(4 * hidden, hidden).to(dtype)
        torch.nn.functional.linear(a, w)
        best = float("inf")
        for _ in range(10):
            start = time.perf_counter()
            torch.nn.functional.linear(a, w)
            best = min(best, time.perf_counter() - start)
        rates[name] = 2 * tokens * hidden * 4 * hidden / best
    return rates


def flops_per_image(embedder) -> dict[str, float]:
    """Matrix-product operations of embedding one image, counted by torch, and the share
    of them in plain matrix multiplies (the rest is attention and the patch convolution)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    pixels = torch.zeros(3, embedder.image_size, embedder.image_size)
    counter = FlopCounterMode(display=False)
    # the reference attention is made of batched matrix products the counter sees
    with counter, sdpa_kernel(SDPBackend.MATH):
        embedder.encode(images=[pixels])
    counts = counter.get_flop_counts()["Global"]
    total = float(sum(counts.values()))
    gemm = float(sum(v for k, v in counts.items() if "mm" in str(k) and "bmm" not in str(k)))
    return {"total": total, "gemm": gemm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("/tmp/full_base"))
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtype", action="append", default=None, help="besides float32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--upstream-src",
        type=Path,
        default=None,
        help="FlagEmbedding's research/visual_bge folder, to time the tutorial's loop on it",
    )
    parser.add_argument(
        "--upstream-python",
        type=Path,
        default=None,
        help="a Python with the upstream code's dependencies (transformers<4.49, timm, ...)",
    )
    args = parser.parse_args()
    if (args.upstream_src is None) != (args.upstream_python is None):
        parser.error("--upstream-src and --upstream-python go together")
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
        seconds = dict.fromkeys(["tutorial", "upstream", *dtypes], 0.0)
        inserting = 0.0
        # Rounds alternate the pipelines over parts of the folder, so that load from
        # other processes on a shared machine weighs on each of them alike.
        for r, chunk in enumerate(chunks):
            elapsed, ins = tutorial_loop(embedders["float32"], client, chunk)
            seconds["tutorial"] += elapsed
            inserting += ins
            if args.upstream_src is not None:
                seconds["upstream"] += upstream_loop(args, model_dir, tmp / f"round{r}")
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
        flops = flops_per_image(embedders["float32"])
        vision = embedders["float32"].module.vision_config
        rates = matmul_rates(args.batch * (vision.num_patches + 2), embedders["float32"].dim)

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
    if args.upstream_src is not None:
        up_rate = n / seconds["upstream"]
        results["tutorial_upstream_code_fp32"] = {
            "images": n,
            "seconds": seconds["upstream"],
            "images_per_s": up_rate,
            "ratio_vs_tutorial": up_rate / base_rate,
        }
        rows.append(
            ["tutorial loop on the upstream code", "float32", n, up_rate, up_rate / base_rate, ""]
        )
    default_dtype = "bfloat16" if native_bfloat16_cpu() else "float32"
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
        label = "ours: ImageSearch.index" + (" (default)" if d == default_dtype else "")
        rows.append([label, d, n, rate, rate / base_rate, cos])

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
    print(f"\n(the tutorial loop spent {share:.1%} of its time in its Milvus insert)")
    # However well the rest is hidden, an image costs at least its matrix products at the
    # CPU's best matrix-multiply speed: that bounds every pipeline's ratio on this machine.
    bounds = {d: rate / flops["total"] / base_rate for d, rate in rates.items()}
    results["bound"] = {
        "flops_per_image": flops["total"],
        "gemm_flops_per_image": flops["gemm"],
        "matmul_flops_per_s": rates,
        "max_ratio_vs_tutorial": bounds,
    }
    print(
        f"bound: {flops['total'] / 1e9:.1f} GFLOP of matrix products per image "
        f"({flops['gemm'] / flops['total']:.0%} plain matrix multiplies); this CPU multiplies "
        + ", ".join(f"{d} at {r / 1e9:.0f} GFLOP/s" for d, r in rates.items())
        + ", so no pipeline can beat "
        + ", ".join(f"{b:.2f}x in {d}" for d, b in bounds.items())
        + " the tutorial loop here"
    )
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
