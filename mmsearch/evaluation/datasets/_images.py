"""Locating a benchmark's image files under the directory the user downloaded."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from mmsearch.errors import DatasetError


def pick_root(candidates: Iterable[Path], probe: str) -> Path | None:
    """The first candidate directory that holds the relative path ``probe``."""
    for root in candidates:
        if (root / probe).is_file():
            return root
    return None


def check_present(gallery: Mapping[str, Path], layout: str, what: str) -> None:
    """Raise a :class:`DatasetError` when gallery images are missing (partial downloads are
    the common failure, and a partial gallery silently inflates every metric)."""
    missing = [p for p in gallery.values() if not p.is_file()]
    if missing:
        shown = "\n".join(f"  {p}" for p in missing[:5])
        raise DatasetError(
            f"{len(missing)} of {len(gallery)} {what} images are missing, e.g.:\n{shown}\n"
            f"expected layout:\n{layout}"
        )
