"""The ``mmsearch`` command: index folders, search, inspect and prune a collection.

A thin layer over :class:`mmsearch.library.ImageSearch`. Results go to stdout (JSON with
``--json``); progress, logs and errors go to stderr. Errors are one line and a
non-zero exit status.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from mmsearch.config import Settings
from mmsearch.errors import CollectionNotFoundError, MMSearchError
from mmsearch.filters import SearchFilter, parse_filter
from mmsearch.types import (
    CollectionStats,
    IndexJobList,
    IndexJobStatus,
    IndexProgress,
    SearchHit,
)

if TYPE_CHECKING:
    from mmsearch.jobs import IndexJobs
    from mmsearch.library import EmbedderFactory, ImageSearch
    from mmsearch_service.client import ServiceClient

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130
LAZY_COMMAND_HELP = {
    "eval": "Measure retrieval quality on a benchmark.",
    "rerank": "Rerank images (paths or stored ids) with the vision-language model.",
    "service": "Start, stop or inspect this data directory's background service.",
}


def parse_scalar(text: str) -> bool | int | float | str:
    """``true``/``false`` -> bool, integers -> int, finite decimals -> float, else str."""
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def parse_key_values(pairs: tuple[str, ...], option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=option)
        out[key] = parse_scalar(value)
    return out


def _settings(ctx: click.Context) -> Settings:
    overrides = {k: v for k, v in ctx.obj["overrides"].items() if v is not None}
    try:
        return Settings(**overrides)
    except Exception as exc:  # pydantic validation of env or options
        raise MMSearchError(f"invalid configuration: {exc}") from exc


@contextmanager
def _engine(ctx: click.Context) -> Iterator[ImageSearch]:
    from mmsearch.library import ImageSearch  # loads torch: only when a command runs

    factory: EmbedderFactory | None = ctx.obj.get("embedder_factory")
    lib = ImageSearch(_settings(ctx), embedder_factory=factory)
    try:
        yield lib
    finally:
        lib.close()


def _service(ctx: click.Context, roots: Sequence[str] = ()) -> ServiceClient | None:
    """A connection to the data directory's service (started on demand), or None to
    work in this process: ``--no-service``, ``MMSEARCH_SERVICE=off``, an explicit
    ``--uri``, or a test's model. Only the CLI's own folders in ``roots`` are shared."""
    obj = ctx.find_root().obj
    if obj.get("no_service") or obj.get("embedder_factory") is not None:
        return None
    if obj["overrides"].get("milvus_uri"):
        return None
    settings = _settings(ctx)
    if not settings.uses_service:  # checked first: the client needs Unix sockets and flock
        return None
    from mmsearch_service.client import ServiceClient, service_enabled

    if not service_enabled(settings):
        return None
    from pathlib import Path

    return ServiceClient.open(settings, roots=[Path(r) for r in roots])


def _collection_argument(ctx: click.Context) -> dict[str, Any]:
    collection = ctx.find_root().obj["overrides"].get("collection")
    return {"collection": collection} if collection else {}


def _image_id(id_or_path: str, ctx: click.Context) -> str:
    """A stored image's id for ``--similar-to``: the value itself when it is an id, else
    the id of the file's content (ids are content hashes), read with the size limit."""
    if len(id_or_path) == 64 and all(c in "0123456789abcdef" for c in id_or_path):
        return id_or_path
    from mmsearch.images import content_hash, read_image_bytes

    data = read_image_bytes(id_or_path, max_bytes=_settings(ctx).max_image_bytes)
    return content_hash(data)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


class _Group(click.Group):
    """Turns library errors into one line on stderr and a non-zero exit status, and
    imports the commands that live with their subsystems (``eval``, ``rerank``) only
    when they are asked for, so ``--help`` and the core commands start fast."""

    lazy_commands = tuple(LAZY_COMMAND_HELP)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        rows = [(n, c.get_short_help_str(limit)) for n, c in sorted(self.commands.items())]
        rows += [(n, LAZY_COMMAND_HELP[n]) for n in self.lazy_commands]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "eval":
            from mmsearch.evaluation.cli import default_reranker, make_eval_command

            return make_eval_command(build_embedder=_eval_embedder, build_reranker=default_reranker)
        if cmd_name == "service":
            from mmsearch_service.cli import service

            return service
        if cmd_name == "rerank":
            from mmsearch.rerank.cli import make_rerank_command

            return make_rerank_command(_resolve_stored_ids)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MMSearchError as exc:
            hint = ""
            if isinstance(exc, CollectionNotFoundError):
                hint = " (run `mmsearch index FOLDER` to create it)"
            click.echo(f"error: {exc}{hint}", err=True)
            ctx.exit(EXIT_ERROR)


