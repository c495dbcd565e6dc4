"""Queries: text, an example image, a stored image, or a mix, embedded and looked up in
the store.

Image and image+text queries rank the stored images by the cosine similarity of their
embeddings with the query's. A text-only query in a collection that holds captions is
answered from several rankings fused by reciprocal rank fusion (:mod:`mmsearch.fusion`):
the query text's embedding against the image embeddings, against the caption embeddings,
and (where Milvus has full-text search) BM25 over the caption words. Where no image has a
caption yet, a text query is the plain image ranking.

A query by a stored image (``similar_to``) uses the vector already stored for it, so nothing
is embedded, and leaves that image out of its hits. With text as well, the query is the
stored vector plus the text's embedding, normalised: the text steers the image the way a
composed query does, without reading the image file again (it may have moved or lie
outside what the caller may read).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError, StoreError
from mmsearch.filters import SearchFilter, parse_filter, quote_string, to_milvus_expr
from mmsearch.fusion import DEFAULT_K, reciprocal_rank_fusion
from mmsearch.images import coerce_image
from mmsearch.pathnames import is_utf8
from mmsearch.store import CAPTION_VECTOR_FIELD, CollectionInfo, MilvusStore
from mmsearch.types import SearchHit

if TYPE_CHECKING:
    from mmsearch.embedding import ImageTextEmbedder

log = logging.getLogger(__name__)

ImageQuery = str | os.PathLike[str] | bytes | Image.Image


@dataclass(frozen=True)
class Query:
    """A validated query: text, image, or both (the fused image+text embedding), or a
    stored image's id (``similar_to``), optionally steered by text."""

    text: str | None
    image: Image.Image | None
    top_k: int
    filter: SearchFilter | None
    similar_to: str | None = None
    min_score: float | None = None


def build_query(
    *,
    text: str | None,
    image: ImageQuery | None,
    top_k: int,
    filter: SearchFilter | Mapping[str, Any] | None,
    settings: Settings,
    similar_to: str | None = None,
    min_score: float | None = None,
) -> Query:
    """Validate every part of a query before anything is embedded or searched."""
    if text is not None:
        if not isinstance(text, str):
            raise InvalidQueryError(f"text must be a string, not {type(text).__name__}")
        if not text.strip():
            raise InvalidQueryError("text is empty or whitespace")
        if not is_utf8(text):
            raise InvalidQueryError("text is not valid Unicode (it holds a lone surrogate)")
        if len(text) > settings.max_query_chars:
            raise InvalidQueryError(
                f"text is {len(text)} characters, longer than the {settings.max_query_chars}-"
                "character limit (setting max_query_chars)"
            )
    if similar_to is not None:
        if image is not None:
            raise InvalidQueryError("give image or similar_to, not both")
        if not _is_image_id(similar_to):
            raise InvalidQueryError(
                f"similar_to must be a stored image's id (64 lowercase hex digits), "
                f"got {similar_to!r}"
            )
    elif text is None and image is None:
        raise InvalidQueryError("give a text, an image, or both")
    if min_score is not None:
        if isinstance(min_score, bool) or not isinstance(min_score, int | float):
            raise InvalidQueryError(f"min_score must be a number, not {type(min_score).__name__}")
        if not np.isfinite(min_score):
            raise InvalidQueryError(f"min_score must be a finite number, got {min_score}")
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise InvalidQueryError(f"top_k must be an integer, not {type(top_k).__name__}")
    if not 1 <= top_k <= settings.max_top_k:
        raise InvalidQueryError(f"top_k must be between 1 and {settings.max_top_k}, got {top_k}")
    flt = parse_filter(filter)
    if flt is not None and flt.path_prefix:
        # Stored paths are absolute and normalised; so is the folder they are matched to.
        quote_string(flt.path_prefix)  # a NUL byte would reach expanduser's user lookup
        folder = os.path.abspath(os.path.expanduser(flt.path_prefix))
        flt = flt.model_copy(update={"path_prefix": folder})
    to_milvus_expr(flt)  # validate now; the store's dialect is applied at search time
    pil = None
    if image is not None:
        pil = coerce_image(
            image, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )
    return Query(
        text=text,
        image=pil,
        top_k=top_k,
        filter=flt,
        similar_to=similar_to,
        min_score=None if min_score is None else float(min_score),
    )


