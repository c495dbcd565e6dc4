"""mmsearch.access: which paths the server may touch."""

from pathlib import Path

import pytest

from mmsearch.access import ensure_allowed, narrow_roots, resolve_roots
from mmsearch.config import Settings
from mmsearch.errors import AccessDeniedError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "allowed" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return (tmp_path / "allowed").resolve()


def test_path_inside_a_root_is_returned_resolved(root: Path) -> None:
    assert ensure_allowed(root / "sub" / ".." / "sub" / "a.jpg", [root]) == root / "sub" / "a.jpg"


def test_the_root_itself_is_allowed(root: Path) -> None:
    assert ensure_allowed(root, [root]) == root


def test_dotdot_escaping_the_root_is_refused(root: Path) -> None:
    with pytest.raises(AccessDeniedError, match="outside the allowed roots"):
        ensure_allowed(root / ".." / "outside" / "a.jpg", [root])


def test_symlink_pointing_outside_is_refused(root: Path) -> None:
    (root / "link").symlink_to(root.parent / "outside")
    with pytest.raises(AccessDeniedError):
        ensure_allowed(root / "link" / "a.jpg", [root])


def test_sibling_with_common_prefix_is_refused(root: Path) -> None:
    (root.parent / "allowed-not").mkdir()
    with pytest.raises(AccessDeniedError):
        ensure_allowed(root.parent / "allowed-not" / "a.jpg", [root])


def test_no_roots_refuses_everything_and_says_how_to_fix_it(root: Path) -> None:
    with pytest.raises(AccessDeniedError, match="MMSEARCH_ALLOWED_ROOTS"):
        ensure_allowed(root / "a.jpg", [])


def test_client_roots_narrow_configured_roots(root: Path) -> None:
    sub = root / "sub"
    assert narrow_roots([root], [sub]) == [sub]
    assert narrow_roots([sub], [root]) == [sub]
    assert narrow_roots([sub], [root.parent / "outside"]) == []


def test_either_list_alone_is_used_as_is(root: Path) -> None:
    assert narrow_roots(None, [root]) == [root]
    assert narrow_roots([root], None) == [root]
    assert narrow_roots(None, None) == []


def test_resolve_roots_expands_home() -> None:
    assert resolve_roots(["~"]) == [Path.home().resolve()]


def test_allowed_roots_setting_reads_pathsep_lists_and_json(monkeypatch) -> None:
    monkeypatch.setenv("MMSEARCH_ALLOWED_ROOTS", "/a:/b c")
    assert Settings().allowed_roots == [Path("/a"), Path("/b c")]
    monkeypatch.setenv("MMSEARCH_ALLOWED_ROOTS", '["/x:y"]')
    assert Settings().allowed_roots == [Path("/x:y")]
    monkeypatch.delenv("MMSEARCH_ALLOWED_ROOTS")
    assert Settings().allowed_roots is None
