"""``mmsearch watch add|remove|list``: edit the persistent list of watched folders.

Only the list file in the data directory is touched (no model, no database), so the
commands are quick and work while a server holds the database: the running watcher
notices the file change and starts or stops watching.
"""

from __future__ import annotations

import json
import os

import click

from mmsearch.watchlist import WatchList

SYNC_HINT = (
    "kept in sync while the MCP server (or service) runs; `mmsearch index --prune DIR` syncs it now"
)


def _watch_list(ctx: click.Context) -> WatchList:
    from mmsearch.cli import _settings

    settings = _settings(ctx.find_root())
    return WatchList(settings.data_dir, settings.watch)


@click.group()
def watch() -> None:
    """Keep folders in sync with the collection (new, changed, renamed, deleted files)."""


@watch.command("add")
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=str))
@click.pass_context
def add(ctx: click.Context, folders: tuple[str, ...]) -> None:
    """Watch FOLDERS (recursively) from now on."""
    watch_list = _watch_list(ctx)
    for folder in folders:
        click.echo(f"watching {watch_list.add(folder)}")
    click.echo(SYNC_HINT, err=True)


@watch.command("remove")
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=str))
@click.pass_context
def remove(ctx: click.Context, folders: tuple[str, ...]) -> None:
    """Stop watching FOLDERS (their images stay indexed)."""
    watch_list = _watch_list(ctx)
    for folder in folders:
        click.echo(f"no longer watching {watch_list.remove(folder)}")


@watch.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """Show the watched folders (from `watch add` and from MMSEARCH_WATCH)."""
    folders = _watch_list(ctx).folders()
    if as_json:
        rows = [
            {"path": str(f.path), "source": f.source, "exists": os.path.isdir(f.path)}
            for f in folders
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    for f in folders:
        notes = [
            n
            for n, on in (
                ("MMSEARCH_WATCH", f.source == "setting"),
                ("missing", not os.path.isdir(f.path)),
            )
            if on
        ]
        click.echo(f"{f.path}" + (f"  ({', '.join(notes)})" if notes else ""))
    if not folders:
        click.echo("no folders are watched (mmsearch watch add DIR)", err=True)
