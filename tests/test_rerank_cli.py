"""``mmsearch rerank`` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmsearch.config import Settings
from mmsearch.rerank.cli import make_rerank_command, rerank_command


@pytest.fixture
def settings(tiny_vlm_dir: Path) -> Settings:
    return Settings(rerank_model=str(tiny_vlm_dir), rerank_device="cpu", rerank_reason_max_chars=8)


def _args(paths: list[Path]) -> list[str]:
    return [arg for p in paths for arg in ("--candidate", str(p))]


def test_json_output_lists_every_candidate_once(settings, candidate_images) -> None:  # noqa: ANN001
    paths = candidate_images[:5]
    result = CliRunner().invoke(
        rerank_command, ["--text", "red", "--json", *_args(paths)], obj=settings
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(data["ids"]) == sorted(str(p) for p in paths)
    assert data["reranked"] is True


def test_plain_output_is_one_ranked_path_per_line(settings, candidate_images, tmp_path) -> None:  # noqa: ANN001
    paths = candidate_images[:4]
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(
        rerank_command,
        ["--image", str(candidate_images[9]), "--save-sheet", str(sheet), *_args(paths)],
        obj=settings,
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["1", "2", "3", "4"]
    assert sorted(line.split("\t")[1] for line in lines) == sorted(str(p) for p in paths)
    assert sheet.is_file()


def test_unknown_candidate_is_an_error_naming_it(settings, candidate_images) -> None:  # noqa: ANN001
    result = CliRunner().invoke(
        rerank_command,
        ["--text", "x", "--candidate", "abc123", *_args(candidate_images[:1])],
        obj=settings,
    )
    assert result.exit_code != 0
    assert "not an image file: abc123" in result.output


def test_stored_ids_are_resolved_to_paths(settings, candidate_images) -> None:  # noqa: ANN001
    stored = {"id-a": str(candidate_images[0]), "id-b": str(candidate_images[1])}
    command = make_rerank_command(lambda ids: {i: stored[i] for i in ids if i in stored})
    result = CliRunner().invoke(
        command, ["--text", "x", "--json", "-c", "id-a", "-c", "id-b"], obj=settings
    )
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.stdout)["ids"]) == ["id-a", "id-b"]


def test_too_many_candidates_is_a_clear_error(tiny_vlm_dir, candidate_images) -> None:  # noqa: ANN001
    settings = Settings(rerank_model=str(tiny_vlm_dir), max_rerank_candidates=3)
    result = CliRunner().invoke(
        rerank_command, ["--text", "x", *_args(candidate_images[:4])], obj=settings
    )
    assert result.exit_code != 0 and "at most 3" in result.output


def test_no_reason_returns_the_same_ranking_without_a_reason(settings, candidate_images) -> None:  # noqa: ANN001
    args = ["--text", "red", "--json", *_args(candidate_images[:5])]
    with_reason = CliRunner().invoke(rerank_command, args, obj=settings)
    without = CliRunner().invoke(rerank_command, [*args, "--no-reason"], obj=settings)
    assert with_reason.exit_code == 0 and without.exit_code == 0, without.output
    full, short = json.loads(with_reason.stdout), json.loads(without.stdout)
    assert full["reason"] and short["reason"] == ""
    assert short["reranked"] and short["ids"] == full["ids"]
