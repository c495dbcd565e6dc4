"""MCP server start-up: spawning ``python -m mcp_server`` over stdio until the tool list
arrives (models load lazily, so no torch and no model on this path). Median of runs.

    python bench/startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, percentiles, print_table, write_results
from _mcp import memory_mb, server_client, server_pid


async def one_start(cwd: Path) -> tuple[float, int, bool, float]:
    start = time.perf_counter()
    async with server_client(cwd, MMSEARCH_DATA_DIR=str(cwd / "data")) as client:
        tools = await client.list_tools()
        elapsed = time.perf_counter() - start
        pid = server_pid()
        modules = Path(f"/proc/{pid}/maps").read_text()
        torch_loaded = "libtorch" in modules
        rss = memory_mb(pid)["VmRSS"]
    return elapsed, len(tools.tools), torch_loaded, rss


async def python_start() -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    times, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            elapsed, n_tools, torch_loaded, rss = asyncio.run(one_start(Path(tmp)))
            times.append(elapsed)
            bare.append(asyncio.run(python_start()))
    server, python = percentiles(times), percentiles(bare)
    print(f"\nMCP server start-up over stdio to tools listed ({args.runs} runs)\n")
    print_table(
        ["", "median s", "p95 s", "min s"],
        [
            ["python -m mcp_server -> tools/list", server["p50"], server["p95"], server["min"]],
            ["bare `python -c pass` (floor)", python["p50"], python["p95"], python["min"]],
        ],
    )
    print(f"\n{n_tools} tools; torch loaded at that point: {torch_loaded}; RSS {rss:.0f} MiB")
    path = write_results(
        "startup",
        {
            "machine": machine(),
            "server_to_tools_listed_s": server,
            "bare_python_s": python,
            "tools": n_tools,
            "torch_loaded": torch_loaded,
            "rss_mb": rss,
            "target_s": 1.0,
            "median_under_target": statistics.median(times) < 1.0,
        },
        args.out,
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
