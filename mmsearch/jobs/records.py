"""Index job records in the data directory, so jobs outlive the process that ran them.

One SQLite file (``jobs.sqlite3``): every write is one transaction, so a process killed
in the middle of a write leaves the previous record, never a torn one. Several
processes may share the file (a CLI listing jobs while a server runs them). A record
left ``queued`` or ``running`` by a process that is gone is reported ``interrupted``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from mmsearch.types import ACTIVE_JOB_STATES, IndexJobStatus

FILE_NAME = "jobs.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    submitted_at REAL NOT NULL,
    pid INTEGER NOT NULL,
    state TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL
)
"""


def pid_alive(pid: int) -> bool:
    """Is a process with this id running? (A reused id reads as alive: the record then
    waits for that process to end, which errs on the side of not lying "interrupted".)"""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x100000, False, pid)  # SYNCHRONIZE
        if not handle:
            return False
        try:
            return kernel32.WaitForSingleObject(handle, 0) == 0x102  # WAIT_TIMEOUT
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def interrupted(status: IndexJobStatus, reason: str) -> IndexJobStatus:
    now = time.time()
    return status.model_copy(
        update={
            "state": "interrupted",
            "finished_at": now,
            "elapsed_s": now - status.started_at if status.started_at else 0.0,
            "eta_s": None,
            "error": reason,
        }
    )


class JobRecords:
    """The ``jobs`` table of one data directory."""

    def __init__(self, state_dir: Path, *, keep: int = 200) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self.keep = keep
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One connection per operation: used from several threads, never long held."""
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            yield db

    def save(self, status: IndexJobStatus) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO jobs (id, submitted_at, pid, state, status) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET state = excluded.state,"
                " status = excluded.status, pid = excluded.pid",
                (status.id, status.submitted_at, status.pid, status.state, _dump(status)),
            )

    def forget_old(self) -> None:
        """Keep the newest ``keep`` ended jobs."""
        placeholders = ",".join("?" * len(ACTIVE_JOB_STATES))
        with self._connect() as db:
            db.execute(
                f"DELETE FROM jobs WHERE state NOT IN ({placeholders}) AND id NOT IN"
                " (SELECT id FROM jobs ORDER BY submitted_at DESC LIMIT ?)",
                (*sorted(ACTIVE_JOB_STATES), self.keep),
            )

    def get(self, job_id: str) -> IndexJobStatus | None:
        with self._connect() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._checked(_load(row[0])) if row else None

    def recent(self, limit: int) -> list[IndexJobStatus]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT status FROM jobs ORDER BY submitted_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [self._checked(_load(row[0])) for row in rows]

    def request_cancel(self, job_id: str) -> None:
        """Ask the process that runs the job to cancel it (it looks between batches)."""
        with self._connect() as db:
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def interrupt_orphans(self, own_pid: int) -> list[IndexJobStatus]:
        """Mark active jobs of dead processes (and of an earlier life of this pid) as
        interrupted; called once by a job manager when it starts."""
        placeholders = ",".join("?" * len(ACTIVE_JOB_STATES))
        with self._connect() as db:
            rows = db.execute(
                f"SELECT status FROM jobs WHERE state IN ({placeholders})",
                tuple(sorted(ACTIVE_JOB_STATES)),
            ).fetchall()
        marked = []
        for (text,) in rows:
            status = _load(text)
            if status.pid == own_pid or not pid_alive(status.pid):
                marked.append(interrupted(status, _gone(status.pid)))
        for status in marked:
            self.save(status)
        return marked

    def _checked(self, status: IndexJobStatus) -> IndexJobStatus:
        """An active record of a dead process reads as interrupted (not written back:
        that is the job of the next manager that starts)."""
        if status.active and status.pid != os.getpid() and not pid_alive(status.pid):
            return interrupted(status, _gone(status.pid))
        return status


def _gone(pid: int) -> str:
    return (
        f"the process that ran this job (pid {pid}) stopped before it ended; index the "
        "same paths again to resume (files already stored are skipped)"
    )


def _dump(status: IndexJobStatus) -> str:
    return status.model_dump_json()


def _load(text: str) -> IndexJobStatus:
    return IndexJobStatus.model_validate(json.loads(text))
