"""The MCP tools. Each one validates its arguments, calls the library in a worker thread
and shapes the answer; everything else lives in :mod:`mmsearch`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, ListRoots, MCPServer, Resolve
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ContentBlock, ListRootsResult, TextContent, ToolAnnotations
from pydantic import Field, ValidationError

from mcp_server.arguments import file_uri_to_path, image_argument, invalid_arguments_message
from mcp_server.gallery import (
    GALLERY_META,
    THUMBNAIL_DEFAULT_SIZE,
    THUMBNAIL_TEMPLATE,
    gallery_extension,
    parse_thumbnail_size,
    read_thumbnail,
)
from mcp_server.jobs import (
    DEFAULT_WAIT_S,
    MAX_WAIT_S,
    Listener,
    submit_and_follow,
    visible,
    visible_job,
)
from mcp_server.results import (
    THUMBNAIL_SIZE,
    RankedImage,
    RemoveResult,
    RerankResult,
    SearchResult,
    caption,
    job_summary,
    jobs_summary,
    plural,
    rerank_summary,
    search_summary,
    thumbnail,
)
from mmsearch import __version__
from mmsearch.access import ensure_allowed, narrow_roots, resolve_roots
from mmsearch.config import Settings
from mmsearch.errors import AccessDeniedError, InvalidQueryError, MMSearchError, RerankError
from mmsearch.filters import SearchFilter
from mmsearch.types import CollectionStats, ImageRecord, IndexJobList, IndexJobStatus, SearchHit

if TYPE_CHECKING:
    from mmsearch.jobs import IndexJobs
    from mmsearch.library import ImageSearch

log = logging.getLogger("mcp_server")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

INSTRUCTIONS = " ".join(
    """
    Semantic image search over the user's local images. Index folders with index_images
    (a background job: when it answers with a running job, follow it with index_status),
    then find images with multimodal_search by a text description, an example image (path
    or base64), or both (the image's content steered by the text), or more like a hit
    (similar_to). Set include_thumbnails to look at the hits. rerank re-orders a handful
    of hits (by their ids) with a vision-language model. Paths must lie inside the allowed roots.
    """.split()
)

MAX_TOP_K = 100
"""The most hits one search returns to a client; the library also applies ``max_top_k``."""
MAX_RERANK_CANDIDATES = 100
MAX_PATHS_PER_CALL = 1000
"""Paths one index or remove call takes (a folder counts as one)."""
MAX_IDS_PER_CALL = 10_000
"""Schema bound; the reranker applies the lower ``max_rerank_candidates``."""

RERANK_GRACE_S = 5.0
"""The rerank call answers at most this long after ``rerank_timeout_s``."""


front_allowed_roots: ContextVar[tuple[list[Path] | None] | None] = ContextVar(
    "front_allowed_roots", default=None
)
"""Set by the service for each front's session: that front's configured allowed roots (in
a 1-tuple, since ``None`` is a value: "none configured"). Unset, the server's own setting
applies. Each session thus gets its own upper bound; one front's roots never widen
another's."""


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
        self._jobs: IndexJobs | None = None
        self._lock = threading.Lock()

    def get(self) -> ImageSearch:
        with self._lock:
            if self._search is None:
                log.info("opening the image search (collection %r)", self.settings.collection)
                self._search = self._factory(self.settings)
            return self._search

    @property
    def jobs(self) -> IndexJobs:
        """The process's index jobs; they open the image search when the first one runs."""
        with self._lock:
            if self._jobs is None:
                from mmsearch.jobs import IndexJobs

                self._jobs = IndexJobs(
                    self.get,
                    self.settings.data_dir,
                    default_collection=self.settings.collection,
                )
            return self._jobs

    def close(self) -> None:
        """Interrupt the running jobs (resumed by indexing again), then close the library."""
        with self._lock:
            jobs, self._jobs = self._jobs, None
        if jobs is not None:
            jobs.close()
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


async def _client_roots(ctx: Context) -> ListRoots | None:
    """Ask for the client's roots when it offers them; they narrow the configured ones."""
    caps = ctx.client_capabilities
    return ListRoots() if caps is not None and caps.roots is not None else None


ClientRoots = Annotated[ListRootsResult | None, Resolve(_client_roots)]


def _allowed_roots(configured: list[Path] | None, client: ListRootsResult | None) -> list[Path]:
    front = front_allowed_roots.get()
    if front is not None:
        configured = front[0]
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


class _Server(MCPServer):
    """Arguments that fail validation come back as one line naming each field and what
    it must be, not pydantic's multi-line report with its documentation links."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError) and not isinstance(exc, UnexpectedToolError):
                raise ToolError(invalid_arguments_message(name, cause)) from cause
            raise


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
    server = _Server(
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
        extensions: Annotated[
            list[Annotated[str, Field(max_length=32)]] | None,
            Field(
                min_length=1,
                max_length=64,
                description=(
                    'File extensions to index in folders (e.g. ["png", "jpg"]; '
                    "default: jpg jpeg png webp bmp gif tif tiff)."
                ),
            ),
        ] = None,
        prune: Annotated[
            bool,
            Field(description="Also remove the records of files under these paths that are gone."),
        ] = False,
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
        wait_s: Annotated[
            float,
            Field(
                ge=0,
                le=MAX_WAIT_S,
                description=(
                    "Seconds to wait for the job to finish before answering with its "
                    "state; the job keeps running in the background either way."
                ),
            ),
        ] = DEFAULT_WAIT_S,
    ) -> Annotated[CallToolResult, IndexJobStatus]:
        """Add image files and folders to the search index, as a background job. Files
        already indexed and unchanged are skipped. Answers with the report when the job
        ends within wait_s, else with its state (follow it with index_status); the job
        goes on if the call is cancelled. An identical running job is joined. prune removes
        records only under the given paths, which lie inside the allowed roots."""
        with _tool_errors("index_images"):
            allowed = _allowed_roots(configured, roots)
            targets = [ensure_allowed(path, allowed) for path in paths]

            def submit(listener: Listener) -> IndexJobStatus:
                return shared.jobs.submit(
                    targets,
                    recursive=recursive,
                    extensions=extensions,
                    metadata=metadata,
                    prune=prune,
                    collection=collection,
                    captions=captions,
                    roots=allowed,
                    listener=listener,
                )

            status = await submit_and_follow(ctx, shared.jobs, submit, wait_s)
            if status.state == "failed":
                raise ToolError(status.error or "the index job failed")
            return _result(job_summary(status), status)

    @_tool(server, "Index job status", read_only=True)
    async def index_status(
        roots: ClientRoots = None,
        job_id: Annotated[
            str | None,
            Field(max_length=64, description="A job id from index_images; none: recent jobs."),
        ] = None,
        limit: Annotated[
            int, Field(ge=1, le=100, description="How many recent jobs to list.")
        ] = 10,
    ) -> Annotated[CallToolResult, IndexJobList]:
        """The state of an index job (running, finished, failed, cancelled, interrupted),
        its progress, elapsed time and estimated time left; or the recent jobs."""
        with _tool_errors("index_status"):
            allowed = _allowed_roots(configured, roots)
            if job_id is not None:
                status = await _in_thread(lambda: visible_job(shared.jobs, job_id, allowed))
                return _result(job_summary(status), IndexJobList(jobs=[status]))
            recent = await _in_thread(lambda: shared.jobs.recent(limit))
            listed = IndexJobList(jobs=[s for s in recent if visible(s, allowed)])
            return _result(jobs_summary(listed.jobs), listed)

    @_tool(server, "Cancel an index job", read_only=False)
    async def cancel_index(
        job_id: Annotated[str, Field(max_length=64, description="The job to stop.")],
        roots: ClientRoots = None,
        wait_s: Annotated[
            float,
            Field(ge=0, le=MAX_WAIT_S, description="Seconds to wait for the job to stop."),
        ] = 10.0,
    ) -> Annotated[CallToolResult, IndexJobStatus]:
        """Stop an index job: a queued one at once, a running one after its current batch.
        What it stored stays; indexing the same paths again continues where it stopped."""
        with _tool_errors("cancel_index"):
            allowed = _allowed_roots(configured, roots)

            def cancel() -> IndexJobStatus:
                visible_job(shared.jobs, job_id, allowed)
                shared.jobs.cancel(job_id)
                return shared.jobs.wait(job_id, wait_s)

            status = await _in_thread(cancel)
            return _result(job_summary(status), status)

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
        with_reason: Annotated[
            bool | None,
            Field(
                description="Also return the model's one-line reason (slower: decoding goes "
                "on after the ranking). Default: the server's setting."
            ),
        ] = None,
    ) -> Annotated[CallToolResult, RerankResult]:
        """Re-order candidate images by how well a vision-language model judges they match
        the query. Slower than search and more precise; use on a handful of hits. Past the
        server's rerank time limit the given order comes back with reranked=false."""
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

            def lookup() -> dict[str, ImageRecord]:
                records = {r.id: r for r in shared.get().get(candidate_ids)}
                missing = [i for i in candidate_ids if i not in records]
                if missing:
                    raise InvalidQueryError(f"unknown candidate ids: {', '.join(missing)}")
                for record in records.values():
                    ensure_allowed(record.path, allowed)
                return records

            records = await _in_thread(lookup, settings.search_timeout_s)

            def work() -> Any:
                from mmsearch.images import decode_image

                query = (
                    decode_image(query_image, name="image", max_pixels=settings.max_image_pixels)
                    if isinstance(query_image, bytes)
                    else query_image
                )
                return rerank_fn(
                    [records[i] for i in candidate_ids],
                    text=text,
                    image=query,
                    settings=shared.settings,
                    with_reason=with_reason,
                )

            # The library keeps its own deadline; this bounds what it cannot interrupt
            # (a file read that blocks, a model that ignores the deadline).
            limit = shared.settings.rerank_timeout_s + RERANK_GRACE_S
            try:
                with anyio.fail_after(limit):
                    ranked = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
                ids, reranked = ranked.ids, ranked.reranked
                reason, note = ranked.reason, ranked.note
            except TimeoutError:
                log.warning("rerank did not finish within %g s", limit)
                ids, reranked, reason = list(candidate_ids), False, ""
                note = (
                    f"the rerank did not finish within {limit:g} s (setting "
                    "MMSEARCH_RERANK_TIMEOUT_S); the given order is kept"
                )
            result = RerankResult(
                ranking=[
                    RankedImage(id=i, path=records[i].path, rank=rank)
                    for rank, i in enumerate(ids, 1)
                ],
                reranked=reranked,
                reason=reason,
                note=note,
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
                f"{stats.collection}: {plural(stats.count, 'image')}, model {stats.model_id} "
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
                f"{plural(removed, 'image')} removed from the index", RemoveResult(removed=removed)
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

    from mcp_server.watch_tools import register_watch_tools

    register_watch_tools(server, settings, configured)
    return server
