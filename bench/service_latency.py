"""CLI command latency with a warm service against in-process (``MMSEARCH_SERVICE=off``),
same machine, same run: wall time of ``mmsearch stats`` and ``mmsearch search --text``
as a user types them (a new process each time), median of runs, and the ratio.

    python bench/service_latency.py [--model tiny|base] [--runs 5] [--photos 16]

``tiny``: random-weight tiny checkpoints (plumbing cost only); ``base``: random weights
at the full size of Visualized BGE base_en_v1.5 (the real model's load and compute).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import full_base_checkpoint, machine, make_photo_folder, print_table, write_results

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "stats": ["stats"],
    "search --text": ["search", "--text", "a cat on a sofa", "--top-k", "5"],
}


def _env(data: Path, model: Path, service: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        MMSEARCH_DATA_DIR=str(data),
        MMSEARCH_EMBED_MODEL=str(model),
        MMSEARCH_SERVICE=service,
    )
    return env


def _cli(env: dict[str, str], args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mmsearch.cli", *args],
        env=env,
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=600,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    args = parser.parse_args()

    info = machine()
    print(f"CPU: {info['cpu']} ({info['cpu_count']} cores), load {info['loadavg_at_start']}")
    with tempfile.TemporaryDirectory(prefix="mmsearch-svc-bench-") as tmp:
        root = Path(tmp)
        if args.model == "tiny":
            from mmsearch.testing import tiny

            model = Path(tiny.write_tiny_visual_bge(root / "model") or root / "model")
        else:
            model = full_base_checkpoint(args.checkpoint_dir or root / "model")
        photos = root / "photos"
        make_photo_folder(photos, args.photos)
        data = root / "data"
        on, off = _env(data, model, "on"), _env(data, model, "off")
        subprocess.run(
            [sys.executable, "-m", "mmsearch.cli", "--no-service", "index", str(photos)],
            env=off,
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=1800,
        )
        rows, results = [], {}
        try:
            cold = _cli(on, COMMANDS["search --text"])  # starts the service, loads the model
            for name, command in COMMANDS.items():
                _cli(on, command)  # warm-up of this path
                warm = [_cli(on, command) for _ in range(args.runs)]
                subprocess.run(
                    [sys.executable, "-m", "mmsearch.cli", "service", "stop"], env=on, check=True
                )
                here = [_cli(off, command) for _ in range(args.runs)]
                _cli(on, command)  # the service again, for the next command
                w, h = statistics.median(warm), statistics.median(here)
                results[name] = {"service_s": warm, "in_process_s": here, "ratio": h / w}
                rows.append([name, w, h, h / w])
        finally:
            subprocess.run(
                [sys.executable, "-m", "mmsearch.cli", "service", "stop"], env=on, timeout=60
            )
    print_table(["command", "warm service s", "in-process s", "in-process / service"], rows)
    print(f"first command, service started on demand: {cold:.2f} s")
    write_results(
        f"service_latency_{args.model}",
        {"machine": info, "runs": args.runs, "cold_start_s": cold, "commands": results},
    )


if __name__ == "__main__":
    main()
