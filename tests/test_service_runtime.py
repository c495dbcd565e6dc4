"""Where the service's socket and lock files live, and which directories are refused."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmsearch.errors import ConfigurationError
from mmsearch_service.runtime import SUN_PATH_MAX, flocked, lock_is_held, runtime_for

pytestmark = pytest.mark.skipif(os.name != "posix", reason="Unix sockets and flock")


def test_short_data_dirs_keep_the_socket_inside(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path / "data")
    assert runtime.directory == (tmp_path / "data" / "run").resolve()
    assert runtime.directory.stat().st_mode & 0o777 == 0o700


@pytest.fixture
def short_xdg(monkeypatch) -> Iterator[Path]:
    xdg = Path(tempfile.mkdtemp(prefix="x", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    yield xdg
    shutil.rmtree(xdg)


def test_long_data_dirs_move_the_socket_to_a_private_runtime_dir(tmp_path, short_xdg) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    runtime = runtime_for(deep)
    assert len(os.fsencode(runtime.socket)) <= SUN_PATH_MAX
    assert runtime.directory.parent == short_xdg / f"mmsearch-{os.getuid()}"
    assert runtime.directory.stat().st_mode & 0o777 == 0o700
    assert runtime_for(deep) == runtime  # the same data directory, the same place
    assert runtime_for(deep.parent).directory != runtime.directory


def test_a_loosened_runtime_dir_is_made_private_again(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path / "data")
    os.chmod(runtime.directory, 0o777)
    runtime_for(tmp_path / "data")
    assert runtime.directory.stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_a_runtime_dir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    squat = tmp_path / "data" / "run"
    squat.mkdir(parents=True)
    os.chown(squat, 65534, 65534)
    with pytest.raises(ConfigurationError, match="not a directory owned by this user"):
        runtime_for(tmp_path / "data")


def test_the_service_lock_is_seen_only_while_held(tmp_path: Path) -> None:
    lock = tmp_path / "service.lock"
    assert not lock_is_held(lock)
    with flocked(lock, timeout_s=0) as locked:
        assert locked and lock_is_held(lock)
        with flocked(lock, timeout_s=0) as second:
            assert not second  # one holder at a time, even within one process
    assert not lock_is_held(lock)
