"""Half precision vs float32, and throughput, for Visualized BGE at full size.

Writes a random-weight base_en_v1.5-sized checkpoint (the real architecture: EVA02-B/16 at
224 px + BERT-base), loads it in float32 and in float16/bfloat16 on the given device, and
reports the largest deviation of the half-precision embeddings (text, image, image+text on
real photos) and images/second. Random weights say nothing about the real model's
activation ranges; point --model at a real checkpoint directory to measure those.

    python bench/visual_bge_precision.py --device cuda [--model DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from mmsearch.models.visual_bge import create_embedder
from mmsearch.testing.tiny import write_full_size_visual_bge

TEXTS = ["an astronaut", "a cup of coffee on a table", "a cat", "a rocket launch at night"]


def full_size_random(directory: Path) -> Path:
    return write_full_size_visual_bge(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    photos = [
        Image.fromarray(np.asarray(getattr(data, n)()))
        for n in ("astronaut", "coffee", "chelsea", "rocket")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or full_size_random(Path(tmp))
        reference = create_embedder(model_dir, device=args.device, dtype="float32")
        ref = {
            "text": reference.encode(texts=TEXTS),
            "image": reference.encode(images=photos),
            "image+text": reference.encode(texts=TEXTS, images=photos),
        }
        pixels = [reference.preprocess(p) for p in photos] * (args.batch // 4)
        dtypes = ["float32", "float16", "bfloat16"]
        del reference
        for dtype in dtypes:
            emb = create_embedder(model_dir, device=args.device, dtype=dtype)
            got = {
                "text": emb.encode(texts=TEXTS),
                "image": emb.encode(images=photos),
                "image+text": emb.encode(texts=TEXTS, images=photos),
            }
            diffs = ", ".join(
                f"{k} max|diff| {np.abs(got[k] - ref[k]).max():.2e} "
                f"min cos {(got[k] * ref[k]).sum(1).min():.6f}"
                for k in ref
            )
            emb.encode(images=pixels, batch_size=args.batch)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(5):
                emb.encode(images=pixels, batch_size=args.batch)
            rate = 5 * len(pixels) / (time.perf_counter() - start)
            print(f"{dtype:9s} {diffs}; {rate:.0f} images/s (batch {args.batch})", flush=True)
            del emb


if __name__ == "__main__":
    main()
