"""Structured search filters and their translation to Milvus boolean expressions.

Users never write expressions. They fill a :class:`SearchFilter`; :func:`to_milvus_expr`
builds the expression from validated parts only: field names are fixed, metadata keys
must match :data:`METADATA_KEY_PATTERN`, numbers are formatted by Python, and every
string goes through :func:`quote_string`. So no value can end a literal early or add a
clause of its own.

Path patterns rely on Milvus ``like``; its handling of backslashes differs between the
prefix, suffix and general code paths, so backslashes are refused in patterns rather
than guessed at. Folder prefixes use a range comparison instead of ``like`` and accept
any character.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError

from mmsearch.errors import InvalidQueryError

METADATA_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_IN_VALUES = 100
MAX_METADATA_KEYS = 64
"""Most keys in ``metadata`` and in ``metadata_in`` each (the expression stays small)."""
MAX_STRING_CHARS = 4096
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

MetadataValue = StrictBool | StrictInt | StrictFloat | StrictStr
"""Values allowed in metadata (stored and filtered): str, int, float, bool."""

_ESCAPES = {"\\": "\\\\", '"': '\\"'}
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def quote_string(value: str) -> str:
    """Return ``value`` as a double-quoted Milvus string literal.

    Backslash and double quote are escaped and a tab is kept as it is. Newline, carriage
    return, the other control characters and unpaired surrogates are refused with
    :class:`InvalidQueryError`: Milvus Lite 2.x reads ``\\n``, ``\\t`` and ``\\r`` as a
    backslash and a letter and cannot parse a raw newline or carriage return, so no
    literal would match them there.
    """
    if not isinstance(value, str):
        raise InvalidQueryError(f"expected a string, got {type(value).__name__}")
    if len(value) > MAX_STRING_CHARS:
        raise InvalidQueryError(f"filter string is longer than {MAX_STRING_CHARS} characters")
    bad = _FORBIDDEN_CHARS.search(value)
    if bad:
        raise InvalidQueryError(
            f"filter string contains control character U+{ord(bad.group()):04X}, which "
            "cannot be expressed in a filter"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidQueryError("filter string is not valid Unicode (unpaired surrogate)") from None
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def check_metadata_key(key: object) -> str:
    if not isinstance(key, str) or not METADATA_KEY_PATTERN.fullmatch(key):
        raise InvalidQueryError(
            f"invalid metadata key {key!r}: keys are 1-64 characters, letters, digits and "
            "underscores, not starting with a digit"
        )
    return key


def format_value(value: object) -> str:
    """Format one metadata value as a Milvus literal (bool, int64, finite float, string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidQueryError(f"integer {value} is outside the 64-bit range")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidQueryError(f"number {value} is not finite")
        return repr(value)
    if isinstance(value, str):
        return quote_string(value)
    raise InvalidQueryError(
        f"metadata values must be str, int, float or bool, not {type(value).__name__}"
    )


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate metadata to be stored: the same keys and values filters can express."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidQueryError("metadata must be a mapping of key to value")
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        check_metadata_key(key)
        format_value(value)
        out[key] = value
    return out


class SearchFilter(BaseModel):
    """Restricts a search to stored images matching every condition given.

    ``path_prefix``: images inside this folder (at any depth); a trailing separator is
    optional and the folder itself must be given as it was indexed (absolute).
    ``path_glob``: the whole path matches a pattern in which ``*`` is any run of
    characters (``/`` included); everything else is literal. ``?`` is refused: Milvus
    Lite 2.5 answers a single-character wildcard at the end of a pattern as if it were
    ``*``, so it cannot be offered without wrong answers.
    ``path_contains``: the path contains this text.
    ``metadata``: key equals value. ``metadata_in``: key equals one of the values.
    ``mtime_min``/``mtime_max`` (POSIX seconds) and ``size_min``/``size_max`` (bytes)
    are inclusive bounds.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path_prefix: StrictStr | None = Field(default=None, min_length=1, max_length=MAX_STRING_CHARS)
    path_glob: StrictStr | None = Field(default=None, min_length=1, max_length=MAX_STRING_CHARS)
    path_contains: StrictStr | None = Field(default=None, min_length=1, max_length=MAX_STRING_CHARS)
    metadata: dict[StrictStr, MetadataValue] = Field(
        default_factory=dict, max_length=MAX_METADATA_KEYS
    )
    metadata_in: dict[
        StrictStr, Annotated[list[MetadataValue], Field(min_length=1, max_length=MAX_IN_VALUES)]
    ] = Field(default_factory=dict, max_length=MAX_METADATA_KEYS)
    mtime_min: StrictFloat | StrictInt | None = None
    mtime_max: StrictFloat | StrictInt | None = None
    size_min: StrictInt | None = Field(default=None, ge=0)
    size_max: StrictInt | None = Field(default=None, ge=0)

    def is_empty(self) -> bool:
        return not to_milvus_expr(self)


def parse_filter(value: SearchFilter | Mapping[str, Any] | None) -> SearchFilter | None:
    """Accept a filter as a model or a plain mapping (JSON); wrong shapes or types raise
    :class:`InvalidQueryError` naming the offending field."""
    if value is None or isinstance(value, SearchFilter):
        return value
    if not isinstance(value, Mapping):
        raise InvalidQueryError(f"filter must be an object, not {type(value).__name__}")
    try:
        return SearchFilter.model_validate(dict(value))
    except PydanticValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "filter"
            parts.append(f"{loc}: {err['msg']}")
        raise InvalidQueryError("invalid filter: " + "; ".join(parts)) from None


def _next_string(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        nxt = last + 1
        if nxt in range(0xD800, 0xE000):
            nxt = 0xE000
        if nxt <= 0x10FFFF:
            return "".join(chars) + chr(nxt)
    return None


_SEPARATORS = ("/", "\\") if os.sep == "\\" else ("/",)
"""Path separators of this platform: on POSIX a backslash is an ordinary file name
character, so a folder given with a trailing backslash names a different folder."""


def _folder_condition(folder: str) -> str:
    folder_str = folder if folder.endswith(_SEPARATORS) else folder + "/"
    sep = folder_str[-1]
    if folder_str == sep:
        return f"path >= {quote_string(sep)}"
    exact = folder_str[:-1]
    return f"(path == {quote_string(exact)} or {_prefix_range(folder_str)})"


def _prefix_range(prefix: str) -> str:
    upper = _next_string(prefix)
    lower = f"path >= {quote_string(prefix)}"
    return f"({lower} and path < {quote_string(upper)})" if upper else lower


def _glob_condition(pattern: str, like_patterns: bool) -> str | None:
    if "?" in pattern:
        glob_to_like(pattern)  # raises the explanation
    stem = pattern.rstrip("*")
    if not any(ch in stem for ch in "*?"):
        if stem == pattern:
            return f"path == {quote_string(pattern)}"
        # Only trailing stars: a prefix, which a range expresses on every Milvus version.
        return _prefix_range(stem) if stem else None
    if not like_patterns:
        raise InvalidQueryError(
            "this Milvus server (before 2.4) can only match path prefixes: path_glob may "
            "have wildcards only at its end (e.g. /photos/2024*)"
        )
    if not pattern.strip("*"):
        # Milvus Lite 2.5 answers a like pattern of wildcards alone with no rows at all.
        raise InvalidQueryError(
            "path_glob needs at least one literal character besides * "
            "(use path_prefix or no filter to match every path)"
        )
    return f"path like {quote_string(glob_to_like(pattern))}"


def _like_escape(text: str, what: str) -> str:
    if "\\" in text:
        raise InvalidQueryError(f"{what} may not contain a backslash")
    return text.replace("%", "\\%").replace("_", "\\_")


def glob_to_like(pattern: str) -> str:
    """``*`` -> ``%``, literal ``%`` and ``_`` escaped; ``?`` is refused (see
    :class:`SearchFilter`)."""
    if "?" in pattern:
        raise InvalidQueryError(
            "path_glob does not support ?: use * (any run of characters) or path_contains"
        )
    return _like_escape(pattern, "path_glob").replace("*", "%")


def _number(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidQueryError(f"{what} must be a number")
    return format_value(value)


def to_milvus_expr(flt: SearchFilter | None, *, like_patterns: bool = True) -> str:
    """Translate a filter to a Milvus boolean expression; ``""`` means no filter.

    Re-validates every part, so a filter built without validation
    (``SearchFilter.model_construct``) cannot smuggle anything into the expression.
    ``like_patterns=False`` is for Milvus servers before 2.4, whose ``like`` matches
    prefixes only: globs other than prefixes and substrings are then refused rather
    than answered wrongly.
    """
    if flt is None:
        return ""
    if not isinstance(flt, SearchFilter):
        raise InvalidQueryError(f"filter must be a SearchFilter, not {type(flt).__name__}")
    clauses: list[str] = []
    if flt.path_prefix is not None:
        if not isinstance(flt.path_prefix, str) or not flt.path_prefix:
            raise InvalidQueryError("path_prefix must be a non-empty string")
        clauses.append(_folder_condition(flt.path_prefix))
    if flt.path_glob is not None:
        if not isinstance(flt.path_glob, str) or not flt.path_glob:
            raise InvalidQueryError("path_glob must be a non-empty string")
        cond = _glob_condition(flt.path_glob, like_patterns)
        if cond:
            clauses.append(cond)
    if flt.path_contains is not None:
        if not isinstance(flt.path_contains, str) or not flt.path_contains:
            raise InvalidQueryError("path_contains must be a non-empty string")
        if not like_patterns:
            raise InvalidQueryError(
                "this Milvus server (before 2.4) cannot match substrings: path_contains "
                "needs Milvus 2.4 or later, or Milvus Lite"
            )
        inner = _like_escape(flt.path_contains, "path_contains")
        clauses.append(f"path like {quote_string('%' + inner + '%')}")
    for what, mapping in (("metadata", flt.metadata), ("metadata_in", flt.metadata_in)):
        if len(mapping or {}) > MAX_METADATA_KEYS:
            raise InvalidQueryError(f"{what} has more than {MAX_METADATA_KEYS} keys")
    for key, value in (flt.metadata or {}).items():
        clauses.append(f'metadata["{check_metadata_key(key)}"] == {format_value(value)}')
    for key, values in (flt.metadata_in or {}).items():
        check_metadata_key(key)
        if not isinstance(values, list | tuple) or not values:
            raise InvalidQueryError(f"metadata_in[{key!r}] must be a non-empty list")
        if len(values) > MAX_IN_VALUES:
            raise InvalidQueryError(f"metadata_in[{key!r}] has more than {MAX_IN_VALUES} values")
        # A disjunction, not `in [...]`: Milvus Lite fails `in` lists that mix types
        # (an int with a float, a number with a string).
        clauses.append(balanced([f'metadata["{key}"] == {format_value(v)}' for v in values], "or"))
    for field, lo, hi in (
        ("mtime", flt.mtime_min, flt.mtime_max),
        ("size", flt.size_min, flt.size_max),
    ):
        if lo is not None:
            clauses.append(f"{field} >= {_number(lo, field + '_min')}")
        if hi is not None:
            clauses.append(f"{field} <= {_number(hi, field + '_max')}")
        if lo is not None and hi is not None and lo > hi:
            raise InvalidQueryError(f"{field}_min is greater than {field}_max")
    return balanced(clauses, "and") if clauses else ""


def balanced(clauses: list[str], op: str) -> str:
    """Join ``clauses`` with ``op`` as a balanced tree of parenthesised pairs.

    Milvus nests a flat ``a or b or c ...`` one level per operator, and its query plan
    refuses nesting past about 45 levels (``unsupported expr proto node``); a balanced
    tree is only log2(n) deep, so every bound the filter advertises holds.
    """
    if len(clauses) == 1:
        return clauses[0]
    middle = len(clauses) // 2
    return f"({balanced(clauses[:middle], op)} {op} {balanced(clauses[middle:], op)})"