@click.group(cls=_Group)
@click.option("--uri", help="Milvus Lite file or server URI (overrides MMSEARCH_MILVUS_URI).")
@click.option("--collection", help="Collection name (overrides MMSEARCH_COLLECTION).")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv: debug).")
@click.option(
    "--no-service",
    is_flag=True,
    help="Work in this process instead of through the data directory's service "
    "(same as MMSEARCH_SERVICE=off).",
)
@click.version_option(package_name="mmsearch")
@click.pass_context
def cli(
    ctx: click.Context, uri: str | None, collection: str | None, verbose: int, no_service: bool
) -> None:
    """Multimodal semantic search over your images."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    if verbose < 2:
        # pymilvus logs every failed RPC with a traceback; the CLI reports it once.
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    ctx.ensure_object(dict)
    ctx.obj["overrides"] = {"milvus_uri": uri, "collection": collection}
    ctx.obj["no_service"] = no_service


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--recursive/--no-recursive", default=True, help="Descend into sub-folders.")
@click.option(
    "--ext",
    "extensions",
    multiple=True,
    help="File extensions to index in folders and globs (repeat or comma-separate; "
    "default: jpg jpeg png webp bmp gif tif tiff).",
)
@click.option("--prune", is_flag=True, help="Remove records of files under PATHS that are gone.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Metadata for every file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
@click.option(
    "--captions/--no-captions",
    default=None,
    help="Caption images with the vision-language model, for better text queries "
    "(default: MMSEARCH_CAPTIONS, off).",
)
@click.option(
    "--detach",
    is_flag=True,
    help="Return at once with the job id, leaving the job to the mmsearch service.",
)
@click.pass_context
def index(
    ctx: click.Context,
    paths: tuple[str, ...],
    recursive: bool,
    extensions: tuple[str, ...],
    prune: bool,
    meta: tuple[str, ...],
    as_json: bool,
    progress: bool | None,
    captions: bool | None,
    detach: bool,
) -> None:
    """Index image files, folders and globs (unchanged files are skipped), as a job that
    this command follows; Ctrl-C cancels it (what was stored stays)."""
    metadata = parse_key_values(meta, "--meta") if meta else None
    targets, roots = _expand_globs(paths, extensions, prune)
    client = _service(ctx, roots)
    if client is not None:
        options: dict[str, Any] = {"recursive": recursive, "prune": prune}
        if extensions:
            options["extensions"] = list(extensions)
        status = _index_through(client, ctx, targets, options, metadata, captions, progress, detach)
    else:
        if detach:
            raise MMSearchError(DETACH_NEEDS_SERVICE)
        status = _index_here(ctx, paths, recursive, extensions, metadata, prune, progress, captions)
    if detach:
        if as_json:
            _emit_json(status.model_dump())
        else:
            click.echo(f"index job {status.id} {status.state}: follow it with `mmsearch jobs`")
        return
    if status.state == "failed" or status.report is None:
        raise MMSearchError(status.error or f"the index job ended {status.state}")
    report = status.report
    if as_json:
        _emit_json(report.model_dump())
    else:
        for failed in report.failed:
            click.echo(f"failed: {failed.path}: {failed.reason}", err=True)
        for failed in report.caption_failed:
            click.echo(f"no caption: {failed.path}: {failed.reason}", err=True)
        captioned = f", captioned {report.captioned}" if report.captioned else ""
        click.echo(
            f"indexed {report.indexed}, unchanged {report.unchanged}, "
            f"duplicates {report.duplicates}, failed {len(report.failed)}, "
            f"removed {report.removed}{captioned} (of {report.total} files)"
            + (", cancelled" if report.cancelled else "")
        )
    if report.cancelled:
        ctx.exit(EXIT_CANCELLED)
    if report.failed:
        ctx.exit(EXIT_ERROR)


SERVICE_PATHS_PER_CALL = 1000
"""The most paths the service's ``index_images`` takes in one call."""


