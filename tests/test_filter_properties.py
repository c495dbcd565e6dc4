"""Property tests: no input reaches Milvus as anything but the literal it was meant to be.

1. Every string ``quote_string`` accepts parses back (with an independent reader of
   Milvus string literals, below) to exactly the original, consuming the whole literal.
2. Every expression ``to_milvus_expr`` builds tokenizes into fixed field names,
   operators, numbers and string literals only, and each user string is one literal.
3. Against a real Milvus Lite collection whose paths and metadata are hostile strings,
   each filter selects exactly the rows a plain Python reference selects.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mmsearch.errors import InvalidQueryError
from mmsearch.filters import SearchFilter, quote_string, to_milvus_expr
from mmsearch.store import MilvusStore, StoredRow

ESCAPES = {"\\": "\\", '"': '"'}
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""Characters no literal may hold: Milvus Lite 2.x has no escape for newline or return."""


def read_literal(text: str, start: int = 0) -> tuple[str, int]:
    """Read the double-quoted Milvus string literal at ``text[start]``; return its value
    and the index just past its closing quote. Raises ValueError on anything else."""
    if text[start : start + 1] != '"':
        raise ValueError(f"no literal at {start}")
    out, i = [], start + 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt not in ESCAPES:
                raise ValueError(f"unknown escape \\{nxt!r}")
            out.append(ESCAPES[nxt])
            i += 2
            continue
        if CONTROL.match(ch):
            raise ValueError("raw control character inside a literal")
        out.append(ch)
        i += 1
    raise ValueError("unterminated literal")


TOKEN = re.compile(
    r"\s+|==|>=|<=|<|>|\(|\)|\[|\]|and\b|or\b|like\b|true\b|false\b"
    r"|path\b|size\b|mtime\b|metadata\b|-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
)


def tokenize(expr: str) -> Iterator[tuple[str, str]]:
    """("lit", value) for string literals, ("tok", text) for everything else; anything
    that is neither a literal nor an allowed token raises ValueError."""
    i = 0
    while i < len(expr):
        if expr[i] == '"':
            value, i = read_literal(expr, i)
            yield "lit", value
            continue
        m = TOKEN.match(expr, i)
        if not m:
            raise ValueError(f"unexpected text at {i}: {expr[i : i + 20]!r}")
        if m.group().strip():
            yield "tok", m.group()
        i = m.end()


# -- 1. quoting -------------------------------------------------------------------------

any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=64) | st.text(
    alphabet="\"\\\n\t\r'%_*?/ab ", max_size=32
)


@given(any_text)
@settings(max_examples=500)
def test_quoted_strings_read_back_exactly(value: str) -> None:
    if CONTROL.search(value):
        with pytest.raises(InvalidQueryError):
            quote_string(value)
        return
    literal = quote_string(value)
    assert read_literal(literal) == (value, len(literal))


@given(st.text(max_size=8), st.text(max_size=8))
def test_two_quoted_strings_never_merge(a: str, b: str) -> None:
    if CONTROL.search(a + b):
        return
    expr = f"path == {quote_string(a)} or path == {quote_string(b)}"
    assert [v for kind, v in tokenize(expr) if kind == "lit"] == [a, b]


# -- 2. expressions ---------------------------------------------------------------------

