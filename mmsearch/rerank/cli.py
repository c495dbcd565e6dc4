"""``mmsearch rerank``: reorder images for a query, from the command line.

Registered on the main group with ``main.add_command(rerank_command)``; a group that
resolves stored image IDs to paths can build its own with :func:`make_rerank_command`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import click

from mmsearch.config import Settings
from mmsearch.errors import InvalidQueryError, MMSearchError
from mmsearch.types import RerankCandidate

IdResolver = Callable[[Sequence[str]], dict[str, str]]
"""Maps stored image IDs to their file paths (IDs it does not know are left out)."""


def resolve_candidates(
    values: Sequence[str], resolve_ids: IdResolver | None
) -> list[RerankCandidate]:
    """An existing file is its own ID; anything else must be a stored image ID."""
    files = {v: Path(v).expanduser() for v in values if Path(v).expanduser().is_file()}
    unknown = [v for v in values if v not in files]
    found = resolve_ids(unknown) if unknown and resolve_ids is not None else {}
    missing = [v for v in unknown if v not in found]
    if missing:
        raise InvalidQueryError(
            "not an image file"
            + (" nor a stored image ID" if resolve_ids is not None else "")
            + ": "
            + ", ".join(missing[:5])
        )
    return [RerankCandidate(id=v, path=str(files[v]) if v in files else found[v]) for v in values]


def make_rerank_command(resolve_ids: IdResolver | None = None) -> click.Command:
    @click.command("rerank")
    @click.option("--text", "-t", help="What the user is looking for.")
    @click.option("--image", "-i", type=click.Path(dir_okay=False), help="An example image.")
    @click.option(
        "--candidate",
        "-c",
        "candidates",
        multiple=True,
        required=True,
        metavar="PATH_OR_ID",
        help="An image to rank (repeat, in retrieval order).",
    )
    @click.option(
        "--save-sheet",
        type=click.Path(dir_okay=False, writable=True),
        help="Also write the numbered contact sheet the model looks at (PNG).",
    )
    @click.option(
        "--reason/--no-reason",
        default=None,
        help="Ask for the model's one-line reason (default: MMSEARCH_RERANK_WITH_REASON, on). "
        "Without it decoding stops at the ranking: faster.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
    @click.pass_context
    def rerank_command(
        ctx: click.Context,
        text: str | None,
        image: str | None,
        candidates: tuple[str, ...],
        save_sheet: str | None,
        reason: bool | None,
        as_json: bool,
    ) -> None:
        """Rerank candidate images (best first) with the vision-language model."""
        from mmsearch.rerank.pipeline import rerank

        settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
        try:
            items = resolve_candidates(candidates, resolve_ids)
            result = rerank(
                items,
                text=text,
                image=image,
                settings=settings,
                save_sheet=save_sheet,
                with_reason=reason,
            )
        except MMSearchError as e:  # one line, as every other command reports errors
            click.echo(f"error: {' '.join(str(e).split())}", err=True)
            ctx.exit(1)
        if as_json:
            click.echo(result.model_dump_json(indent=2))
            return
        by_id = {c.id: c.path for c in items}
        for rank, cid in enumerate(result.ids, start=1):
            path = by_id[cid]
            click.echo(f"{rank}\t{path}" if path == cid else f"{rank}\t{cid}\t{path}")
        if result.reranked:
            if result.reason:
                click.echo(f"reason: {result.reason}", err=True)
        else:
            click.echo(f"not reranked (retrieval order kept): {result.note}", err=True)
        if result.note and result.reranked:
            click.echo(f"note: {result.note}", err=True)

    return rerank_command


rerank_command = make_rerank_command()
