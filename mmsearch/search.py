"""Queries: text, an example image, or both, embedded and looked up in the store."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError
from mmsearch.filters import SearchFilter, parse_filter, to_milvus_expr
from mmsearch.images import coerce_image
from mmsearch.store import MilvusStore
from mmsearch.types import SearchHit

if TYPE_CHECKING:
    from mmsearch.embedding import ImageTextEmbedder

ImageQuery = str | os.PathLike[str] | bytes | Image.Image


@dataclass(frozen=True)
class Query:
    """A validated query: text, image, or both (the fused image+text embedding)."""

    text: str | None
    image: Image.Image | None
    top_k: int
    filter: SearchFilter | None


def build_query(
    *,
    text: str | None,
    image: ImageQuery | None,
    top_k: int,
    filter: SearchFilter | Mapping[str, Any] | None,
    settings: Settings,
) -> Query:
    """Validate every part of a query before anything is embedded or searched."""
    if text is not None:
        if not isinstance(text, str):
            raise InvalidQueryError(f"text must be a string, not {type(text).__name__}")
        if not text.strip():
            raise InvalidQueryError("text is empty or whitespace")
        if len(text) > settings.max_query_chars:
            raise InvalidQueryError(
                f"text is {len(text)} characters, longer than the {settings.max_query_chars}-"
                "character limit (setting max_query_chars)"
            )
    if text is None and image is None:
        raise InvalidQueryError("give a text, an image, or both")
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise InvalidQueryError(f"top_k must be an integer, not {type(top_k).__name__}")
    if not 1 <= top_k <= settings.max_top_k:
        raise InvalidQueryError(f"top_k must be between 1 and {settings.max_top_k}, got {top_k}")
    flt = parse_filter(filter)
    if flt is not None and flt.path_prefix:
        # Stored paths are absolute and normalised; so is the folder they are matched to.
        folder = os.path.abspath(os.path.expanduser(flt.path_prefix))
        flt = flt.model_copy(update={"path_prefix": folder})
    to_milvus_expr(flt)  # validate now; the store's dialect is applied at search time
    pil = None
    if image is not None:
        pil = coerce_image(
            image, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )
    return Query(text=text, image=pil, top_k=top_k, filter=flt)


def embed_query(embedder: ImageTextEmbedder, query: Query) -> np.ndarray:
    """One L2-normalised vector for the query, shape ``(dim,)``."""
    texts = [query.text] if query.text is not None else None
    images = [embedder.preprocess(query.image)] if query.image is not None else None
    vec = np.asarray(embedder.encode(texts=texts, images=images), dtype=np.float32)
    return vec.reshape(-1, embedder.dim)[0]


def run_search(
    store: MilvusStore, embedder: ImageTextEmbedder, collection: str, query: Query
) -> list[SearchHit]:
    """Embed and search. The collection's model is checked before embedding, so a
    mismatch fails fast and a missing collection raises CollectionNotFoundError."""
    store.require_model(collection, embedder.model_id, embedder.dim)
    expr = to_milvus_expr(query.filter, like_patterns=store.like_patterns)
    vec = embed_query(embedder, query)
    return store.search(collection, vec, model_id=embedder.model_id, top_k=query.top_k, expr=expr)[
        0
    ]
