"""Where the service of a data directory lives: a 0700 runtime directory holding its
socket, its pidfile and the lock files that make it one service per data directory.

Standard library only: every front imports this, and fronts must start fast.

- ``service.lock`` is held (``flock``) by the running service for its whole life. The
  kernel drops it when the process dies, so a pidfile is trusted only while its lock is
  held: a dead pid, or a recycled one, is never taken for a live service.
- ``start.lock`` is held by a front while it starts a service, so two fronts racing to
  start one start exactly one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mmsearch.errors import ConfigurationError

try:
    import fcntl
except ImportError:  # Windows: no flock, no Unix-socket service (MMSEARCH_SERVICE=off)
    fcntl = None  # type: ignore[assignment]

SUN_PATH_MAX = 107
"""``sockaddr_un.sun_path`` holds 108 bytes on Linux (104 on macOS), NUL included."""
SOCKET_NAME = "mmsearch.sock"


@dataclass(frozen=True)
class Runtime:
    """The files of one data directory's service."""

    directory: Path
    data_dir: Path

    @property
    def socket(self) -> Path:
        return self.directory / SOCKET_NAME

    @property
    def pidfile(self) -> Path:
        return self.directory / "service.pid"

    @property
    def service_lock(self) -> Path:
        return self.directory / "service.lock"

    @property
    def start_lock(self) -> Path:
        return self.directory / "start.lock"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "service.log"


def runtime_for(data_dir: Path, *, create: bool = True) -> Runtime:
    """The runtime directory of ``data_dir``'s service: ``<data_dir>/run`` when the
    socket path fits ``sun_path``, else ``$XDG_RUNTIME_DIR`` (or the temp directory)
    ``/mmsearch-<uid>/<hash of data_dir>``. Created 0700 and checked to be ours and
    0700 whether it was created now or found: a directory someone else made (a squat
    in /tmp) is refused, not used."""
    if fcntl is None or not hasattr(os, "getuid"):
        raise ConfigurationError(
            "the mmsearch service needs Unix sockets and flock; set MMSEARCH_SERVICE=off here"
        )
    data_dir = Path(data_dir).expanduser().resolve()
    preferred = data_dir / "run"
    if len(os.fsencode(preferred / SOCKET_NAME)) <= SUN_PATH_MAX - 4:
        directory = preferred
    else:
        tag = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
        bases = [os.environ.get("XDG_RUNTIME_DIR"), tempfile.gettempdir(), "/tmp"]
        for base in filter(None, bases):
            directory = Path(base) / f"mmsearch-{os.getuid()}" / tag
            if len(os.fsencode(directory / SOCKET_NAME)) <= SUN_PATH_MAX:
                break
        else:
            raise ConfigurationError(
                "no runtime directory short enough for a Unix socket; set XDG_RUNTIME_DIR "
                "to a short path"
            )
        if create:
            _private_dir(directory.parent)
    if create:
        data_dir.mkdir(parents=True, exist_ok=True)
        _private_dir(directory)
    return Runtime(directory=directory, data_dir=data_dir)


def _private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=False)
    except FileExistsError:
        pass
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ConfigurationError(f"{path} is not a directory owned by this user; refusing it")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


@contextlib.contextmanager
def flocked(path: Path, *, timeout_s: float | None) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path``; yields False when ``timeout_s`` passed
    first (``0``: try once)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(delay)  # flock has no timed wait; back off to 0.1 s
                delay = min(delay * 2, 0.1)
        yield True
    finally:
        os.close(fd)


def lock_is_held(path: Path) -> bool:
    """Whether some process holds ``path``'s lock (a live service, for service.lock)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def read_pidfile(runtime: Runtime) -> dict | None:
    """The live service's pidfile, or None: a pidfile whose lock nobody holds is stale."""
    if not lock_is_held(runtime.service_lock):
        return None
    try:
        return json.loads(runtime.pidfile.read_text())
    except (OSError, ValueError):
        return None
