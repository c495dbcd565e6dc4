"""Which image files a glob names, and which extensions count as images.

Kept apart from :mod:`mmsearch.indexing` (which loads numpy and the store) so that the
CLI, when it hands a job to the mmsearch service, can expand globs in its own process
without importing anything heavy.
"""

from __future__ import annotations

import glob
import os
import stat as stat_mod
from collections.abc import Iterable

from mmsearch.errors import InvalidQueryError

DEFAULT_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


def normalize_extensions(extensions: Iterable[str] | None) -> frozenset[str]:
    """``[".JPG", "png"]`` -> ``{"jpg", "png"}``; ``None`` -> the defaults."""
    if extensions is None:
        return frozenset(DEFAULT_EXTENSIONS)
    if isinstance(extensions, str):
        extensions = [extensions]
    out = set()
    for ext in extensions:
        if not isinstance(ext, str):
            raise InvalidQueryError(f"extension must be a string, not {type(ext).__name__}")
        for part in ext.split(","):
            part = part.strip().lower().lstrip(".")
            if part:
                out.add(part)
    if not out:
        raise InvalidQueryError("the extensions list is empty")
    return frozenset(out)


def has_magic(path: str) -> bool:
    """Whether ``path`` is a glob pattern (``*``, ``?`` or ``[``)."""
    return any(ch in path for ch in "*?[")


def glob_base(pattern: str) -> str:
    """The folder part of ``pattern`` before its first wildcard: all it can match lies
    under it."""
    parts = pattern.split(os.sep)
    base: list[str] = []
    for part in parts:
        if has_magic(part):
            break
        base.append(part)
    return os.sep.join(base) or os.sep


def has_wanted_extension(name: str, extensions: frozenset[str]) -> bool:
    return os.path.splitext(name)[1].lower().lstrip(".") in extensions


def glob_files(pattern: str, extensions: frozenset[str]) -> list[str]:
    """The regular files ``pattern`` (absolute; ``**`` spans folders) matches whose
    extension is in ``extensions``, sorted: what indexing a glob reads."""
    out = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        try:
            st = os.stat(match)
        except OSError:
            continue
        if stat_mod.S_ISREG(st.st_mode) and has_wanted_extension(match, extensions):
            out.append(os.path.abspath(match))
    return out
