"""Shared pieces of the benchmarks: a folder of real photos, the full-size random
checkpoint, a description of the machine, and the results files."""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

RESULTS = Path(__file__).resolve().parent / "results"
SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "coins",
    "moon",
    "page",
    "text",
)


def source_photos() -> list[Image.Image]:
    """The real photographs that ship with scikit-image (and scikit-learn, when installed)."""
    from skimage import data

    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            photos.append(Image.fromarray(np.asarray(getattr(data, name)())))
        except Exception:  # noqa: BLE001 - a data file missing from this install
            continue
    try:
        from sklearn.datasets import load_sample_images

        photos += [Image.fromarray(im) for im in load_sample_images().images]
    except Exception:  # noqa: BLE001 - scikit-learn is optional
        pass
    return photos


def make_photo_folder(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` distinct image files made from the real photos: random crops, flips, colour
    changes, longer side 256..2048 px, three in four JPEG, the rest PNG. Written on a
    thread pool; the same ``seed`` gives the same files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sources = [im.convert("RGB") for im in source_photos()]
    plans = []
    for i in range(n):
        plans.append(
            {
                "source": sources[i % len(sources)],
                "crop": (rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0), rng.random(), rng.random()),
                "mirror": rng.random() < 0.5,
                "color": rng.uniform(0.6, 1.4),
                "brightness": rng.uniform(0.8, 1.2),
                "side": rng.randint(256, 2048),
                "path": folder / f"photo_{i:04d}.{'jpg' if rng.random() < 0.75 else 'png'}",
                "quality": rng.randint(80, 95),
            }
        )

    def write(plan: dict[str, Any]) -> Path:
        im = plan["source"]
        w, h = im.size
        fw, fh, fx, fy = plan["crop"]
        left, top = fx * (1 - fw) * w, fy * (1 - fh) * h
        im = im.crop((int(left), int(top), int(left + fw * w), int(top + fh * h)))
        if plan["mirror"]:
            im = ImageOps.mirror(im)
        im = ImageEnhance.Color(im).enhance(plan["color"])
        im = ImageEnhance.Brightness(im).enhance(plan["brightness"])
        scale = plan["side"] / max(im.size)
        im = im.resize((max(16, round(im.width * scale)), max(16, round(im.height * scale))))
        path: Path = plan["path"]
        if path.suffix == ".jpg":
            im.save(path, quality=plan["quality"])
        else:
            im.save(path, compress_level=1)
        return path

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        return list(pool.map(write, plans))


def full_base_checkpoint(directory: Path) -> Path:
    """A random-weight Visualized BGE base_en_v1.5 at full size (same compute as the real
    one), written once into ``directory`` and reused."""
    if (directory / "Visualized_base_en_v1.5.pth").is_file() and (
        directory / "config.json"
    ).is_file():
        return directory
    from mmsearch.testing.tiny import write_full_size_visual_bge

    return write_full_size_visual_bge(directory)


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loadavg_at_start": os.getloadavg(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_results(name: str, payload: dict[str, Any], out_dir: Path | None = None) -> Path:
    out_dir = out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {"benchmark": name, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [
        [f"{c:.3g}" if isinstance(c, float) else str(c) for c in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for k, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)), flush=True)
        if k == 0:
            print("  ".join("-" * w for w in widths), flush=True)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p95": p95, "min": ordered[0], "n": len(ordered)}


def embed_files_overlapped(
    embedder: Any,
    paths: Sequence[Path],
    *,
    batch_size: int,
    workers: int,
    consume: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray:
    """Decode and preprocess on ``workers`` threads one batch ahead of the model, as the
    library's indexing does, without a store (for machines without Milvus)."""
    from mmsearch.images import load_image_file

    def prepare(path: Path) -> Any:
        return embedder.preprocess(load_image_file(path).image)

    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    out = []
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def submit(batch: Sequence[Path]) -> list[Future[Any]]:
            return [pool.submit(prepare, p) for p in batch]

        pending = submit(batches[0]) if batches else []
        for k in range(len(batches)):
            current = pending
            pending = submit(batches[k + 1]) if k + 1 < len(batches) else []
            vecs = embedder.encode(images=[f.result() for f in current], batch_size=batch_size)
            if consume is not None:
                consume(vecs)
            out.append(vecs)
    return np.concatenate(out) if out else np.zeros((0, embedder.dim), np.float32)
