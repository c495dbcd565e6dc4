"""Starting ``python -m mcp_server`` over stdio with the mcp Client, and reading the
server process's memory from /proc."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mcp import Client, StdioServerParameters

REPO_ROOT = Path(__file__).resolve().parents[1]


def server_client(cwd: Path, **variables: str) -> Client:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.update(variables)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server"], env=env, cwd=str(cwd)
    )
    return Client(params)


def server_pid() -> int:
    """The ``mcp_server`` process this process started (a child, or a grandchild)."""
    me = os.getpid()
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    for pid, cmd in commands.items():
        if "mcp_server" in cmd and (
            parents.get(pid) == me or parents.get(parents.get(pid, 0)) == me
        ):
            return pid
    raise RuntimeError("no mcp_server child process found")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak resident set) of ``pid``, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1]) / 1024
    return out
