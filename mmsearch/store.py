"""The vector store: one Milvus collection per index, over ``pymilvus.MilvusClient``.

A collection holds one row per distinct image content: the primary key is the SHA-256
of the file's bytes, so the same bytes are never stored twice. Each collection records
the embedding model and dimension that filled it, and every read or write that carries
vectors checks them, so vectors from different models are never mixed or compared.

Vectors arrive L2-normalised, so inner product equals cosine similarity; IP is used
because it is the cheaper metric on Milvus Lite.

Milvus Lite allows one process per database file; a reopened collection must be loaded
before it can be searched, which :meth:`MilvusStore._ready` takes care of.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.config import Settings
from mmsearch.errors import (
    CaptionError,
    CollectionNotFoundError,
    ConfigurationError,
    InvalidQueryError,
    ModelMismatchError,
    StoreError,
)
from mmsearch.filters import quote_string
from mmsearch.types import ImageRecord, SearchHit

log = logging.getLogger(__name__)

INSERT_BATCH = 1000
"""Rows per insert/upsert request (Milvus limits the size of one request)."""
QUERY_BATCH = 1000
MAX_PATH_CHARS = 4096
LITE_FILE_NAME = re.compile(r"^[A-Za-z0-9.\-_]{1,36}$")
"""Database file names Milvus Lite 2.x accepts (it refuses others when it starts)."""
COLLECTION_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")

PROP_MODEL = "mmsearch.model_id"
PROP_DIM = "mmsearch.dim"
PROP_SCHEMA = "mmsearch.schema"
SCHEMA_VERSION = "1"
DESCRIPTION_PREFIX = "mmsearch images "

RECORD_FIELDS = ["id", "path", "size", "mtime", "metadata"]

CAPTION_FIELD = "caption"
CAPTION_VECTOR_FIELD = "caption_vector"
CAPTION_SPARSE_FIELD = "caption_sparse"
"""BM25 term weights of the caption, computed by Milvus from ``caption`` (full-text search)."""
CAPTION_MAX_BYTES = 2048
HAS_CAPTION = f'{CAPTION_FIELD} != ""'


@dataclass(frozen=True)
class IndexConfig:
    """How new collections are indexed and how indexing flushes: the knobs that decide
    Milvus speed, kept together so they are easy to tune."""

    index_type: str = "FLAT"
    index_params: dict[str, Any] | None = None
    search_params: dict[str, Any] | None = None
    flush: str = "auto"

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexConfig:
        return cls(
            index_type=settings.milvus_index_type,
            index_params=dict(settings.milvus_index_params),
            search_params=dict(settings.milvus_search_params),
            flush=settings.milvus_flush,
        )


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    model_id: str
    dim: int
    caption: bool = False
    """The collection stores captions (created by a version of mmsearch that has them)."""
    caption_vector: bool = False
    """... and their embeddings (a second vector field: Milvus Lite, servers from 2.4)."""
    caption_text_search: bool = False
    """... and their BM25 full-text index (Milvus Lite, servers from 2.5)."""

    @property
    def record_fields(self) -> list[str]:
        return RECORD_FIELDS + ([CAPTION_FIELD] if self.caption else [])


@dataclass
class StoredRow:
    """One row to write: the record plus its embedding."""

    id: str
    path: str
    size: int
    mtime: float
    metadata: dict[str, Any]
    vector: np.ndarray | Sequence[float]
    caption: str = ""
    """Empty: no caption (yet)."""
    caption_vector: np.ndarray | Sequence[float] | None = None
    """The caption's embedding by the embedder's text tower; ``None`` without a caption."""

    def to_entity(self, info: CollectionInfo | None = None) -> dict[str, Any]:
        """The row as Milvus takes it; with ``info``, the caption fields the collection has
        (a row without a caption stores an empty caption and a zero caption vector, which
        caption searches leave out)."""
        entity = {
            "id": self.id,
            "path": self.path,
            "size": int(self.size),
            "mtime": float(self.mtime),
            "metadata": self.metadata,
            "vector": _float_list(self.vector),
        }
        if info is not None and info.caption:
            entity[CAPTION_FIELD] = self.caption
        if info is not None and info.caption_vector:
            if self.caption and self.caption_vector is not None:
                entity[CAPTION_VECTOR_FIELD] = _float_list(self.caption_vector)
            else:
                entity[CAPTION_VECTOR_FIELD] = [0.0] * info.dim
        return entity


def _float_list(vec: np.ndarray | Sequence[float]) -> list[float]:
    return vec.astype(np.float32).tolist() if isinstance(vec, np.ndarray) else list(vec)


def collection_marker(model_id: str, dim: int) -> tuple[str, dict[str, str]]:
    """The collection description and properties that record which model filled a
    collection. Both carry it: Milvus servers keep properties, Milvus Lite 2.x drops
    them (and refuses to alter them) but keeps the description."""
    properties = {PROP_MODEL: model_id, PROP_DIM: str(dim), PROP_SCHEMA: SCHEMA_VERSION}
    return DESCRIPTION_PREFIX + json.dumps(properties, sort_keys=True), properties


def _description_properties(description: Any) -> dict[str, str]:
    """The properties recorded in a description written by :func:`collection_marker`;
    empty for any other description."""
    if not isinstance(description, str) or not description.startswith(DESCRIPTION_PREFIX):
        return {}
    try:
        props = json.loads(description[len(DESCRIPTION_PREFIX) :])
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in props.items()} if isinstance(props, dict) else {}


def check_collection_name(name: str) -> str:
    if not isinstance(name, str) or not COLLECTION_NAME_PATTERN.fullmatch(name):
        raise InvalidQueryError(
            f"invalid collection name {name!r}: use letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    return name


def _record(row: dict[str, Any]) -> ImageRecord:
    return ImageRecord(
        id=row["id"],
        path=row["path"],
        size=int(row["size"]),
        mtime=float(row["mtime"]),
        metadata=dict(row.get("metadata") or {}),
        caption=row.get(CAPTION_FIELD) or None,
    )


class MilvusStore:
    """Collections of image embeddings in Milvus Lite (a local file) or a Milvus server.

    Thread-safe for the operations the library uses: the client is shared, and the
    per-collection bookkeeping (verified model, loaded state) is guarded by a lock.
    """

    def __init__(
        self,
        uri: str,
        *,
        token: str | None = None,
        config: IndexConfig | None = None,
        log_dir: Path | None = None,
    ) -> None:
        from pymilvus import MilvusClient  # imported late: it is slow to import

        from mmsearch.milvus_lite_runtime import LITE_GRPC_OPTIONS, prepare_lite, server_logs_in

        self.uri = uri
        self.config = config or IndexConfig()
        self.is_lite = not uri.startswith(("http://", "https://", "tcp://", "unix:"))
        if self.is_lite:
            path = Path(uri).expanduser()
            if path.suffix != ".db":
                raise ConfigurationError(
                    f"Milvus Lite database path must end in .db, got {uri!r} "
                    "(or give a server URI such as http://localhost:19530)"
                )
            if not LITE_FILE_NAME.fullmatch(path.name):
                raise ConfigurationError(
                    f"Milvus Lite database file name {path.name!r} is not supported: use at "
                    "most 36 characters, letters, digits, '.', '-' and '_' (the folder may "
                    "be anything)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            self.uri = str(path)
        self._lock = threading.RLock()
        self._info: dict[str, CollectionInfo] = {}
        self._loaded: set[str] = set()
        self._closed = False
        self._like_patterns: bool | None = None
        self._server_version: tuple[int, int] | None = None
        # A database file this store creates and leaves without any collection is removed
        # on close, so a command that fails (or only looks) leaves nothing behind.
        self._created_file = self.is_lite and not Path(self.uri).exists()
        if self.is_lite:
            prepare_lite()
            _lite_acquire(self.uri)
        try:
            if token:
                self._client = MilvusClient(uri=self.uri, token=token)
            elif self.is_lite:
                with server_logs_in(log_dir or Path(self.uri).parent / "logs"):
                    self._client = MilvusClient(uri=self.uri, grpc_options=LITE_GRPC_OPTIONS)
            else:
                self._client = MilvusClient(uri=self.uri)
        except Exception as exc:
            if self.is_lite:
                _lite_release(self.uri)
                self._forget_created_file()
                raise StoreError(
                    f"cannot open the Milvus Lite database {self.uri}: {_brief(exc)}. "
                    f"{IN_USE_MESSAGE}"
                ) from exc
            raise StoreError(f"cannot open Milvus at {self.uri}: {_brief(exc)}") from exc

    @property
    def like_patterns(self) -> bool:
        """Whether ``like`` takes wildcards anywhere (Milvus Lite, servers from 2.4) or
        only a trailing ``%`` (servers before 2.4)."""
        if self._like_patterns is None:
            self._like_patterns = self.is_lite or self.server_version >= (2, 4)
        return self._like_patterns

    @property
    def server_version(self) -> tuple[int, int]:
        """(major, minor) of a Milvus server; a version it does not parse counts as new."""
        if self._server_version is None:
            version = str(self._call("get version", self._client.get_server_version))
            m = re.match(r"v?(\d+)\.(\d+)", version)
            self._server_version = (int(m.group(1)), int(m.group(2))) if m else (99, 0)
        return self._server_version

    @property
    def multi_vector(self) -> bool:
        """Whether a collection may hold two vector fields (Milvus Lite; servers from 2.4;
        2.3 refuses "multiple vector fields is not supported")."""
        return self.is_lite or self.server_version >= (2, 4)

    @property
    def full_text_search(self) -> bool:
        """Whether BM25 full-text search may be tried (Milvus Lite; servers from 2.5).
        Creation still falls back without it if the deployment refuses it."""
        return self.is_lite or self.server_version >= (2, 5)

    @classmethod
    def from_settings(cls, settings: Settings) -> MilvusStore:
        return cls(
            settings.milvus_uri,
            token=settings.milvus_token,
            config=IndexConfig.from_settings(settings),
            log_dir=settings.data_dir / "logs",
        )

    # -- collections ---------------------------------------------------------------

    def list_collections(self) -> list[str]:
        with self._lock:
            return sorted(self._call("list collections", self._client.list_collections))

    def has_collection(self, name: str) -> bool:
        check_collection_name(name)
        with self._lock:
            return bool(self._call("check collection", self._client.has_collection, name))

    def collection_info(self, name: str) -> CollectionInfo:
        """The model and dimension recorded for ``name``; raises if it does not exist."""
        check_collection_name(name)
        with self._lock:
            if name in self._info:
                return self._info[name]
            if not self._call("check collection", self._client.has_collection, name):
                raise CollectionNotFoundError(f"collection {name!r} does not exist in {self.uri}")
            desc = self._call("describe collection", self._client.describe_collection, name)
            props = desc.get("properties") or {}
            if PROP_MODEL not in props:
                props = _description_properties(desc.get("description"))
            model_id = props.get(PROP_MODEL)
            dim = props.get(PROP_DIM)
            if model_id is None or dim is None:
                raise StoreError(
                    f"collection {name!r} in {self.uri} was not created by mmsearch "
                    "(it does not record an embedding model)"
                )
            fields = {f.get("name") for f in desc.get("fields") or []}
            info = CollectionInfo(
                name=name,
                model_id=str(model_id),
                dim=int(dim),
                caption=CAPTION_FIELD in fields,
                caption_vector=CAPTION_VECTOR_FIELD in fields,
                caption_text_search=CAPTION_SPARSE_FIELD in fields,
            )
            self._info[name] = info
            return info

    def ensure_collection(self, name: str, model_id: str, dim: int) -> CollectionInfo:
        """Create ``name`` for this model if missing, else check it was filled by it."""
        check_collection_name(name)
        with self._lock:
            if not self._call("check collection", self._client.has_collection, name):
                self._create(name, model_id, dim)
            return self.require_model(name, model_id, dim)

    def require_model(self, name: str, model_id: str, dim: int) -> CollectionInfo:
        info = self.collection_info(name)
        if info.model_id != model_id or info.dim != dim:
            raise ModelMismatchError(
                f"collection {name!r} holds embeddings of model {info.model_id!r} "
                f"(dim {info.dim}); the current model is {model_id!r} (dim {dim}). "
                "Use another collection, or re-index into a new one with this model."
            )
        return info

    def drop_collection(self, name: str) -> None:
        check_collection_name(name)
        with self._lock:
            self._call("drop collection", self._client.drop_collection, name)
            self._info.pop(name, None)
            self._loaded.discard(name)

    def _create(self, name: str, model_id: str, dim: int) -> None:
        if not isinstance(dim, int) or dim <= 0:
            raise ConfigurationError(f"embedding dimension must be a positive integer, got {dim!r}")
        text_search = self.full_text_search
        try:
            self._create_with(name, model_id, dim, text_search=text_search)
        except StoreError as exc:
            if not text_search:
                raise
            log.info("full-text search unavailable (%s); creating %r without it", exc, name)
            if self._call("check collection", self._client.has_collection, name):
                self._call("drop collection", self._client.drop_collection, name)
            self._create_with(name, model_id, dim, text_search=False)

    def _create_with(self, name: str, model_id: str, dim: int, *, text_search: bool) -> None:
        """A new collection: the record fields and the image vector, plus, where the
        deployment allows, the caption with its vector and its BM25 index. Caption fields
        exist from the start because Milvus cannot add vector fields later."""
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        description, properties = collection_marker(model_id, dim)
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=description
        )
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH_CHARS * 4)
        schema.add_field("size", DataType.INT64)
        schema.add_field("mtime", DataType.DOUBLE)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        caption_kwargs: dict[str, Any] = {"enable_analyzer": True} if text_search else {}
        schema.add_field(
            CAPTION_FIELD, DataType.VARCHAR, max_length=CAPTION_MAX_BYTES, **caption_kwargs
        )
        multi_vector = self.multi_vector
        if multi_vector:
            schema.add_field(CAPTION_VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        if text_search:
            schema.add_field(CAPTION_SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="caption_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=[CAPTION_FIELD],
                    output_field_names=[CAPTION_SPARSE_FIELD],
                )
            )
        index_params = self._client.prepare_index_params()
        vector_fields = ["vector"] + ([CAPTION_VECTOR_FIELD] if multi_vector else [])
        for field_name in vector_fields:
            index_params.add_index(
                field_name=field_name,
                index_type=self.config.index_type,
                metric_type="IP",
                params=dict(self.config.index_params or {}),
            )
        if text_search:
            index_params.add_index(
                field_name=CAPTION_SPARSE_FIELD,
                index_type="SPARSE_INVERTED_INDEX",
                metric_type="BM25",
            )
        self._call(
            "create collection",
            self._client.create_collection,
            name,
            schema=schema,
            consistency_level="Strong",
            properties=properties,
        )
        # sync=False: the index of an empty collection is ready at once, and pymilvus's
        # wait for it polls with a fixed half-second sleep.
        self._call("create index", self._client.create_index, name, index_params, sync=False)
        self._call("load collection", self._client.load_collection, name)
        log.info(
            "created collection %r (model %s, dim %d; caption vectors %s, full-text %s) in %s",
            name,
            model_id,
            dim,
            "yes" if multi_vector else "no",
            "yes" if text_search else "no",
            self.uri,
        )
        self._loaded.add(name)

    def _ready(self, name: str) -> CollectionInfo:
        """Existing collection, loaded for search/query (needed after reopening)."""
        info = self.collection_info(name)
        with self._lock:
            if name not in self._loaded:
                self._call("load collection", self._client.load_collection, name)
                self._loaded.add(name)
        return info

    # -- writes --------------------------------------------------------------------

    def upsert(self, name: str, rows: Sequence[StoredRow], *, model_id: str) -> int:
        """Insert or replace rows (keyed by content hash), in requests of at most
        :data:`INSERT_BATCH` rows. Returns the number of rows written."""
        if not rows:
            return 0
        info = self._ready(name)
        if info.model_id != model_id:
            self.require_model(name, model_id, info.dim)
        entities = []
        for row in rows:
            vec = np.asarray(row.vector, dtype=np.float32)
            if vec.shape != (info.dim,):
                raise ModelMismatchError(
                    f"vector of shape {vec.shape} does not fit collection {name!r} (dim {info.dim})"
                )
            if row.caption and not info.caption:
                raise CaptionError(
                    f"collection {name!r} was created without a caption field; captions "
                    "need a collection created by this version of mmsearch (index into a "
                    "new collection to use them)"
                )
            if row.caption and info.caption_vector and row.caption_vector is None:
                raise CaptionError(f"caption without its embedding for {row.path}")
            if row.caption_vector is not None:
                cvec = np.asarray(row.caption_vector, dtype=np.float32)
                if cvec.shape != (info.dim,):
                    raise ModelMismatchError(
                        f"caption vector of shape {cvec.shape} does not fit collection "
                        f"{name!r} (dim {info.dim})"
                    )
            if len(row.caption.encode("utf-8")) > CAPTION_MAX_BYTES:
                raise StoreError(f"caption longer than {CAPTION_MAX_BYTES} bytes: {row.path}")
            if len(row.path) > MAX_PATH_CHARS:
                raise StoreError(
                    f"path longer than {MAX_PATH_CHARS} characters: {row.path[:80]}..."
                )
            entities.append(row.to_entity(info))
        for start in range(0, len(entities), INSERT_BATCH):
            chunk = entities[start : start + INSERT_BATCH]
            self._call("upsert", self._client.upsert, name, chunk)
        if self.flush_policy == "batch":
            self.flush(name)
        return len(entities)

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Delete rows by id; returns how many of them existed."""
        ids = [i for i in dict.fromkeys(ids)]
        if not ids:
            return 0
        self._ready(name)
        existing = self.get(name, ids)
        if not existing:
            return 0
        present = [r.id for r in existing]
        for start in range(0, len(present), QUERY_BATCH):
            chunk = present[start : start + QUERY_BATCH]
            self._call("delete", self._client.delete, name, ids=chunk)
        return len(present)

    @property
    def flush_policy(self) -> str:
        """``end``, ``batch`` or ``never``; ``auto`` is ``end`` for Milvus Lite (a flush
        costs milliseconds there) and ``never`` for a server (where it seals segments,
        takes seconds, and durability does not depend on it)."""
        if self.config.flush == "auto":
            return "end" if self.is_lite else "never"
        return self.config.flush

    def flush(self, name: str) -> None:
        if self.flush_policy == "never":
            return
        self._call("flush", self._client.flush, name)

    # -- reads ---------------------------------------------------------------------

    def count(self, name: str) -> int:
        self._ready(name)
        res = self._call("count", self._client.query, name, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def get(
        self, name: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[ImageRecord]:
        """Records for the ids that exist, in the order asked (missing ids are skipped)."""
        rows = self.get_rows(name, ids, with_vectors=with_vectors)
        return [_record(rows[i]) for i in dict.fromkeys(ids) if i in rows]

    def get_rows(
        self, name: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> dict[str, dict[str, Any]]:
        info = self._ready(name)
        wanted = [i for i in dict.fromkeys(ids) if isinstance(i, str)]
        fields = info.record_fields + (["vector"] if with_vectors else [])
        if with_vectors and info.caption_vector:
            fields.append(CAPTION_VECTOR_FIELD)
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), QUERY_BATCH):
            chunk = wanted[start : start + QUERY_BATCH]
            expr = "id in [" + ", ".join(quote_string(i) for i in chunk) + "]"
            for row in self._call(
                "get", self._client.query, name, filter=expr, output_fields=fields
            ):
                found[row["id"]] = dict(row)
        return found

    def find_by_paths(self, name: str, paths: Sequence[str]) -> dict[str, list[ImageRecord]]:
        """Stored records whose path is one of ``paths`` (paths must be quotable).

        Normally one per path; a run interrupted between writing a file's new record and
        deleting its old one can leave two, which the next run resolves."""
        info = self._ready(name)
        found: dict[str, list[ImageRecord]] = {}
        unique = list(dict.fromkeys(paths))
        for start in range(0, len(unique), QUERY_BATCH):
            chunk = unique[start : start + QUERY_BATCH]
            expr = "path in [" + ", ".join(quote_string(p) for p in chunk) + "]"
            for row in self._call(
                "query", self._client.query, name, filter=expr, output_fields=info.record_fields
            ):
                found.setdefault(row["path"], []).append(_record(row))
        return found

    def iter_records(self, name: str, expr: str = "") -> Iterator[ImageRecord]:
        """Every record matching ``expr`` (a trusted expression built by this package)."""
        info = self._ready(name)
        it = self._call(
            "query",
            self._client.query_iterator,
            name,
            batch_size=QUERY_BATCH,
            filter=expr,
            output_fields=info.record_fields,
        )
        try:
            while True:
                batch = self._call("query", it.next)
                if not batch:
                    break
                for row in batch:
                    yield _record(row)
        finally:
            it.close()

    def search(
        self,
        name: str,
        vectors: np.ndarray,
        *,
        model_id: str,
        top_k: int,
        expr: str = "",
        field: str = "vector",
    ) -> list[list[SearchHit]]:
        """Nearest stored images for each query vector; scores are cosine similarities.

        ``field="caption_vector"`` compares with the caption embeddings instead, among
        the images that have a caption."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        info = self._ready(name)
        self.require_model(name, model_id, int(vectors.shape[1]))
        if field == CAPTION_VECTOR_FIELD:
            if not info.caption_vector:
                raise CaptionError(f"collection {name!r} stores no caption embeddings")
            expr = f"({expr}) and {HAS_CAPTION}" if expr else HAS_CAPTION
        elif field != "vector":
            raise InvalidQueryError(f"not a vector field of a collection: {field!r}")
        search_params: dict[str, Any] = {"metric_type": "IP"}
        if self.config.search_params:
            search_params["params"] = dict(self.config.search_params)
        res = self._call(
            "search",
            self._client.search,
            name,
            data=[v.tolist() for v in vectors],
            anns_field=field,
            limit=int(top_k),
            filter=expr,
            output_fields=self._hit_fields(info),
            search_params=search_params,
        )
        return [[_hit(h, cosine=field == "vector") for h in hits] for hits in res]

    def search_caption_text(
        self, name: str, text: str, *, top_k: int, expr: str = ""
    ) -> list[SearchHit]:
        """Images whose caption shares words with ``text``, by BM25 (Milvus full-text
        search), best first; images whose caption has none of the words are left out.
        The scores are the backend's BM25 values (Milvus Lite reports them negated);
        only their order is meaningful."""
        info = self._ready(name)
        if not info.caption_text_search:
            raise CaptionError(f"collection {name!r} has no full-text index of captions")
        expr = f"({expr}) and {HAS_CAPTION}" if expr else HAS_CAPTION
        res = self._call(
            "full-text search",
            self._client.search,
            name,
            data=[text],
            anns_field=CAPTION_SPARSE_FIELD,
            limit=int(top_k),
            filter=expr,
            output_fields=self._hit_fields(info),
            search_params={"metric_type": "BM25"},
        )
        return [_hit(h, cosine=False) for h in res[0]]

    @staticmethod
    def _hit_fields(info: CollectionInfo) -> list[str]:
        return ["path", "metadata"] + ([CAPTION_FIELD] if info.caption else [])

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; for Milvus Lite, also release the database (its lock)
        once no other store of this process uses it. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            unused = self._created_file and not self._has_collections()
            try:
                self._client.close()
            except Exception as exc:  # closing is best effort
                log.debug("closing Milvus client failed: %s", exc)
            if self.is_lite:
                if unused and _lite_users.get(str(Path(self.uri).resolve()), 0) == 1:
                    self._forget_created_file()  # still under this process's lock
                _lite_release(self.uri)
            self._info.clear()
            self._loaded.clear()

    def _has_collections(self) -> bool:
        try:
            return bool(self._client.list_collections())
        except Exception:  # unknown: keep the file
            return True

    def _forget_created_file(self) -> None:
        try:
            Path(self.uri).unlink(missing_ok=True)
        except OSError as exc:
            log.debug("could not remove the unused database %s: %s", self.uri, exc)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import grpc
        from pymilvus.exceptions import MilvusException

        try:
            return fn(*args, **kwargs)
        except MilvusException as exc:
            raise StoreError(f"Milvus {what} failed: {_brief(exc)}") from exc
        except grpc.RpcError as exc:  # a transport failure pymilvus did not wrap
            raise StoreError(f"Milvus {what} failed: {_brief(exc)}") from exc


_lite_lock = threading.Lock()
_lite_users: dict[str, int] = {}
_lite_lock_files: dict[str, Any] = {}

IN_USE_MESSAGE = (
    "Milvus Lite allows one process per database; is another mmsearch process (CLI, MCP "
    "server) using it?"
)


def _lite_lock_path(key: str) -> Path:
    """The lock file Milvus Lite 2.x takes beside the database while serving it."""
    path = Path(key)
    return path.parent / f".{path.name}.lock"


def _lite_acquire(path: str) -> None:
    """Count this process's users of a database; the first one takes the database's lock.

    Milvus Lite 2.x locks ``.<name>.lock`` with ``lockf`` when it starts its server, but
    when that fails it deletes the lock file of the process holding it, so a third try
    would succeed and two servers would write one database. So the lock is tested here
    first, and a database held elsewhere is refused before Milvus Lite is asked. The lock
    taken here is kept until the last user closes (``lockf`` locks belong to the process,
    so Milvus Lite's own lock on the same file still succeeds; closing any descriptor of
    the file would drop both, hence the descriptor stays open)."""
    import fcntl

    with _lite_lock:
        key = str(Path(path).resolve())
        if _lite_users.get(key, 0) == 0:
            lock_file = open(_lite_lock_path(key), "a")  # noqa: SIM115 (held until release)
            try:
                fcntl.lockf(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                lock_file.close()
                raise StoreError(
                    f"cannot open the Milvus Lite database {path}: it is in use by another "
                    f"process. {IN_USE_MESSAGE}"
                ) from exc
            _lite_lock_files[key] = lock_file
        _lite_users[key] = _lite_users.get(key, 0) + 1


def _lite_release(path: str) -> None:
    """pymilvus keeps a Milvus Lite server running for the whole process (and with it the
    file lock that keeps other processes out); stop it when its last user closes."""
    with _lite_lock:
        key = str(Path(path).resolve())
        left = _lite_users.get(key, 0) - 1
        if left > 0:
            _lite_users[key] = left
            return
        _lite_users.pop(key, None)
        lock_file = _lite_lock_files.pop(key, None)
        try:
            try:
                from milvus_lite.server_manager import server_manager_instance
            except ImportError:
                return
            server_manager_instance.release_server(key)
        finally:
            if lock_file is not None:
                lock_file.close()


def _hit(h: dict[str, Any], *, cosine: bool) -> SearchHit:
    entity = h["entity"]
    score = float(h["distance"])
    return SearchHit(
        id=str(h["id"]),
        path=entity["path"],
        score=score,
        cosine=score if cosine else None,
        metadata=dict(entity.get("metadata") or {}),
        caption=entity.get(CAPTION_FIELD) or None,
    )


_SOURCE_LOCATION = re.compile(r"\s*\bat\s+/\S+?\.(?:cpp|cc|h|hpp|go):\d+")
_BACKEND_INTERNALS = re.compile(r"PlanProto|segcore|Assert\s*\"|Operator::|\.cpp\b|\.go:\d")


def _brief(exc: BaseException) -> str:
    """The backend's message on one line, without its internals: a message that quotes
    Milvus's C++ or Go sources (file names, asserts, plan nodes) means nothing to a user,
    so it becomes a plain sentence (the whole message is logged at debug level)."""
    msg = " ".join(str(getattr(exc, "message", None) or exc).split())
    cleaned = _SOURCE_LOCATION.sub("", msg)
    if _BACKEND_INTERNALS.search(cleaned):
        log.debug("Milvus error: %s", msg)
        return "the database could not evaluate the request (an internal Milvus error)"
    return cleaned[:500]
