"""Keeping Milvus Lite and pymilvus quiet and tidy in the processes that open a database.

Milvus Lite runs a C++ server as a child process, which logs with glog into the system
temp folder (two new files for every process), and its Python package imports the
deprecated ``pkg_resources``, which warns on every import. pymilvus warns about a
missing ``mvccTs`` on every query iterator over Milvus Lite (which has none to give),
and its default client keepalive pings every 10 s, more often than Milvus Lite's gRPC
server allows, so long runs end in ``GOAWAY too_many_pings`` lines. None of it is
actionable for a user; all of it is handled here, once per process.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Keep the newest few server logs of each severity; every process start adds files.
KEEP_LOG_FILES = 20

# A local socket needs no keepalive: ping at most every 10 minutes, and only while a call
# is in flight (Milvus Lite's gRPC server refuses pings more often than every 5 minutes).
LITE_GRPC_OPTIONS: dict[str, int | bool] = {
    "grpc.keepalive_time_ms": 600_000,
    "grpc.keepalive_permit_without_calls": False,
}

_prepared = threading.RLock()
_done: set[str] = set()


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def prepare_lite() -> None:
    """Call before the first Milvus Lite database of the process opens: imports
    ``milvus_lite`` without its deprecation warning and drops pymilvus's mvccTs warning."""
    with _prepared:
        if "import" in _done:
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            try:
                import milvus_lite  # noqa: F401
            except ImportError:  # pymilvus then reports that Milvus Lite is missing
                pass
        logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(
            _DropMessage("mvccTs")
        )
        _done.add("import")


@contextmanager
def server_logs_in(log_dir: Path) -> Iterator[None]:
    """While a Milvus Lite server starts inside this block, its glog files go to
    ``log_dir`` (unless ``GLOG_log_dir`` is set by the user); old ones are pruned. The
    variable is set only for the start, so other child processes do not inherit it."""
    if "GLOG_log_dir" in os.environ:
        yield
        return
    with _prepared:
        log_dir.mkdir(parents=True, exist_ok=True)
        if str(log_dir) not in _done:
            _prune_logs(log_dir)
            _done.add(str(log_dir))
        os.environ["GLOG_log_dir"] = str(log_dir)
        try:
            yield
        finally:
            os.environ.pop("GLOG_log_dir", None)


def _prune_logs(log_dir: Path) -> None:
    """Remove all but the newest :data:`KEEP_LOG_FILES` server logs per severity."""
    for severity in ("INFO", "WARNING", "ERROR", "FATAL"):
        files = [p for p in log_dir.glob(f"milvus*.log.{severity}.*") if p.is_file()]
        files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[KEEP_LOG_FILES:]:
            try:
                old.unlink()
            except OSError:  # another process may be pruning too
                pass
