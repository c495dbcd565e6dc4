"""Which files a caller may touch: a path is allowed only if it resolves inside a root.

The MCP server reads and indexes files on behalf of a remote model, so every path it is
handed is resolved (``~``, ``..`` and symlinks included) before it is compared with the
roots; a link that points out of a root is refused like any other outside path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mmsearch.errors import AccessDeniedError


def resolve_roots(roots: Iterable[str | Path]) -> list[Path]:
    """Resolve each root once, so containment checks compare real locations."""
    return [Path(root).expanduser().resolve() for root in roots]


def narrow_roots(configured: Sequence[Path] | None, client: Sequence[Path] | None) -> list[Path]:
    """The roots a request may use, given the operator's and the client's lists.

    ``None`` means "not given". The operator's list is an upper bound, the client's
    narrows it: when both are given only the overlap is allowed (a client root inside a
    configured root, or a configured root inside a client root). When neither is given
    nothing is allowed: refusing is the only safe guess.
    """
    if configured is None:
        return list(client or [])
    if client is None:
        return list(configured)
    overlap: list[Path] = []
    for c in client:
        for k in configured:
            if c.is_relative_to(k):
                overlap.append(c)
            elif k.is_relative_to(c):
                overlap.append(k)
    return list(dict.fromkeys(overlap))


def ensure_allowed(path: str | Path, roots: Sequence[Path]) -> Path:
    """Return ``path`` resolved, or raise :class:`AccessDeniedError` if it lies outside every root.

    ``roots`` must already be resolved (see :func:`resolve_roots`). The path need not
    exist; a missing file is the caller's next error to report, not an access question.
    """
    if not str(path).strip():
        raise AccessDeniedError("empty path")
    if "\x00" in str(path):
        raise AccessDeniedError("path contains a NUL character")
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long, ...
        raise AccessDeniedError(f"{str(path)[:200]}: cannot be resolved ({exc})") from None
    if not roots:
        raise AccessDeniedError(
            f"{path}: no allowed roots are configured; set MMSEARCH_ALLOWED_ROOTS "
            "or use a client that shares its roots"
        )
    if any(resolved.is_relative_to(root) for root in roots):
        return resolved
    shown = ", ".join(str(root) for root in roots)
    raise AccessDeniedError(f"{str(path)[:200]}: outside the allowed roots ({shown})")


def is_inside(path: str | Path, roots: Sequence[Path]) -> bool:
    """Whether ``path``, with every symlink followed, lies inside one of ``roots``
    (already resolved). Paths that cannot be resolved are outside."""
    try:
        real = Path(os.path.realpath(path, strict=True))
    except (OSError, RuntimeError, ValueError):
        return False
    return any(real.is_relative_to(root) for root in roots)
