"""``mmsearch service start|stop|status|run``: the service of the CLI's data directory."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import click

from mmsearch.config import Settings
from mmsearch_service.client import ServiceError, connect, control
from mmsearch_service.runtime import read_pidfile, runtime_for


def _settings() -> Settings:
    return Settings()


@click.group()
def service() -> None:
    """Start, stop or inspect this data directory's background service (one per data
    directory; the CLI and mmsearch-mcp start it on demand)."""


@service.command()
def start() -> None:
    """Start the service (detached) unless one already runs; print its pid."""
    settings = _settings()
    connect(settings, kind="control").close()
    answer = control(settings, "status")
    if answer is None:
        raise ServiceError("the service stopped right after it started")
    click.echo(f"service running, pid {answer['pid']}, socket {answer['socket']}")


@service.command()
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, help="Seconds to wait.")
def stop(timeout_s: float) -> None:
    """Stop the running service; connected clients lose their session (their next
    start of mmsearch-mcp starts a new service)."""
    settings = _settings()
    runtime = runtime_for(settings.data_dir)
    try:
        answer = control(settings, "stop")
    except (ServiceError, OSError, ValueError):
        answer = None
    info = read_pidfile(runtime)
    if answer is None and info is None:
        click.echo("no service is running")
        return
    if answer is None and info is not None:  # holds its lock, does not answer: signal it
        os.kill(int(info["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while read_pidfile(runtime) is not None:
        if time.monotonic() > deadline:
            raise ServiceError(f"the service did not stop within {timeout_s:g} s")
        time.sleep(0.05)  # the service lock is released when the process is gone
    click.echo("service stopped")


@service.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
def status(as_json: bool) -> None:
    """Pid, uptime, models loaded, clients (and jobs and watched folders where the
    service has them). Exit status 3 when no service runs."""
    settings = _settings()
    answer = control(settings, "status")
    if answer is None:
        if as_json:
            click.echo(json.dumps({"running": False}))
        else:
            click.echo(f"no service is running for {runtime_for(settings.data_dir).data_dir}")
        raise SystemExit(3)
    if as_json:
        click.echo(json.dumps({"running": True, **answer}, indent=2))
        return
    click.echo(_describe(answer))


def _describe(answer: dict[str, Any]) -> str:
    loaded = [name for name, on in answer.get("models_loaded", {}).items() if on]
    lines = [
        f"pid {answer['pid']}, up {answer['uptime_s']:.0f} s, data {answer['data_dir']}",
        f"socket {answer['socket']}, log {answer['log']}",
        f"loaded: {', '.join(loaded) or 'nothing yet'}",
        f"clients: {len(answer.get('clients', []))}",
    ]
    for client in answer.get("clients", []):
        lines.append(f"  {client['kind']} pid {client['pid']}")
    for key in ("jobs", "watches"):
        if key in answer:
            lines.append(f"{key}: {json.dumps(answer[key])}")
    return "\n".join(lines)


@service.command()
def run() -> None:
    """Run the service in the foreground (logs on stderr too)."""
    from mmsearch_service.service import run as run_service

    raise SystemExit(run_service(_settings()))
