"""Memory of the MCP server process: idle (tools listed), after the embedder loads (first
index and search), and while indexing (sampled every 0.1 s); for the tiny and the
full-size base checkpoints. Reads VmRSS and VmHWM from /proc of ``python -m mcp_server``
started over stdio.

    python bench/memory.py [--full-model DIR] [--files 24]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
from pathlib import Path
from typing import Any

from _common import machine, make_photo_folder, print_table, write_results
from _mcp import memory_mb, server_client, server_pid

from mmsearch.testing.tiny import write_tiny_visual_bge


async def measure(model: Path, photos: Path, first: Path, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    client = server_client(
        tmp,
        MMSEARCH_EMBED_MODEL=str(model),
        MMSEARCH_DATA_DIR=str(tmp / "data"),
        MMSEARCH_ALLOWED_ROOTS=str(photos.parent),
        MMSEARCH_DEVICE="cpu",
    )
    async with client:
        await client.list_tools()
        pid = server_pid()
        out["idle"] = memory_mb(pid)
        result = await client.call_tool("index_images", {"paths": [str(first)]})
        assert not result.is_error, result.content
        result = await client.call_tool("multimodal_search", {"text": "a cat", "top_k": 3})
        assert not result.is_error, result.content
        out["embedder_loaded"] = memory_mb(pid)
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                try:
                    samples.append(memory_mb(pid)["VmRSS"])
                except OSError:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = await client.call_tool("index_images", {"paths": [str(photos)]})
        stop.set()
        sampler.join()
        assert not result.is_error, result.content
        after = memory_mb(pid)
        out["indexing"] = {"VmRSS_max_sampled": max(samples, default=after["VmRSS"]), **after}
        out["indexed"] = result.structured_content["indexed"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-model", type=Path, default=Path("/tmp/full_base"))
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        make_photo_folder(tmp / "photos", args.files)
        first = make_photo_folder(tmp / "first", 1, seed=1)[0]
        models = {"tiny": write_tiny_visual_bge(tmp / "tiny")}
        if not args.skip_full:
            from _common import full_base_checkpoint

            models["full base (random)"] = full_base_checkpoint(args.full_model)
        for label, model in models.items():
            work = tmp / f"server-{label.split()[0]}"
            work.mkdir()
            r = asyncio.run(measure(model, tmp / "photos", first, work))
            results[label] = r
            rows.append(
                [
                    label,
                    r["idle"]["VmRSS"],
                    r["embedder_loaded"]["VmRSS"],
                    r["indexing"]["VmRSS_max_sampled"],
                    r["indexing"]["VmHWM"],
                ]
            )
    print(f"\nMCP server process memory (MiB), indexing {args.files} photos on the CPU\n")
    print_table(
        ["checkpoint", "idle RSS", "after 1st search RSS", "indexing max RSS", "peak (VmHWM)"],
        rows,
    )
    path = write_results("memory", {"machine": machine(), "results": results}, args.out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