def _expand_globs(
    paths: tuple[str, ...], extensions: tuple[str, ...], prune: bool
) -> tuple[list[str], list[str]]:
    """The absolute paths to hand to the service, and the folders to share as its roots.

    A glob is expanded here, as indexing in this process would expand it, so that the
    service gets the files this user's shell sees and only their folders need sharing.
    The pattern itself goes along too when it matches nothing (the job then reports an
    empty glob just as in this process) or with ``--prune`` (records of files that are
    gone match no file, only the pattern); then its fixed folder is shared. Past the
    service's limit on paths per call, the patterns go instead of their files.
    """
    from mmsearch.selection import glob_base, glob_files, has_magic, normalize_extensions

    exts = normalize_extensions(list(extensions) or None)
    plain: list[str] = []
    globs: list[tuple[str, list[str]]] = []
    for raw in paths:
        path = os.path.abspath(os.path.expanduser(raw))
        if not has_magic(raw) or os.path.lexists(path):
            plain.append(path)
        else:
            globs.append((path, glob_files(path, exts)))
    targets, roots = list(plain), list(plain)
    expand = len(plain) + sum(len(m) for _, m in globs) <= SERVICE_PATHS_PER_CALL
    for pattern, matches in globs:
        if expand:
            targets.extend(matches)
            roots.extend(matches)
        if prune or not matches or not expand:
            targets.append(pattern)
            roots.append(glob_base(pattern))
    return targets, roots


def _index_here(
    ctx: click.Context,
    paths: tuple[str, ...],
    recursive: bool,
    extensions: tuple[str, ...],
    metadata: dict[str, Any] | None,
    prune: bool,
    progress: bool | None,
    captions: bool | None,
) -> IndexJobStatus:
    """The job in this process, followed to its end; Ctrl-C cancels it."""
    with _engine(ctx) as lib, _cancel_on_interrupt() as cancel:
        from mmsearch.jobs import IndexJobs

        jobs = IndexJobs(lib, lib.settings.data_dir)
        bar = _progress_bar(progress)
        try:
            job = jobs.submit(
                list(paths),
                recursive=recursive,
                extensions=list(extensions) or None,
                metadata=metadata,
                prune=prune,
                captions=captions,
                listener=bar,
            )
            return _follow(jobs, job.id, cancel)
        finally:
            bar.close()
            jobs.close()


FOLLOW_WAIT_S = 20.0
"""How long each ``index_images`` call waits on the service while the CLI follows a job."""


def _index_through(
    client: ServiceClient,
    ctx: click.Context,
    paths: list[str],
    options: dict[str, Any],
    metadata: dict[str, Any] | None,
    captions: bool | None,
    progress: bool | None,
    detach: bool,
) -> IndexJobStatus:
    """Start (or join) the job on the service (``options``: recursive, extensions,
    prune, as ``index_images`` takes them), then follow it with repeated
    ``index_images`` calls, which join it and report progress; Ctrl-C cancels the job
    (``cancel_index``). ``detach``: answer at once, the job runs on in the service."""
    arguments: dict[str, Any] = {
        "paths": paths,
        **options,
        "wait_s": 0,
        **_collection_argument(ctx),
    }
    if metadata is not None:
        arguments["metadata"] = metadata
    if captions is not None:
        arguments["captions"] = captions
    with client:
        status = IndexJobStatus.model_validate(client.call_tool("index_images", arguments))
        if detach or not status.active:
            return status
        bar = _progress_bar(progress)

        def on_progress(params: dict[str, Any]) -> None:
            total = params.get("total")
            bar(IndexProgress(done=int(params.get("progress", 0)), total=int(total or 0)))

        try:
            while status.active:
                answer = IndexJobStatus.model_validate(
                    client.call_tool(
                        "index_images", {**arguments, "wait_s": FOLLOW_WAIT_S}, progress=on_progress
                    )
                )
                if answer.id != status.id:
                    # ours ended between two calls, so this call started another: report
                    # ours (a second --prune run would find nothing left to remove)
                    listed = client.call_tool("index_status", {"job_id": status.id})
                    [answer] = IndexJobList.model_validate(listed).jobs
                status = answer
        except KeyboardInterrupt:
            client.call_tool("cancel_index", {"job_id": status.id})
            raise click.exceptions.Exit(EXIT_CANCELLED) from None
        finally:
            bar.close()
    return status


DETACH_NEEDS_SERVICE = (
    "--detach needs the mmsearch service to run the job after this command exits; in "
    "this in-process mode the job runs in this process: run without --detach"
)


def _follow(jobs: IndexJobs, job_id: str, cancel: threading.Event) -> IndexJobStatus:
    """Wait for the job; once ``cancel`` is set (Ctrl-C), cancel it and wait for it to stop
    after its current batch. Polls, so that the signal handler never needs a lock."""
    asked = False
    while True:
        status = jobs.wait(job_id, timeout=0.2)
        if not status.active:
            return status
        if cancel.is_set() and not asked:
            jobs.cancel(job_id)
            asked = True


