"""Paths as text: what the operating system accepts, and what may leave the process.

On POSIX a file name is bytes; Python decodes the bytes that are not UTF-8 to lone
surrogates (``surrogateescape``). Such a string works with ``os`` calls but cannot be
written as UTF-8: not to JSON (MCP), not to Milvus, not to a strict terminal. So every
path that leaves the process (reports, errors, progress) goes through :func:`printable`,
which spells the undecodable bytes as ``\\xNN`` escapes; and paths handed in are checked
by :func:`check_path` before any ``os`` call, which would otherwise raise a bare
``ValueError`` for a NUL byte or a ``UnicodeEncodeError`` for a surrogate it cannot map.
"""

from __future__ import annotations

import os

from mmsearch.errors import InvalidQueryError

NOT_UTF8_REASON = "the file name is not valid UTF-8; rename the file to index it"


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (it holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """``text`` with every lone surrogate escaped: the bytes of a non-UTF-8 file name as
    ``\\xNN`` (so the name reads as it is on disk), any other surrogate as ``\\udNNN``."""
    if is_utf8(text):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def check_path(path: str | os.PathLike[str], what: str = "path") -> str:
    """``path`` as a string the operating system can take, or :class:`InvalidQueryError`
    naming the problem (a NUL byte; a surrogate that maps to no byte; not a path)."""
    try:
        text = os.fspath(path)
    except TypeError:
        raise InvalidQueryError(f"{what} must be a string, not {type(path).__name__}") from None
    if isinstance(text, bytes):
        try:
            text = os.fsdecode(text)
        except (UnicodeDecodeError, ValueError):
            raise InvalidQueryError(f"{what} cannot be decoded") from None
    if "\x00" in text:
        raise InvalidQueryError(f"{what} contains a NUL byte: {printable(text)[:200]!r}")
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        raise InvalidQueryError(
            f"{what} is not valid Unicode (a lone surrogate): {printable(text)[:200]!r}"
        ) from None
    return text


def require_utf8_path(path: str, what: str = "path") -> str:
    """``path`` if it is valid UTF-8 (as every stored path is), else
    :class:`InvalidQueryError`: such a path cannot be stored, so nothing can match it."""
    check_path(path, what)
    if not is_utf8(path):
        raise InvalidQueryError(
            f"{what} {printable(path)!r} is not valid UTF-8, so no stored image has it"
        )
    return path
