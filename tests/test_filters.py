"""Structured filters and their translation into Milvus expressions."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch.errors import InvalidQueryError
from mmsearch.filters import (
    SearchFilter,
    check_metadata,
    glob_to_like,
    parse_filter,
    quote_string,
    to_milvus_expr,
)
from mmsearch.store import MilvusStore, StoredRow

HOSTILE = [
    'a"b',
    "a'b",
    "a\\b",
    'a\\"b',
    '" or 1==1 or path == "',
    '" || true || "',
    'x") or (1==1',
    "tab\there",
    "ünïcödé/猫/😀",
    "%_*?[]",
    "",
]


# -- quoting ----------------------------------------------------------------------------


def test_quote_string_wraps_and_escapes() -> None:
    assert quote_string('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'


def test_quote_string_keeps_a_tab_as_it_is() -> None:
    assert quote_string("a\tb") == '"a\tb"'


@pytest.mark.parametrize("value", ["a\x00b", "a\x1bb", "a\x7fb", "a\nb", "a\rb"])
def test_quote_string_refuses_other_control_characters(value: str) -> None:
    with pytest.raises(InvalidQueryError, match="control character"):
        quote_string(value)


def test_quote_string_refuses_unpaired_surrogates() -> None:
    with pytest.raises(InvalidQueryError, match="surrogate"):
        quote_string("a\udcffb")


@pytest.mark.parametrize("value", HOSTILE)
def test_quoted_string_has_no_unescaped_quote_inside(value: str) -> None:
    inner = quote_string(value)[1:-1]
    i = 0
    while i < len(inner):
        if inner[i] == "\\":
            assert inner[i + 1] in '\\"ntr'
            i += 2
            continue
        assert inner[i] != '"'
        i += 1


# -- expressions ------------------------------------------------------------------------


def test_empty_filter_is_no_expression() -> None:
    assert to_milvus_expr(None) == ""
    assert to_milvus_expr(SearchFilter()) == ""


def test_metadata_equality_expression() -> None:
    expr = to_milvus_expr(SearchFilter(metadata={"camera": "X100", "year": 2024, "ok": True}))
    assert expr == (
        '(metadata["camera"] == "X100" and (metadata["year"] == 2024 and metadata["ok"] == true))'
    )


def test_metadata_in_is_a_disjunction() -> None:
    expr = to_milvus_expr(SearchFilter(metadata_in={"tag": ["a", "b"]}))
    assert expr == '(metadata["tag"] == "a" or metadata["tag"] == "b")'


def test_ranges_are_inclusive() -> None:
    expr = to_milvus_expr(SearchFilter(mtime_min=1.5, mtime_max=10, size_min=0, size_max=99))
    assert expr == "((mtime >= 1.5 and mtime <= 10) and (size >= 0 and size <= 99))"


def test_path_prefix_is_a_folder_range() -> None:
    expr = to_milvus_expr(SearchFilter(path_prefix="/photos/2024"))
    assert expr == (
        '(path == "/photos/2024" or (path >= "/photos/2024/" and path < "/photos/20240"))'
    )


def test_glob_wildcards_become_like_wildcards_and_literals_are_escaped() -> None:
    assert glob_to_like("/p/*_1.jpg") == "/p/%\\_1.jpg"
    assert glob_to_like("100%") == "100\\%"


@pytest.mark.parametrize("pattern", ["/p/x?1.jpg", "/p/*.jp?", "?"])
def test_single_character_wildcard_is_refused(pattern: str) -> None:
    with pytest.raises(InvalidQueryError, match="does not support \\?"):
        to_milvus_expr(SearchFilter(path_glob=pattern))


@pytest.mark.parametrize(("field", "value"), [("path_glob", "*a\\b"), ("path_contains", "a\\b")])
def test_backslash_in_like_patterns_is_refused(field: str, value: str) -> None:
    with pytest.raises(InvalidQueryError, match="backslash"):
        to_milvus_expr(SearchFilter(**{field: value}))


def test_backslash_in_prefixes_and_exact_globs_is_fine() -> None:
    assert to_milvus_expr(SearchFilter(path_glob="C:\\x\\*")) == (
        '(path >= "C:\\\\x\\\\" and path < "C:\\\\x]")'
    )


@pytest.mark.parametrize(
    "key",
    ["", "1abc", "a-b", 'a"]==1 or metadata["b', "a b", "ü", "x" * 65, "a]", "a.b"],
)
def test_invalid_metadata_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidQueryError, match="invalid metadata key"):
        to_milvus_expr(SearchFilter(metadata={key: 1}))


def test_model_construct_cannot_bypass_validation() -> None:
    evil = SearchFilter.model_construct(metadata={'k"] == 1 or 1==1 or metadata["k': 1})
    with pytest.raises(InvalidQueryError):
        to_milvus_expr(evil)
    with pytest.raises(InvalidQueryError):
        to_milvus_expr(SearchFilter.model_construct(size_min="0 or 1==1"))
    with pytest.raises(InvalidQueryError):
        to_milvus_expr(SearchFilter.model_construct(metadata={"k": ["list"]}))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**63, None, [1], {"a": 1}])
def test_unsupported_metadata_values_are_refused(value: object) -> None:
    with pytest.raises(InvalidQueryError):
        to_milvus_expr(SearchFilter.model_construct(metadata={"k": value}))


@pytest.mark.parametrize(
    "raw",
    [
        {"size_min": "10"},
        {"size_min": -1},
        {"mtime_min": "yesterday"},
        {"metadata": {"k": [1, 2]}},
        {"metadata_in": {"k": []}},
        {"metadata_in": {"k": "abc"}},
        {"path_prefix": ""},
        {"unknown_field": 1},
        {"metadata": {"k": None}},
    ],
)
def test_parse_filter_turns_wrong_types_into_invalid_query(raw: dict) -> None:
    with pytest.raises(InvalidQueryError, match="invalid filter"):
        parse_filter(raw)


def test_parse_filter_refuses_non_mapping() -> None:
    with pytest.raises(InvalidQueryError, match="must be an object"):
        parse_filter("path == 'x'")  # type: ignore[arg-type]


def test_min_greater_than_max_is_refused() -> None:
    with pytest.raises(InvalidQueryError, match="greater than"):
        to_milvus_expr(SearchFilter(size_min=10, size_max=5))


def test_stored_metadata_is_checked_like_filters() -> None:
    assert check_metadata({"a": 1, "b": "x"}) == {"a": 1, "b": "x"}
    with pytest.raises(InvalidQueryError):
        check_metadata({"bad key": 1})
    with pytest.raises(InvalidQueryError):
        check_metadata({"k": {"nested": 1}})


# -- against Milvus Lite --------------------------------------------------------------------

DIM = 4


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory):
    store = MilvusStore(str(tmp_path_factory.mktemp("filters") / "f.db"))
    store.ensure_collection("t", "m", DIM)
    values = [v for v in HOSTILE if v] + ["/photos/2024/a.jpg", "/photos/2024-old/b.jpg"]
    values += ["/photos/2024", "/photos/2024/deep/c.jpg", "/p/x_1.jpg", "/p/xa1.jpg"]
    rows = [
        StoredRow(
            id=f"{i:064x}",
            path=v,
            size=i,
            mtime=float(i),
            metadata={"s": v, "n": i, "even": i % 2 == 0},
            vector=np.eye(DIM, dtype=np.float32)[i % DIM],
        )
        for i, v in enumerate(values)
    ]
    store.upsert("t", rows, model_id="m")
    yield store, rows
    store.close()


def _matching_paths(store: MilvusStore, flt: SearchFilter) -> set[str]:
    return {r.path for r in store.iter_records("t", to_milvus_expr(flt))}


@pytest.mark.parametrize("value", [v for v in HOSTILE if v])
def test_hostile_strings_match_only_themselves(hostile_store, value: str) -> None:
    store, _ = hostile_store
    assert _matching_paths(store, SearchFilter(metadata={"s": value})) == {value}


@pytest.mark.parametrize("value", [v for v in HOSTILE if v and "\\" not in v])
def test_hostile_substrings_match_literally(hostile_store, value: str) -> None:
    store, rows = hostile_store
    expected = {r.path for r in rows if value in r.path}
    assert _matching_paths(store, SearchFilter(path_contains=value)) == expected


def test_path_prefix_matches_the_folder_not_its_siblings(hostile_store) -> None:
    store, _ = hostile_store
    assert _matching_paths(store, SearchFilter(path_prefix="/photos/2024/")) == {
        "/photos/2024",
        "/photos/2024/a.jpg",
        "/photos/2024/deep/c.jpg",
    }


def test_path_glob_underscore_is_literal(hostile_store) -> None:
    store, _ = hostile_store
    assert _matching_paths(store, SearchFilter(path_glob="/p/x_1.*")) == {"/p/x_1.jpg"}
    assert _matching_paths(store, SearchFilter(path_glob="*/x_1.jpg")) == {"/p/x_1.jpg"}


def test_metadata_in_and_ranges_against_milvus(hostile_store) -> None:
    store, rows = hostile_store
    flt = SearchFilter(metadata_in={"n": [1, 2, 3]}, metadata={"even": True}, size_max=2)
    assert _matching_paths(store, flt) == {rows[2].path}


def test_glob_with_only_trailing_stars_is_a_prefix_range() -> None:
    assert (
        to_milvus_expr(SearchFilter(path_glob="/p/x_*")) == '(path >= "/p/x_" and path < "/p/x`")'
    )


def test_glob_without_wildcards_is_equality() -> None:
    assert to_milvus_expr(SearchFilter(path_glob="/p/a.jpg")) == 'path == "/p/a.jpg"'


def test_glob_of_only_stars_matches_everything() -> None:
    assert to_milvus_expr(SearchFilter(path_glob="**")) == ""


def test_servers_without_full_like_refuse_infix_patterns_but_take_prefixes() -> None:
    with pytest.raises(InvalidQueryError, match="only match path prefixes"):
        to_milvus_expr(SearchFilter(path_glob="*.jpg"), like_patterns=False)
    with pytest.raises(InvalidQueryError, match="substrings"):
        to_milvus_expr(SearchFilter(path_contains="cat"), like_patterns=False)
    expr = to_milvus_expr(SearchFilter(path_glob="/a/*"), like_patterns=False)
    assert expr == '(path >= "/a/" and path < "/a0")'


@pytest.mark.parametrize("pattern", ["*", "**"])
def test_glob_of_stars_alone_filters_nothing(pattern: str) -> None:
    assert to_milvus_expr(SearchFilter(path_glob=pattern)) == ""