hostile = st.text(alphabet="\"\\'%_*?/ab é\n\t()[]=<>&|", min_size=1, max_size=12)
keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
scalars = st.one_of(
    hostile,
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
filters = st.builds(
    SearchFilter,
    path_prefix=st.none() | hostile,
    path_glob=st.none() | hostile,
    path_contains=st.none() | hostile,
    metadata=st.dictionaries(keys, scalars, max_size=3),
    metadata_in=st.dictionaries(keys, st.lists(scalars, min_size=1, max_size=3), max_size=2),
    size_min=st.none() | st.integers(0, 2**40),
    mtime_max=st.none() | st.floats(-1e12, 1e12),
)


@given(filters)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_expressions_hold_user_values_only_as_literals(flt: SearchFilter) -> None:
    try:
        expr = to_milvus_expr(flt)
    except InvalidQueryError:
        return  # refused (a backslash in a pattern, a control character): never sent
    tokens = list(tokenize(expr))
    literals = [v for kind, v in tokens if kind == "lit"]
    for value in [*flt.metadata.values(), *(v for vs in flt.metadata_in.values() for v in vs)]:
        if isinstance(value, str):
            assert value in literals
    if flt.path_contains is not None:
        assert any(flt.path_contains.replace("%", "\\%").replace("_", "\\_") in v for v in literals)
    for key in [*flt.metadata, *flt.metadata_in]:
        assert key in literals  # metadata["key"]: the key is a literal too
    # Outside literals only the fixed vocabulary appears: no value added a clause.
    assert {t for kind, t in tokens if kind == "tok"} <= {
        "==",
        ">=",
        "<=",
        "<",
        ">",
        "(",
        ")",
        "[",
        "]",
        "and",
        "or",
        "like",
        "true",
        "false",
        "path",
        "size",
        "mtime",
        "metadata",
    } | {t for kind, t in tokens if kind == "tok" and re.fullmatch(r"-?[\d.e+-]+", t)}


@given(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
def test_filter_model_refuses_unknown_fields(value: dict) -> None:
    if not value:
        return
    with pytest.raises(ValidationError):
        SearchFilter.model_validate({"x_" + k: v for k, v in value.items()})


# -- 3. against Milvus Lite ----------------------------------------------------------------

ALPHABET = "\"\\'%_*?/ab é\n()"
ROOT = "/p"


def _hostile_paths(n: int = 60, seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    chars = list(ALPHABET)
    paths = set()
    while len(paths) < n:
        depth = int(rng.integers(1, 4))
        parts = ["".join(rng.choice(chars, int(rng.integers(1, 5)))) for _ in range(depth)]
        parts = [p.strip("/") or "a" for p in parts]
        paths.add(ROOT + "/" + "/".join(parts))
    return sorted(paths)


PATHS = _hostile_paths()


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusStore]:
    store = MilvusStore(str(tmp_path_factory.mktemp("hostile") / "h.db"))
    store.ensure_collection("h", "test", 2)
    rows = [
        StoredRow(
            id=f"{i:064x}",
            path=p,
            size=i,
            mtime=float(i),
            metadata={"tag": p.rsplit("/", 1)[-1], "n": i % 3},
            vector=np.array([1.0, 0.0], dtype=np.float32),
        )
        for i, p in enumerate(PATHS)
    ]
    store.upsert("h", rows, model_id="test")
    yield store
    store.close()


def glob_matches(pattern: str, path: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, path, re.DOTALL) is not None


def reference(flt: SearchFilter, path: str, meta: dict) -> bool:
    if flt.path_prefix is not None:
        folder = flt.path_prefix.rstrip("/") if flt.path_prefix != "/" else ""
        if not (path == folder or path.startswith(folder + "/")):
            return False
    if flt.path_glob is not None and not glob_matches(flt.path_glob, path):
        return False
    if flt.path_contains is not None and flt.path_contains not in path:
        return False
    return all(meta.get(k) == v for k, v in flt.metadata.items())


def pieces(draw_from: list[str]) -> st.SearchStrategy[str]:
    """Substrings of stored paths (so filters do match something), or random hostile text."""
    sub = st.sampled_from(draw_from).flatmap(
        lambda p: st.tuples(st.integers(0, len(p)), st.integers(0, len(p))).map(
            lambda ab: p[min(ab) : max(ab)] or p
        )
    )
    return sub | st.text(alphabet=ALPHABET, min_size=1, max_size=6)


def as_glob(text: str) -> st.SearchStrategy[str]:
    return st.sampled_from([text, text + "*", "*" + text + "*", "*" + text, text + "?"])


path_filters = st.one_of(
    st.builds(SearchFilter, path_contains=pieces(PATHS)),
    st.builds(SearchFilter, path_glob=pieces(PATHS).flatmap(as_glob)),
    st.builds(
        SearchFilter,
        path_prefix=st.sampled_from(PATHS).map(lambda p: p.rsplit("/", 1)[0] or "/"),
    ),
    st.builds(SearchFilter, path_prefix=pieces(PATHS)),
    st.builds(
        SearchFilter,
        metadata=st.sampled_from(PATHS).map(lambda p: {"tag": p.rsplit("/", 1)[-1]}),
    ),
    st.builds(SearchFilter, metadata=pieces(PATHS).map(lambda t: {"tag": t})),
)


@given(path_filters)
@example(SearchFilter(path_prefix="/p/\t\\"))  # a trailing backslash is no separator on POSIX
@example(SearchFilter(path_glob="?*"))  # wildcards alone: Milvus Lite 2.5 matches nothing
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_milvus_selects_exactly_what_the_reference_selects(
    hostile_store: MilvusStore, flt: SearchFilter
) -> None:
    try:
        expr = to_milvus_expr(flt)
    except InvalidQueryError as exc:
        assert any(
            reason in str(exc)
            for reason in ("backslash", "control character", "literal", "does not support ?")
        ), exc
        return
    got = sorted(r.path for r in hostile_store.iter_records("h", expr))
    want = sorted(p for p in PATHS if reference(flt, p, {"tag": p.rsplit("/", 1)[-1]}))
    assert got == want, expr


def test_hostile_rows_were_stored_literally(hostile_store: MilvusStore) -> None:
    assert sorted(r.path for r in hostile_store.iter_records("h")) == PATHS
    assert any('"' in p for p in PATHS) and any("\\" in p for p in PATHS)
    assert Path(ROOT).is_absolute()