def _is_image_id(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def embed_query(embedder: ImageTextEmbedder, query: Query) -> np.ndarray:
    """One L2-normalised vector for the query, shape ``(dim,)``."""
    texts = [query.text] if query.text is not None else None
    images = [embedder.preprocess(query.image)] if query.image is not None else None
    vec = np.asarray(embedder.encode(texts=texts, images=images), dtype=np.float32)
    return vec.reshape(-1, embedder.dim)[0]


def run_search(
    store: MilvusStore,
    embedder: ImageTextEmbedder,
    collection: str,
    query: Query,
    *,
    rrf_k: int = DEFAULT_K,
    rrf_depth: int = 100,
) -> list[SearchHit]:
    """Embed and search. The collection's model is checked before embedding, so a
    mismatch fails fast and a missing collection raises CollectionNotFoundError.

    A text-only query over captioned images is fused (see the module doc); each ranking
    contributes its best ``max(top_k, rrf_depth)`` hits, and the fused hits carry the
    RRF score in ``score`` (``score_kind="rrf"``) and the image cosine in ``cosine``.
    Hits scoring below ``query.min_score`` are dropped."""
    hits = _search(store, embedder, collection, query, rrf_k=rrf_k, rrf_depth=rrf_depth)
    if query.min_score is not None:
        hits = [h for h in hits if h.score >= query.min_score]
    return hits


def _search(
    store: MilvusStore,
    embedder: ImageTextEmbedder,
    collection: str,
    query: Query,
    *,
    rrf_k: int,
    rrf_depth: int,
) -> list[SearchHit]:
    info = store.require_model(collection, embedder.model_id, embedder.dim)
    expr = to_milvus_expr(query.filter, like_patterns=store.like_patterns)
    if query.similar_to is not None:
        vec = _similar_vector(store, embedder, collection, query)
        not_self = f"id != {quote_string(query.similar_to)}"
        expr = f"({expr}) and {not_self}" if expr else not_self
        return store.search(
            collection, vec, model_id=embedder.model_id, top_k=query.top_k, expr=expr
        )[0]
    vec = embed_query(embedder, query)
    model_id = embedder.model_id
    if query.image is None and query.text is not None:
        depth = max(query.top_k, rrf_depth)
        caption_rankings = _caption_rankings(store, info, vec, query.text, depth, expr, model_id)
        if any(caption_rankings):
            image_hits = store.search(collection, vec, model_id=model_id, top_k=depth, expr=expr)
            return _fuse(store, collection, vec, [image_hits[0], *caption_rankings], query, rrf_k)
    return store.search(collection, vec, model_id=model_id, top_k=query.top_k, expr=expr)[0]


def _similar_vector(
    store: MilvusStore, embedder: ImageTextEmbedder, collection: str, query: Query
) -> np.ndarray:
    """The stored image's vector, steered by the query text when there is one."""
    assert query.similar_to is not None
    rows = store.get_rows(collection, [query.similar_to], with_vectors=True)
    if query.similar_to not in rows:
        raise InvalidQueryError(
            f"similar_to: no image with id {query.similar_to} in collection {collection!r}"
        )
    vec = np.asarray(rows[query.similar_to]["vector"], dtype=np.float32)
    if query.text is not None:
        text_vec = np.asarray(embedder.encode(texts=[query.text]), dtype=np.float32)
        vec = vec + text_vec.reshape(-1, embedder.dim)[0]
        norm = float(np.linalg.norm(vec))
        if norm > 0:
            vec = vec / norm
    return vec


def _caption_rankings(
    store: MilvusStore,
    info: CollectionInfo,
    vec: np.ndarray,
    text: str,
    depth: int,
    expr: str,
    model_id: str,
) -> list[list[SearchHit]]:
    """The caption-side rankings the collection supports (empty lists where no image
    has a caption)."""
    rankings: list[list[SearchHit]] = []
    if info.caption_vector:
        rankings.append(
            store.search(
                info.name,
                vec,
                model_id=model_id,
                top_k=depth,
                expr=expr,
                field=CAPTION_VECTOR_FIELD,
            )[0]
        )
    if info.caption_text_search:
        try:
            rankings.append(store.search_caption_text(info.name, text, top_k=depth, expr=expr))
        except StoreError as exc:  # the other rankings still answer the query
            log.warning("full-text search over captions failed: %s", exc)
    return rankings


def _fuse(
    store: MilvusStore,
    collection: str,
    vec: np.ndarray,
    rankings: list[list[SearchHit]],
    query: Query,
    rrf_k: int,
) -> list[SearchHit]:
    fused = reciprocal_rank_fusion([[h.id for h in r] for r in rankings], rrf_k)[: query.top_k]
    hits: dict[str, SearchHit] = {}
    for ranking in reversed(rankings):  # the image ranking's hit (with its cosine) wins
        hits.update((h.id, h) for h in ranking)
    missing = [i for i, _ in fused if hits[i].cosine is None]
    cosines: dict[str, float] = {}
    if missing:
        rows = store.get_rows(collection, missing, with_vectors=True)
        cosines = {
            i: float(np.dot(np.asarray(row["vector"], dtype=np.float32), vec))
            for i, row in rows.items()
        }
    return [
        hits[i].model_copy(
            update={
                "score": score,
                "score_kind": "rrf",
                "cosine": hits[i].cosine if hits[i].cosine is not None else cosines.get(i),
            }
        )
        for i, score in fused
    ]
