"""The persistent list of watched folders: ``<data_dir>/watches.json``.

Kept apart from the watcher so ``mmsearch watch add|remove|list`` edits it without
loading models, opening the database or reaching a running service: the watcher notices
the file change and picks the new list up. Writes are atomic (a temporary file renamed
over the old one) and serialised by a lock file, so two processes editing the list at
once cannot lose an entry or leave half a file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mmsearch.errors import WatchError

log = logging.getLogger(__name__)

WATCHES_FILE = "watches.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class WatchedFolder:
    """One watched folder and where the watch comes from: ``list`` (added with
    ``watch add``, removable) or ``setting`` (``MMSEARCH_WATCH``, changed there)."""

    path: Path
    source: Literal["list", "setting"]


def normalize_folder(folder: str | os.PathLike[str]) -> Path:
    """The folder as it is compared and stored: ``~`` expanded, absolute, links resolved."""
    text = os.fspath(folder)
    if not text.strip():
        raise WatchError("an empty folder path was given")
    if "\x00" in text:
        raise WatchError("the folder path contains a NUL character")
    try:
        return Path(text).expanduser().resolve()
    except (OSError, RuntimeError) as exc:
        raise WatchError(f"{text[:200]}: cannot be resolved ({exc})") from None


def require_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder`` normalized, or :class:`WatchError` saying why it cannot be watched."""
    path = normalize_folder(folder)
    if not path.exists():
        raise WatchError(f"{folder}: no such folder")
    if not path.is_dir():
        raise WatchError(f"{folder}: not a folder (watch the folder that holds it)")
    if not os.access(path, os.R_OK | os.X_OK):
        raise WatchError(f"{folder}: the folder cannot be read")
    return path


class WatchList:
    """The watched folders stored in ``data_dir``, plus those a setting declares.

    ``configured`` (``settings.watch``) is read-only here: those folders are watched
    while the setting names them and cannot be removed with :meth:`remove`.
    """

    def __init__(self, data_dir: Path, configured: Sequence[str | os.PathLike[str]] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / WATCHES_FILE
        self.configured = [normalize_folder(p) for p in configured]

    def stored(self) -> list[Path]:
        """The folders added with :meth:`add`, in the order they were added."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise WatchError(f"cannot read the watch list {self.path}: {exc}") from exc
        try:
            data = json.loads(raw)
            entries = data["folders"]
            return [Path(entry["path"]) for entry in entries]
        except (ValueError, KeyError, TypeError) as exc:
            raise WatchError(
                f"the watch list {self.path} is damaged ({exc}); fix or delete the file"
            ) from exc

    def folders(self) -> list[WatchedFolder]:
        """Every watched folder, each once: the setting's first, then the stored ones."""
        out: dict[Path, WatchedFolder] = {}
        for path in self.configured:
            out.setdefault(path, WatchedFolder(path, "setting"))
        for path in self.stored():
            out.setdefault(path, WatchedFolder(path, "list"))
        return list(out.values())

    def add(self, folder: str | os.PathLike[str]) -> Path:
        """Store ``folder`` (it must be an existing, readable folder); adding a folder
        already watched changes nothing. Returns the normalized path."""
        path = require_folder(folder)
        with self._locked():
            stored = self.stored()
            if path not in stored:
                self._write([*stored, path])
        return path

    def remove(self, folder: str | os.PathLike[str]) -> Path:
        """Forget ``folder`` (which may no longer exist). The images indexed from it stay
        in the collection; ``mmsearch remove`` or ``index --prune`` deletes them."""
        path = normalize_folder(folder)
        with self._locked():
            stored = self.stored()
            if path not in stored:
                if path in self.configured:
                    raise WatchError(
                        f"{path} is watched because the MMSEARCH_WATCH setting names it; "
                        "remove it from that setting"
                    )
                raise WatchError(f"{path} is not watched (see `mmsearch watch list`)")
            self._write([p for p in stored if p != path])
        return path

    def _write(self, folders: list[Path]) -> None:
        data = {"version": FORMAT_VERSION, "folders": [{"path": str(p)} for p in folders]}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".watches-", suffix=".tmp", dir=self.data_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write between processes (no-op where ``fcntl`` is missing)."""
        try:
            import fcntl
        except ImportError:  # Windows: the atomic rename still keeps the file whole
            yield
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / f".{WATCHES_FILE}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held for a read and a rename
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
