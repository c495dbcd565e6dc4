"""The ``watch_folders`` tool, and the server process's folder watcher.

The tool edits the same watch list as ``mmsearch watch`` (in the data directory); the
folder watcher of the process hosting the server keeps the folders in sync. A folder
must lie inside the caller's allowed roots to be added or removed, and a client is only
shown the watched folders inside its roots.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from mcp_server.server import (
    ClientRoots,
    _allowed_roots,
    _in_thread,
    _result,
    _tool,
    _tool_errors,
)
from mmsearch.access import ensure_allowed
from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError
from mmsearch.watching import FolderWatcher, start_watching, watch_list

if TYPE_CHECKING:
    from mmsearch.jobs import IndexJobs


class WatchedFolderInfo(BaseModel):
    path: str
    source: Literal["list", "setting"] = Field(
        description="list: added with watch_folders or `mmsearch watch add`; "
        "setting: named by MMSEARCH_WATCH."
    )
    exists: bool


class WatchFoldersResult(BaseModel):
    folders: list[WatchedFolderInfo] = Field(description="Watched folders inside your roots.")
    hidden: int = Field(description="Watched folders outside your roots, not shown.")


def register_watch_tools(
    server: MCPServer, settings: Settings, configured: list[Path] | None
) -> None:
    """Add ``watch_folders`` to ``server`` (called by :func:`mcp_server.server.create_server`)."""

    @_tool(server, "Watch folders", read_only=False)
    async def watch_folders(
        action: Annotated[
            Literal["add", "remove", "list"],
            Field(description="add or remove a folder, or list the watched ones."),
        ],
        roots: ClientRoots = None,
        folder: Annotated[
            str | None, Field(description="The folder to add or remove (not for list).")
        ] = None,
    ) -> Annotated[CallToolResult, WatchFoldersResult]:
        """Keep folders in sync with the index while the server runs: new and changed
        images are indexed, deleted ones removed, renamed ones follow. Watches persist
        across restarts. add or remove a folder, or list the watched ones."""
        with _tool_errors("watch_folders"):
            allowed = _allowed_roots(configured, roots)
            folders = watch_list(settings)
            done = ""
            if action != "list":
                if not folder:
                    raise InvalidQueryError(f"give the folder to {action}")
                target = ensure_allowed(folder, allowed)
                edit = folders.add if action == "add" else folders.remove
                path = await _in_thread(lambda: edit(target))
                done = f"{'now watching' if action == 'add' else 'no longer watching'} {path}\n"
                watcher = getattr(server, "folder_watcher", None)
                if watcher is not None:
                    watcher.reload()
            shown, hidden = [], 0
            for entry in folders.folders():
                if any(entry.path.is_relative_to(root) for root in allowed):
                    shown.append(
                        WatchedFolderInfo(
                            path=str(entry.path), source=entry.source, exists=entry.path.is_dir()
                        )
                    )
                else:
                    hidden += 1
            listing = "\n".join(f"watching {f.path}" for f in shown) or "no folders watched"
            if hidden:
                listing += f"\n({hidden} more outside your roots)"
            return _result(done + listing, WatchFoldersResult(folders=shown, hidden=hidden))


def start_server_watching(
    server: MCPServer, settings: Settings, jobs: IndexJobs | None = None
) -> FolderWatcher:
    """Start keeping the watched folders in sync for a server run in-process; stop it
    with ``.stop()`` when the server exits. The models load on the first sync (not here).
    Each sync is one index job of ``jobs`` (default: the server's job manager), queued
    behind the jobs of ``index_images``."""
    shared = server.shared_search  # type: ignore[attr-defined]
    if jobs is None:
        jobs = getattr(shared, "jobs", None)  # the server's own job manager, when it has one
    watcher = start_watching(shared.get, jobs, settings)
    server.folder_watcher = watcher  # type: ignore[attr-defined]
    return watcher
