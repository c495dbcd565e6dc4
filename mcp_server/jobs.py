"""Following a background index job from a tool call: progress notifications while the
call waits, and a bounded wait, so that no call outlives a client's request timeout."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from mcp.server.mcpserver import Context

from mmsearch.errors import JobNotFoundError
from mmsearch.jobs import IndexJobs
from mmsearch.types import IndexJobStatus, IndexProgress

log = logging.getLogger("mcp_server")

DEFAULT_WAIT_S = 20.0
"""How long index_images waits for its job before answering with the job's state."""
MAX_WAIT_S = 45.0
"""Upper bound on any wait: well under the 60 s many clients allow a request."""

Listener = Callable[[IndexProgress], None]


async def submit_and_follow(
    ctx: Context,
    jobs: IndexJobs,
    submit: Callable[[Listener], IndexJobStatus],
    wait_s: float,
) -> IndexJobStatus:
    """Start (or join) a job with ``submit(listener)``, forward its progress to the
    client, and return its state when it ends or after ``wait_s`` seconds, whichever
    comes first. A cancelled call only stops the following: the job keeps running."""
    token = anyio.lowlevel.current_token()
    send, receive = anyio.create_memory_object_stream[IndexProgress](max_buffer_size=math.inf)

    def listener(progress: IndexProgress) -> None:
        try:
            anyio.from_thread.run_sync(send.send_nowait, progress, token=token)
        except Exception:  # the call is over; the job must not notice
            log.debug("dropped a progress update", exc_info=True)

    async def forward() -> None:
        async with receive:
            async for progress in receive:
                try:
                    await ctx.report_progress(progress.done, progress.total, progress.path)
                except Exception:
                    log.debug("could not send a progress notification", exc_info=True)

    status = await anyio.to_thread.run_sync(lambda: submit(listener))
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(forward)
            async with send:
                status = await anyio.to_thread.run_sync(
                    lambda: jobs.wait(status.id, wait_s), abandon_on_cancel=True
                )
    finally:
        jobs.unlisten(status.id, listener)
    return status


def visible(status: IndexJobStatus, roots: list[Path]) -> bool:
    """A client sees the jobs whose every path lies inside its allowed roots."""
    return all(any(Path(p).is_relative_to(root) for root in roots) for p in status.paths)


def visible_job(jobs: IndexJobs, job_id: str, roots: list[Path]) -> IndexJobStatus:
    status = jobs.get(job_id)
    if not visible(status, roots):
        raise JobNotFoundError(f"no index job with id {job_id!r} inside the allowed roots")
    return status
