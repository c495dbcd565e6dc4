"""The library's front door: :class:`ImageSearch`.

The CLI and the MCP server are thin layers over this class. It opens the embedding
model and the store lazily, once, and shares them between threads.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError, ModelLoadError
from mmsearch.filters import SearchFilter, quote_string
from mmsearch.indexing import ProgressCallback, index_paths, require_caption_field
from mmsearch.pathnames import check_path, require_utf8_path
from mmsearch.search import ImageQuery, build_query, run_search
from mmsearch.store import MilvusStore, check_collection_name
from mmsearch.types import CollectionStats, ImageRecord, IndexReport, SearchHit

if TYPE_CHECKING:
    from mmsearch.captioning import Captioner
    from mmsearch.embedding import ImageTextEmbedder

log = logging.getLogger(__name__)

EmbedderFactory = Callable[[Settings], "ImageTextEmbedder"]
CaptionerFactory = Callable[[Settings], "Captioner"]


def default_captioner_factory(settings: Settings) -> Captioner:
    """The vision-language model of ``settings.caption_model`` (default: the reranker's)."""
    from mmsearch.captioning import load_captioner

    return load_captioner(settings)


def default_embedder_factory(settings: Settings) -> ImageTextEmbedder:
    """The Visualized BGE model named by ``settings.embed_model``."""
    try:
        from mmsearch.models.visual_bge import create_embedder
    except ImportError as exc:
        raise ModelLoadError(f"the Visualized BGE embedder is not available: {exc}") from exc
    return create_embedder(
        settings.embed_model,
        device=settings.device,
        dtype=settings.dtype,
        batch_size=settings.batch_size,
    )


class ImageSearch:
    """Index images and search them by text, image, or both.

    ``embedder_factory`` builds the embedding model from the settings (default: the
    Visualized BGE model of ``settings.embed_model``); it is called at most once, on the
    first operation that needs vectors. ``get``, ``remove`` and ``stats`` never load it.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        embedder_factory: EmbedderFactory | None = None,
        captioner_factory: CaptionerFactory | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self._embedder_factory = embedder_factory or default_embedder_factory
        self._embedder: ImageTextEmbedder | None = None
        self._captioner_factory = captioner_factory or default_captioner_factory
        self._captioner: Captioner | None = None
        self._store: MilvusStore | None = None
        self._embedder_lock = threading.Lock()
        self._store_lock = threading.Lock()
        self._closed = False

    # -- lazily opened resources -----------------------------------------------------

    @property
    def store(self) -> MilvusStore:
        with self._store_lock:
            if self._closed:
                raise RuntimeError("this ImageSearch has been closed")
            if self._store is None:
                self._store = MilvusStore.from_settings(self.settings)
            return self._store

    @property
    def embedder(self) -> ImageTextEmbedder:
        with self._embedder_lock:
            if self._embedder is None:
                from mmsearch.embedding import ImageTextEmbedder

                embedder = self._embedder_factory(self.settings)
                if not isinstance(embedder, ImageTextEmbedder):
                    raise ModelLoadError(
                        f"embedder factory returned {type(embedder).__name__}, which does "
                        "not implement ImageTextEmbedder"
                    )
                self._embedder = embedder
            return self._embedder

    @property
    def captioner(self) -> Captioner:
        """The caption model, loaded on the first index run that asks for captions."""
        with self._embedder_lock:
            if self._captioner is None:
                self._captioner = self._captioner_factory(self.settings)
            return self._captioner

    def _collection(self, collection: str | None) -> str:
        return check_collection_name(collection or self.settings.collection)

    # -- operations -------------------------------------------------------------------

    def index(
        self,
        paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        recursive: bool = True,
        extensions: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        collection: str | None = None,
        prune: bool = False,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        captions: bool | None = None,
        roots: Sequence[Path] | None = None,
    ) -> IndexReport:
        """Index files, folders and globs; see :func:`mmsearch.indexing.index_paths`.

        ``captions`` (default ``settings.captions``): caption every image that has no
        caption yet, unchanged ones included (without re-embedding them). ``roots``
        (resolved folders) confines what may be read through links."""
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        name = self._collection(collection)
        if captions is None:
            captions = self.settings.captions
        store, embedder = self.store, self.embedder
        captioner = None
        if captions:
            info = store.ensure_collection(name, embedder.model_id, embedder.dim)
            require_caption_field(info)  # before the caption model is loaded
            captioner = self.captioner
        return index_paths(
            store,
            embedder,
            list(paths),
            settings=self.settings,
            collection=name,
            recursive=recursive,
            extensions=extensions,
            metadata=metadata,
            prune=prune,
            progress=progress,
            cancel=cancel,
            captioner=captioner,
            roots=roots,
        )

    def search(
        self,
        *,
        text: str | None = None,
        image: ImageQuery | None = None,
        top_k: int = 9,
        filter: SearchFilter | Mapping[str, Any] | None = None,
        collection: str | None = None,
        similar_to: str | os.PathLike[str] | None = None,
        min_score: float | None = None,
    ) -> list[SearchHit]:
        """The ``top_k`` stored images closest to the text, the image, or both fused;
        best first. Scores are cosine similarities, except for text queries over captioned
        images, whose hits are ranked by reciprocal rank fusion of the image and caption
        rankings (``score_kind="rrf"``; the cosine stays in ``cosine``).

        ``similar_to`` (a stored image's id, or the path it was indexed under): images
        like that one, found with its stored vector (steered by ``text`` if given), the
        image itself left out. ``min_score``: drop hits whose ``score`` is below it."""
        name = self._collection(collection)
        if similar_to is not None:
            self.store.collection_info(name)
            similar_to = self.resolve_image(similar_to, collection=name)
        query = build_query(
            text=text,
            image=image,
            top_k=top_k,
            filter=filter,
            settings=self.settings,
            similar_to=similar_to,
            min_score=min_score,
        )
        self.store.collection_info(name)  # unknown collection: fail before loading a model
        return run_search(
            self.store,
            self.embedder,
            name,
            query,
            rrf_k=self.settings.rrf_k,
            rrf_depth=self.settings.rrf_depth,
        )

    def resolve_image(
        self, id_or_path: str | os.PathLike[str], collection: str | None = None
    ) -> str:
        """The id of a stored image given by id or by the path it was indexed under;
        :class:`InvalidQueryError` naming the value when no such image is stored."""
        name = self._collection(collection)
        value = os.fspath(id_or_path)
        if not isinstance(value, str) or not value:
            raise InvalidQueryError("similar_to is empty")
        if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            if not self.store.get(name, [value]):
                raise InvalidQueryError(f"no image with id {value} in collection {name!r}")
            return value
        path = os.path.abspath(os.path.expanduser(value))
        quote_string(path)
        records = self.store.find_by_paths(name, [path]).get(path)
        if not records:
            raise InvalidQueryError(
                f"{value!r} is neither a stored image's id nor the path of an image "
                f"indexed in collection {name!r}"
            )
        return records[0].id

    def get(self, ids: Sequence[str], collection: str | None = None) -> list[ImageRecord]:
        """Stored records for these ids (unknown ids are left out), in the order given."""
        name = self._collection(collection)
        ids = _check_ids(ids)
        return self.store.get(name, ids)

    def remove(
        self,
        *,
        ids: Sequence[str] | None = None,
        paths: Sequence[str | os.PathLike[str]] | None = None,
        collection: str | None = None,
    ) -> int:
        """Delete records by id and/or by exact path (files are never touched).
        Returns the number of records removed."""
        if ids is None and paths is None:
            raise InvalidQueryError("give ids or paths to remove")
        name = self._collection(collection)
        store = self.store
        store.collection_info(name)
        targets: list[str] = list(_check_ids(ids)) if ids is not None else []
        if paths is not None:
            if isinstance(paths, str | os.PathLike):
                paths = [paths]
            abs_paths = [os.path.abspath(require_utf8_path(check_path(p))) for p in paths]
            for p in abs_paths:
                quote_string(p)
            for records in store.find_by_paths(name, abs_paths).values():
                targets.extend(r.id for r in records)
        removed = store.delete(name, targets)
        if removed:
            store.flush(name)
        return removed

    def stats(self, collection: str | None = None) -> CollectionStats:
        name = self._collection(collection)
        info = self.store.collection_info(name)
        return CollectionStats(
            collection=name,
            count=self.store.count(name),
            model_id=info.model_id,
            dim=info.dim,
            uri=self.store.uri,
        )

    def collections(self) -> list[str]:
        return self.store.list_collections()

    def close(self) -> None:
        """Release the store (and with it the Milvus Lite file lock). Idempotent."""
        with self._store_lock:
            self._closed = True
            if self._store is not None:
                self._store.close()
                self._store = None
        with self._embedder_lock:
            self._embedder = None
            self._captioner = None

    def __enter__(self) -> ImageSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_ids(ids: Sequence[str] | str | None) -> list[str]:
    if ids is None:
        return []
    if isinstance(ids, str):
        ids = [ids]
    out = []
    for i in ids:
        if not isinstance(i, str) or len(i) != 64 or any(c not in "0123456789abcdef" for c in i):
            raise InvalidQueryError(f"invalid image id {i!r}: expected 64 lowercase hex digits")
        out.append(i)
    return out