@contextmanager
def _cancel_on_interrupt() -> Iterator[threading.Event]:
    """First Ctrl-C: finish the current batch and stop, leaving the index consistent.
    Second Ctrl-C: abort at once."""
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def on_interrupt(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        click.echo("\nstopping after the current batch (Ctrl-C again to abort)", err=True)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


class _ProgressBar:
    def __init__(self, enabled: bool | None) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=0, unit="img", file=sys.stderr, disable=None if enabled is None else not enabled
        )

    def __call__(self, p: IndexProgress) -> None:
        if self._bar.total != p.total:
            self._bar.total = p.total
        self._bar.n = p.done
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _progress_bar(enabled: bool | None) -> _ProgressBar:
    return _ProgressBar(enabled)


@cli.command()
@click.option("--text", help="Text query.")
@click.option("--image", type=click.Path(dir_okay=False, path_type=str), help="Query image.")
@click.option(
    "--similar-to",
    "similar_to",
    metavar="ID|PATH",
    help="Images like this indexed one (by id or indexed path), itself left out; --text steers it.",
)
@click.option("--top-k", "top_k", default=9, show_default=True, type=int)
@click.option("--min-score", "min_score", type=float, help="Drop hits scoring below this.")
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON on stdout.")
@click.option("--filter-path-prefix", help="Only images inside this folder.")
@click.option("--filter-path-glob", help="Only paths matching this glob (* is any run of text).")
@click.option("--filter-path-contains", help="Only paths containing this text.")
@click.option("--filter-meta", multiple=True, metavar="KEY=VALUE", help="Metadata equality.")
@click.option("--filter-mtime-min", type=float, help="Modified at or after (POSIX seconds).")
@click.option("--filter-mtime-max", type=float, help="Modified at or before (POSIX seconds).")
@click.option("--filter-size-min", type=int, help="At least this many bytes.")
@click.option("--filter-size-max", type=int, help="At most this many bytes.")
@click.pass_context
def search(
    ctx: click.Context,
    text: str | None,
    image: str | None,
    similar_to: str | None,
    top_k: int,
    min_score: float | None,
    as_json: bool,
    filter_path_prefix: str | None,
    filter_path_glob: str | None,
    filter_path_contains: str | None,
    filter_meta: tuple[str, ...],
    filter_mtime_min: float | None,
    filter_mtime_max: float | None,
    filter_size_min: int | None,
    filter_size_max: int | None,
) -> None:
    """Find images by text, by an example image, or both; or images like an indexed one."""
    raw: dict[str, Any] = {
        "path_prefix": os.path.abspath(filter_path_prefix) if filter_path_prefix else None,
        "path_glob": filter_path_glob,
        "path_contains": filter_path_contains,
        "metadata": parse_key_values(filter_meta, "--filter-meta"),
        "mtime_min": filter_mtime_min,
        "mtime_max": filter_mtime_max,
        "size_min": filter_size_min,
        "size_max": filter_size_max,
    }
    flt: SearchFilter | None = parse_filter({k: v for k, v in raw.items() if v not in (None, {})})
    image_root = [os.path.dirname(os.path.abspath(image))] if image else []
    client = _service(ctx, image_root)
    if client is not None:
        with client:
            arguments: dict[str, Any] = {"top_k": top_k, **_collection_argument(ctx)}
            if text is not None:
                arguments["text"] = text
            if image is not None:
                arguments["image"] = os.path.abspath(image)
            if similar_to is not None:
                arguments["similar_to"] = _image_id(similar_to, ctx)
            if min_score is not None:
                arguments["min_score"] = min_score
            if flt is not None:
                arguments["filter"] = flt.model_dump(mode="json", exclude_none=True)
            found = client.call_tool("multimodal_search", arguments)
        hits = [SearchHit.model_validate(hit) for hit in found.get("hits", [])]
    else:
        with _engine(ctx) as lib:
            hits = lib.search(
                text=text,
                image=image,
                top_k=top_k,
                filter=flt,
                similar_to=similar_to,
                min_score=min_score,
            )
    if as_json:
        _emit_json([h.model_dump() for h in hits])
    else:
        for hit in hits:
            caption = f"  ({hit.caption})" if hit.caption else ""
            click.echo(f"{hit.score:.4f}  {hit.path}{caption}")
        if not hits:
            click.echo(
                "no images match (the collection is empty or the filters exclude all)", err=True
            )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Show the collection's size, model and location."""
    client = _service(ctx)
    if client is not None:
        with client:
            st = CollectionStats.model_validate(
                client.call_tool("collection_stats", _collection_argument(ctx))
            )
    else:
        with _engine(ctx) as lib:
            st = lib.stats()
    if as_json:
        _emit_json(st.model_dump())
    else:
        click.echo(
            f"collection {st.collection}: {st.count} images, model {st.model_id} "
            f"(dim {st.dim}), {st.uri}"
        )


