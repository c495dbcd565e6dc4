"""Search by a stored image (``similar_to``) and the ``min_score`` cutoff, in the library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmsearch.errors import InvalidQueryError
from mmsearch.filters import SearchFilter
from mmsearch.images import content_hash
from mmsearch.library import ImageSearch


@pytest.fixture
def indexed(engine: ImageSearch, photo_dir: Path) -> ImageSearch:
    assert engine.index([photo_dir]).indexed == 5
    return engine


def _id(path: Path) -> str:
    return content_hash(path.read_bytes())


def test_similar_to_uses_the_stored_vector_and_leaves_the_image_out(
    indexed: ImageSearch, embedder, photo_dir: Path
) -> None:
    cat = photo_dir / "chelsea.png"
    by_file = indexed.search(image=cat, top_k=5)  # embeds the file: the reference ranking
    calls = embedder.encode_calls
    hits = indexed.search(similar_to=_id(cat), top_k=5)
    assert embedder.encode_calls == calls, "similar_to must not embed anything"
    assert _id(cat) not in {h.id for h in hits}
    assert len(hits) == 4
    expected = [h for h in by_file if h.id != _id(cat)]
    assert [h.id for h in hits] == [h.id for h in expected]
    for got, want in zip(hits, expected, strict=True):
        assert got.score == pytest.approx(want.score, abs=1e-3)


def test_similar_to_accepts_the_indexed_path(indexed: ImageSearch, photo_dir: Path) -> None:
    cat = photo_dir / "chelsea.png"
    by_id = indexed.search(similar_to=_id(cat), top_k=3)
    by_path = indexed.search(similar_to=str(cat), top_k=3)
    assert [h.id for h in by_path] == [h.id for h in by_id]


def test_similar_to_applies_filters_and_top_k(indexed: ImageSearch, photo_dir: Path) -> None:
    cat = photo_dir / "chelsea.png"
    hits = indexed.search(similar_to=_id(cat), top_k=10, filter=SearchFilter(path_glob="*.jpg"))
    assert {Path(h.path).name for h in hits} == {"coffee.jpg", "rocket.jpg"}
    assert len(indexed.search(similar_to=_id(cat), top_k=2)) == 2


def test_similar_to_with_text_is_steered_by_the_text(
    indexed: ImageSearch, embedder, photo_dir: Path
) -> None:
    cat = photo_dir / "chelsea.png"
    plain = indexed.search(similar_to=_id(cat), top_k=4)
    calls = embedder.encode_calls
    steered = indexed.search(similar_to=_id(cat), text="a rocket at night", top_k=4)
    assert embedder.encode_calls == calls + 1  # the text only; the image is not re-read
    assert _id(cat) not in {h.id for h in steered}
    # The query is normalise(stored + text): check one score against that by hand.
    store = indexed.store
    rows = store.get_rows("images", [_id(cat), steered[0].id], with_vectors=True)
    text_vec = np.asarray(embedder.inner.encode(texts=["a rocket at night"]))[0]
    q = np.asarray(rows[_id(cat)]["vector"]) + text_vec
    q = q / np.linalg.norm(q)
    want = float(np.dot(q, np.asarray(rows[steered[0].id]["vector"])))
    assert steered[0].score == pytest.approx(want, abs=1e-3)
    assert [h.score for h in steered] != [h.score for h in plain]


def test_min_score_drops_weaker_hits(indexed: ImageSearch, photo_dir: Path) -> None:
    cat = photo_dir / "chelsea.png"
    every = indexed.search(image=cat, top_k=5)
    cutoff = (every[1].score + every[2].score) / 2
    kept = indexed.search(image=cat, top_k=5, min_score=cutoff)
    assert [h.id for h in kept] == [h.id for h in every[:2]]
    similar = indexed.search(similar_to=_id(cat), top_k=5, min_score=cutoff)
    assert [h.id for h in similar] == [every[1].id]
    assert indexed.search(text="a cat", top_k=5, min_score=2.0) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"similar_to": "0" * 64}, "no image with id 0000"),
        ({"similar_to": "/nowhere/cat.png"}, "neither a stored image's id nor the path"),
        ({"similar_to": "", "top_k": 3}, "similar_to is empty"),
        ({"min_score": "high", "text": "x"}, "min_score must be a number"),
        ({"min_score": float("nan"), "text": "x"}, "min_score must be a finite number"),
    ],
)
def test_bad_similar_to_and_min_score_are_refused(
    indexed: ImageSearch, kwargs: dict, message: str
) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        indexed.search(**kwargs)


def test_similar_to_and_image_together_are_refused(indexed: ImageSearch, photo_dir: Path) -> None:
    cat = photo_dir / "chelsea.png"
    with pytest.raises(InvalidQueryError, match="image or similar_to, not both"):
        indexed.search(similar_to=_id(cat), image=cat)


# -- the command line ---------------------------------------------------------------------


@pytest.fixture
def run(settings, embedder, monkeypatch: pytest.MonkeyPatch):
    from click.testing import CliRunner

    from mmsearch.cli import cli

    monkeypatch.setenv("MMSEARCH_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(
            cli, list(args), obj={"embedder_factory": lambda s: embedder}, catch_exceptions=False
        )

    return invoke


def test_cli_similar_to_by_id_and_path(run, embedder, photo_dir: Path) -> None:
    import json

    assert run("index", str(photo_dir)).exit_code == 0
    cat = photo_dir / "chelsea.png"
    calls = embedder.encode_calls
    by_id = run("search", "--similar-to", _id(cat), "--json", "--filter-path-glob", "*.png")
    assert by_id.exit_code == 0, by_id.output
    assert embedder.encode_calls == calls
    hits = json.loads(by_id.stdout)
    assert {Path(h["path"]).name for h in hits} == {"astronaut.png", "camera.png"}
    by_path = run("search", "--similar-to", str(cat), "--json", "--filter-path-glob", "*.png")
    assert json.loads(by_path.stdout) == hits
    cutoff = (hits[0]["score"] + hits[1]["score"]) / 2
    cut = run(
        "search",
        "--similar-to",
        str(cat),
        "--json",
        "--min-score",
        str(cutoff),
        "--filter-path-glob",
        "*.png",
    )
    assert [h["id"] for h in json.loads(cut.stdout)] == [hits[0]["id"]]


def test_cli_unknown_similar_to_is_one_clear_error(run, photo_dir: Path) -> None:
    assert run("index", str(photo_dir)).exit_code == 0
    result = run("search", "--similar-to", str(photo_dir / "missing.png"))
    assert result.exit_code == 1
    assert "neither a stored image's id nor the path" in result.stderr


# -- the MCP tool ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_mcp_similar_to_and_min_score(
    settings, embedder, photo_dir: Path, anyio_backend: str
) -> None:
    from mcp import Client

    from mcp_server import create_server

    settings = settings.model_copy(update={"allowed_roots": [photo_dir]})
    server = create_server(
        settings, search_factory=lambda s: ImageSearch(s, embedder_factory=lambda _: embedder)
    )
    cat = photo_dir / "chelsea.png"
    try:
        async with Client(server) as client:
            await client.call_tool("index_images", {"paths": [str(photo_dir)]})
            calls = embedder.encode_calls
            similar = await client.call_tool(
                "multimodal_search",
                {"similar_to": _id(cat), "top_k": 9, "filter": {"path_glob": "*.png"}},
            )
            assert embedder.encode_calls == calls
            hits = similar.structured_content["hits"]
            assert {Path(h["path"]).name for h in hits} == {"astronaut.png", "camera.png"}
            cutoff = (hits[0]["score"] + hits[1]["score"]) / 2
            cut = await client.call_tool(
                "multimodal_search",
                {"similar_to": _id(cat), "filter": {"path_glob": "*.png"}, "min_score": cutoff},
            )
            unknown = await client.call_tool("multimodal_search", {"similar_to": "0" * 64})
            not_an_id = await client.call_tool("multimodal_search", {"similar_to": str(cat)})
    finally:
        server.shared_search.close()
    assert [h["id"] for h in cut.structured_content["hits"]] == [hits[0]["id"]]
    assert unknown.is_error and "no image with id 0000" in unknown.content[0].text
    assert not_an_id.is_error
