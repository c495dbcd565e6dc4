"""The MCP tools. Each one validates its arguments, calls the library in a worker thread
and shapes the answer; everything else lives in :mod:`mmsearch`."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, ListRoots, MCPServer, Resolve
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ContentBlock, ListRootsResult, TextContent, ToolAnnotations
from pydantic import Field

from mcp_server.arguments import file_uri_to_path, image_argument
from mcp_server.gallery import (
    GALLERY_META,
    THUMBNAIL_DEFAULT_SIZE,
    THUMBNAIL_TEMPLATE,
    gallery_extension,
    parse_thumbnail_size,
    read_thumbnail,
)
from mcp_server.results import (
    THUMBNAIL_SIZE,
    RankedImage,
    RemoveResult,
    RerankResult,
    SearchResult,
    caption,
    index_summary,
    rerank_summary,
    search_summary,
    thumbnail,
)
from mmsearch import __version__
from mmsearch.access import ensure_allowed, narrow_roots, resolve_roots
from mmsearch.config import Settings
from mmsearch.errors import AccessDeniedError, InvalidQueryError, MMSearchError, RerankError
from mmsearch.filters import SearchFilter
from mmsearch.types import CollectionStats, ImageRecord, IndexProgress, IndexReport, SearchHit

if TYPE_CHECKING:
    from mmsearch.library import ImageSearch

log = logging.getLogger("mcp_server")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

INSTRUCTIONS = """\
Semantic image search over the user's local images. Index folders with index_images, then
find images with multimodal_search by a text description, an example image (path or
base64), or both (the image's content steered by the text), or more like a hit (similar_to).
Set include_thumbnails to look at the hits. rerank re-orders a handful of hits with a
vision-language model. Paths must lie inside the allowed roots."""

MAX_TOP_K = 100
"""The most hits one search returns to a client; the library also applies ``max_top_k``."""
MAX_RERANK_CANDIDATES = 100
MAX_PATHS_PER_CALL = 1000
"""Paths one index or remove call takes (a folder counts as one)."""
MAX_IDS_PER_CALL = 10_000
"""Schema bound; the reranker applies the lower ``max_rerank_candidates``."""


class SearchFactory(Protocol):
    def __call__(self, settings: Settings) -> ImageSearch: ...


def _library_search(settings: Settings) -> ImageSearch:
    from mmsearch.library import ImageSearch

    return ImageSearch(settings)


class SharedSearch:
    """The one :class:`ImageSearch` of this process, created on first use.

    Created lazily because importing the library loads torch; shared by every session
    (streamable HTTP opens one per client) so models and the database open once.
    """

    def __init__(self, settings: Settings, factory: SearchFactory) -> None:
        self.settings = settings
        self._factory = factory
        self._search: ImageSearch | None = None
        self._lock = threading.Lock()

    def get(self) -> ImageSearch:
        with self._lock:
            if self._search is None:
                log.info("opening the image search (collection %r)", self.settings.collection)
                self._search = self._factory(self.settings)
            return self._search

    def close(self) -> None:
        with self._lock:
            if self._search is not None:
                self._search.close()
                self._search = None


@contextmanager
def _tool_errors(tool: str) -> Iterator[None]:
    """Turn failures into one clear isError message; never let one take the server down."""
    try:
        yield
    except (ToolError, MCPError):
        raise
    except MMSearchError as exc:
        raise ToolError(f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        log.exception("%s failed unexpectedly", tool)
        raise ToolError(
            f"{tool} failed with an internal error ({type(exc).__name__}); see the server log"
        ) from exc


async def _in_thread(fn: Callable[[], T], timeout_s: float | None = None) -> T:
    """Run ``fn`` in a worker thread; past ``timeout_s`` the call answers with an error
    and the thread is left to finish in the background (Python cannot stop it)."""
    if timeout_s is None:
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
    try:
        with anyio.fail_after(timeout_s):
            return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
    except TimeoutError:
        raise ToolError(
            f"the call did not finish within {timeout_s:g} s (setting search_timeout_s)"
        ) from None


async def _index_with_progress(
    ctx: Context, work: Callable[[Callable[[IndexProgress], None], threading.Event], T]
) -> T:
    """Run ``work(progress, cancel)`` in a worker thread, forwarding its progress to the
    client as MCP progress notifications and setting ``cancel`` if the client cancels."""
    cancel = threading.Event()
    send, receive = anyio.create_memory_object_stream[IndexProgress](max_buffer_size=math.inf)

    def on_progress(progress: IndexProgress) -> None:
        try:
            anyio.from_thread.run_sync(send.send_nowait, progress)
        except Exception:  # the request is gone; the library must not fail because of it
            log.debug("dropped a progress update", exc_info=True)

    async def forward() -> None:
        async with receive:
            async for progress in receive:
                try:
                    await ctx.report_progress(progress.done, progress.total, progress.path)
                except Exception:
                    log.debug("could not send a progress notification", exc_info=True)

    outcome: list[T] = []
    failure: list[Exception] = []
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(forward)
            async with send:
                try:
                    outcome.append(await _in_thread(lambda: work(on_progress, cancel)))
                except Exception as exc:  # raised below, not wrapped in an ExceptionGroup
                    failure.append(exc)
    finally:
        cancel.set()
    if failure:
        raise failure[0]
    return outcome[0]


async def _client_roots(ctx: Context) -> ListRoots | None:
    """Ask for the client's roots when it offers them; they narrow the configured ones."""
    caps = ctx.client_capabilities
    return ListRoots() if caps is not None and caps.roots is not None else None


ClientRoots = Annotated[ListRootsResult | None, Resolve(_client_roots)]


def _allowed_roots(configured: list[Path] | None, client: ListRootsResult | None) -> list[Path]:
    offered = None
    if client is not None and client.roots:
        offered = resolve_roots(file_uri_to_path(str(root.uri)) for root in client.roots)
    return narrow_roots(configured, offered)


def _result(
    summary: str, structured: Any, extra: list[ContentBlock] | None = None
) -> CallToolResult:
    content: list[ContentBlock] = [TextContent(type="text", text=summary), *(extra or [])]
    return CallToolResult(content=content, structured_content=structured.model_dump(mode="json"))


def _thumbnails(hits: list[SearchHit], roots: list[Path], settings: Settings) -> list[ContentBlock]:
    blocks: list[ContentBlock] = []
    for rank, hit in enumerate(hits, 1):
        blocks.append(caption(hit, rank))
        try:
            blocks.append(
                thumbnail(
                    ensure_allowed(hit.path, roots),
                    THUMBNAIL_SIZE,
                    max_bytes=settings.max_image_bytes,
                    max_pixels=settings.max_image_pixels,
                )
            )
        except AccessDeniedError:
            blocks.append(
                TextContent(type="text", text="(no thumbnail: outside the allowed roots)")
            )
        except Exception as exc:  # one unreadable file must not fail the search
            blocks.append(TextContent(type="text", text=f"(no thumbnail: {exc})"))
    return blocks


def _load_reranker() -> Callable[..., Any]:
    try:
        from mmsearch.rerank import rerank
    except ImportError as exc:
        raise RerankError(
            f"reranker not configured: the vision-language reranker is not installed ({exc}); "
            "multimodal_search scores are the best ordering available"
        ) from exc
    return rerank


def _tool(
    server: MCPServer,
    title: str,
    *,
    read_only: bool,
    destructive: bool = False,
    meta: dict[str, Any] | None = None,
) -> Callable[[F], F]:
    """Register a tool; its docstring, on one line, is the description clients show."""

    def register(fn: F) -> F:
        server.add_tool(
            fn,
            title=title,
            description=" ".join((fn.__doc__ or "").split()),
            annotations=ToolAnnotations(
                title=title,
                read_only_hint=read_only,
                destructive_hint=destructive,
                idempotent_hint=True,
                open_world_hint=False,
            ),
            meta=meta,
        )
        return fn

    return register


def create_server(
    settings: Settings | None = None, search_factory: SearchFactory | None = None
) -> MCPServer:
    """Build the server. Nothing heavy happens here: the library opens on the first call."""
    settings = settings or Settings()
    shared = SharedSearch(settings, search_factory or _library_search)
    configured = (
        resolve_roots(settings.allowed_roots) if settings.allowed_roots is not None else None
    )
    server = MCPServer(
        "mmsearch",
        title="mmsearch image search",
        version=__version__,
        instructions=INSTRUCTIONS,
        log_level="WARNING",
        extensions=[gallery_extension()],
    )
    server.shared_search = shared  # type: ignore[attr-defined]

    @_tool(server, "Index images", read_only=False)
    async def index_images(
        paths: Annotated[
            list[str],
            Field(
                min_length=1,
                max_length=MAX_PATHS_PER_CALL,
                description="Image files or folders to index.",
            ),
        ],
        ctx: Context,
        roots: ClientRoots = None,
        recursive: Annotated[bool, Field(description="Descend into sub-folders.")] = True,
        metadata: Annotated[
            dict[str, Any] | None,
            Field(description="JSON object stored with every image indexed by this call."),
        ] = None,
        collection: Annotated[str | None, Field(description="Collection to fill.")] = None,
        captions: Annotated[
            bool | None,
            Field(
                description=(
                    "Caption each image with the vision-language model, which makes text "
                    "searches better but indexing much slower (default: the server's "
                    "MMSEARCH_CAPTIONS setting)."
                )
            ),
        ] = None,
    ) -> Annotated[CallToolResult, IndexReport]:
        """Add image files and folders to the search index. Files already indexed and
        unchanged are skipped; progress is reported while it works; cancellable."""
        with _tool_errors("index_images"):
            allowed = _allowed_roots(configured, roots)
            targets = [ensure_allowed(path, allowed) for path in paths]

            def work(
                progress: Callable[[IndexProgress], None], cancel: threading.Event
            ) -> IndexReport:
                return shared.get().index(
                    targets,
                    recursive=recursive,
                    metadata=metadata,
                    collection=collection,
                    progress=progress,
                    cancel=cancel,
                    captions=captions,
                    roots=allowed,
                )

            report = await _index_with_progress(ctx, work)
            return _result(index_summary(report), report)

    @_tool(server, "Search images", read_only=True, meta=GALLERY_META)
    async def multimodal_search(
        roots: ClientRoots = None,
        text: Annotated[str | None, Field(description="What to look for, in words.")] = None,
        image: Annotated[
            str | None,
            Field(description="An example image: a file path, a data URI or base64 bytes."),
        ] = None,
        top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K, description="How many hits.")] = 9,
        filter: Annotated[
            SearchFilter | None,
            Field(description="Restrict the hits; every condition given must hold."),
        ] = None,
        collection: Annotated[str | None, Field(description="Collection to search.")] = None,
        include_thumbnails: Annotated[
            bool, Field(description=f"Attach a {128}px JPEG of each hit.")
        ] = False,
        similar_to: Annotated[
            str | None,
            Field(
                pattern="^[0-9a-f]{64}$",
                description=(
                    "The id of an indexed image (from an earlier search): find images like "
                    "it, itself left out; text, if given, steers it."
                ),
            ),
        ] = None,
        min_score: Annotated[
            float | None,
            Field(description="Drop hits whose score is below this (see score_kind)."),
        ] = None,
    ) -> Annotated[CallToolResult, SearchResult]:
        """Find indexed images by text, by an example image, or both (the image steered by
        the text), or images like an indexed one (similar_to). Returns hits with id, path,
        score and metadata, best first."""
        with _tool_errors("multimodal_search"):
            if not (text and text.strip()) and not image and not similar_to:
                raise InvalidQueryError("give text, image, or both, or similar_to")
            allowed = _allowed_roots(configured, roots)
            query_image = (
                image_argument(image, allowed, max_bytes=settings.max_image_bytes)
                if image
                else None
            )

            def work() -> list[SearchHit]:
                return shared.get().search(
                    text=text,
                    image=query_image,
                    top_k=top_k,
                    filter=filter,
                    collection=collection,
                    similar_to=similar_to,
                    min_score=min_score,
                )

            hits = await _in_thread(work, settings.search_timeout_s)
            extra = (
                await _in_thread(
                    lambda: _thumbnails(hits, allowed, settings), settings.search_timeout_s
                )
                if include_thumbnails
                else []
            )
            return _result(search_summary(hits), SearchResult(hits=hits), extra)

    @_tool(server, "Rerank images", read_only=True, meta=GALLERY_META)
    async def rerank(
        candidate_ids: Annotated[
            list[str],
            Field(
                min_length=1,
                max_length=MAX_RERANK_CANDIDATES,
                description="Ids of indexed images (from multimodal_search) to re-order.",
            ),
        ],
        roots: ClientRoots = None,
        text: Annotated[str | None, Field(description="The query, in words.")] = None,
        image: Annotated[
            str | None, Field(description="Example image: a file path, a data URI or base64.")
        ] = None,
    ) -> Annotated[CallToolResult, RerankResult]:
        """Re-order candidate images by how well a vision-language model judges they match
        the query. Slower than search and more precise; use on a handful of hits."""
        with _tool_errors("rerank"):
            if not (text and text.strip()) and not image:
                raise InvalidQueryError("give text, image, or both")
            rerank_fn = _load_reranker()
            allowed = _allowed_roots(configured, roots)
            query_image = (
                image_argument(image, allowed, max_bytes=settings.max_image_bytes)
                if image
                else None
            )

            def work() -> tuple[Any, dict[str, ImageRecord]]:
                from mmsearch.images import decode_image

                records = {r.id: r for r in shared.get().get(candidate_ids)}
                missing = [i for i in candidate_ids if i not in records]
                if missing:
                    raise InvalidQueryError(f"unknown candidate ids: {', '.join(missing)}")
                for record in records.values():
                    ensure_allowed(record.path, allowed)
                candidates = [records[i] for i in candidate_ids]
                query = (
                    decode_image(query_image, name="image", max_pixels=settings.max_image_pixels)
                    if isinstance(query_image, bytes)
                    else query_image
                )
                ranked = rerank_fn(candidates, text=text, image=query, settings=shared.settings)
                return ranked, records

            ranked, records = await _in_thread(work)
            result = RerankResult(
                ranking=[
                    RankedImage(id=i, path=records[i].path, rank=rank)
                    for rank, i in enumerate(ranked.ids, 1)
                ],
                reranked=ranked.reranked,
                reason=ranked.reason,
                note=ranked.note,
            )
            return _result(rerank_summary(result), result)

    @_tool(server, "Collection statistics", read_only=True)
    async def collection_stats(
        collection: Annotated[str | None, Field(description="Collection to describe.")] = None,
    ) -> Annotated[CallToolResult, CollectionStats]:
        """How many images a collection holds, which embedding model filled it, and where
        it is stored."""
        with _tool_errors("collection_stats"):
            stats = await _in_thread(
                lambda: shared.get().stats(collection), settings.search_timeout_s
            )
            summary = (
                f"{stats.collection}: {stats.count} images, model {stats.model_id} "
                f"(dim {stats.dim}), stored at {stats.uri}"
            )
            return _result(summary, stats)

    @_tool(server, "Remove images from the index", read_only=False, destructive=True)
    async def remove_images(
        roots: ClientRoots = None,
        ids: Annotated[
            list[str] | None,
            Field(max_length=MAX_IDS_PER_CALL, description="Image ids to forget."),
        ] = None,
        paths: Annotated[
            list[str] | None,
            Field(max_length=MAX_PATHS_PER_CALL, description="Exact file paths to forget."),
        ] = None,
        collection: Annotated[str | None, Field(description="Collection to edit.")] = None,
    ) -> Annotated[CallToolResult, RemoveResult]:
        """Delete images from the index (the files themselves are never touched)."""
        with _tool_errors("remove_images"):
            if not ids and not paths:
                raise InvalidQueryError("give ids, paths, or both")
            targets = None
            if paths:
                allowed = _allowed_roots(configured, roots)
                targets = [ensure_allowed(path, allowed) for path in paths]
            removed = await _in_thread(
                lambda: shared.get().remove(ids=ids or None, paths=targets, collection=collection),
                settings.search_timeout_s,
            )
            return _result(
                f"{removed} images removed from the index", RemoveResult(removed=removed)
            )

    @server.resource(
        THUMBNAIL_TEMPLATE,
        name="thumbnail",
        title="Thumbnail of an indexed image",
        description=(
            "A JPEG of an indexed image scaled to fit size x size pixels "
            f"(default {THUMBNAIL_DEFAULT_SIZE}); the gallery reads these."
        ),
        mime_type="image/jpeg",
    )
    async def thumbnail_resource(
        image_id: str, ctx: Context, size: str = str(THUMBNAIL_DEFAULT_SIZE)
    ) -> bytes:
        try:
            pixels = parse_thumbnail_size(size)
            caps = ctx.client_capabilities
            client = (
                await ctx.session.list_roots()
                if caps is not None and caps.roots is not None
                else None
            )
            allowed = _allowed_roots(configured, client)

            def work() -> bytes:
                records = shared.get().get([image_id])
                if not records:
                    raise InvalidQueryError(f"no indexed image with id {image_id}")
                return read_thumbnail(records[0].path, pixels, allowed, settings)

            return await _in_thread(work, settings.search_timeout_s)
        except MMSearchError as exc:
            raise ResourceError(f"thumbnail {image_id}: {exc}") from exc
        except OSError as exc:
            raise ResourceError(f"thumbnail {image_id}: cannot read the file ({exc})") from exc

    return server