@cli.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
@click.pass_context
def jobs(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List recent index jobs of this data directory, newest first."""
    from mmsearch.jobs import JobRecords

    statuses = JobRecords(_settings(ctx).data_dir).recent(limit)
    if as_json:
        _emit_json([s.model_dump(mode="json") for s in statuses])
        return
    for s in statuses:
        left = f", about {s.eta_s:.0f} s left" if s.state == "running" and s.eta_s else ""
        click.echo(
            f"{s.id}  {s.state:<11} {s.done}/{s.total} files ({s.indexed} indexed, "
            f"{s.unchanged} unchanged, {s.failed} failed), {s.elapsed_s:.0f} s{left}  "
            + " ".join(s.paths)
        )


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@click.option("--id", "ids", multiple=True, help="Image id (SHA-256) to remove.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
@click.pass_context
def remove(ctx: click.Context, paths: tuple[str, ...], ids: tuple[str, ...], as_json: bool) -> None:
    """Remove records by path or id from the collection (files are not touched)."""
    if not paths and not ids:
        raise click.UsageError("give PATHS or --id")
    folders = [p for p in paths if os.path.isdir(p)]
    if folders:
        raise MMSearchError(
            f"{folders[0]} is a folder: remove takes image files or --id (to forget the "
            "images deleted from a folder, run `mmsearch index FOLDER --prune`)"
        )
    client = _service(ctx, [os.path.abspath(p) for p in paths])
    if client is not None:
        arguments: dict[str, Any] = {**_collection_argument(ctx)}
        if ids:
            arguments["ids"] = list(ids)
        if paths:
            arguments["paths"] = [os.path.abspath(p) for p in paths]
        with client:
            n = int(client.call_tool("remove_images", arguments).get("removed", 0))
    else:
        with _engine(ctx) as lib:
            n = lib.remove(ids=list(ids) or None, paths=list(paths) or None)
    if as_json:
        _emit_json({"removed": n})
    else:
        click.echo(f"removed {n}")


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
)
@click.argument("server_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def mcp(ctx: click.Context, server_args: tuple[str, ...]) -> None:
    """Run the MCP server (stdio by default; `mmsearch mcp --help` for its options).

    Registry clients start a PyPI package by its console script, named like the package,
    with the arguments listed in server.json: ``mmsearch mcp``. The server is its own
    program (``python -m mcp_server``), which the library does not import; this command
    hands the process over to it, so stdin and stdout stay the protocol's.
    """
    env = dict(os.environ)
    overrides = ctx.obj["overrides"]
    for option, variable in (
        ("milvus_uri", "MMSEARCH_MILVUS_URI"),
        ("collection", "MMSEARCH_COLLECTION"),
    ):
        if overrides.get(option) is not None:
            env[variable] = overrides[option]
    command = [sys.executable, "-m", "mcp_server", *server_args]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execve(sys.executable, command, env)
    import subprocess

    ctx.exit(subprocess.run(command, env=env, check=False).returncode)


def _resolve_stored_ids(ids: Sequence[str]) -> dict[str, str]:
    """``mmsearch rerank -c ID``: stored image ids -> their paths, in the CLI's collection."""
    wanted = [i for i in ids if re.fullmatch(r"[0-9a-f]{64}", i)]
    if not wanted:
        return {}
    with _engine(click.get_current_context().find_root()) as lib:
        return {r.id: r.path for r in lib.get(wanted)}


def _eval_embedder(settings: Settings) -> Any:
    from mmsearch.library import default_embedder_factory

    factory = click.get_current_context().find_root().obj.get("embedder_factory")
    return (factory or default_embedder_factory)(settings)


from mmsearch.watch_cli import watch  # noqa: E402 (the group needs ``cli`` defined)

cli.add_command(watch)


def main(
    argv: list[str] | None = None, *, embedder_factory: Callable[..., Any] | None = None
) -> None:
    """Console entry point (``embedder_factory`` lets tests supply a model)."""
    cli.main(args=argv, prog_name="mmsearch", obj={"embedder_factory": embedder_factory})


if __name__ == "__main__":
    main()
