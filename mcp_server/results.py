"""Shaping library results for MCP clients: output models, summaries and thumbnails."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from mcp_types import ImageContent, TextContent
from pydantic import BaseModel, Field

from mmsearch.types import IndexJobStatus, IndexReport, SearchHit

THUMBNAIL_SIZE = 128


class SearchResult(BaseModel):
    hits: list[SearchHit] = Field(description="Best match first.")


class RankedImage(BaseModel):
    id: str
    path: str
    rank: int = Field(description="1 is the best match.")


class RerankResult(BaseModel):
    ranking: list[RankedImage] = Field(description="The candidates, best first.")
    reranked: bool = Field(
        description="False when the model could not judge and the given order was kept."
    )
    reason: str = Field(default="", description="The model's short explanation.")
    note: str = Field(default="", description="Why the given order was kept, if it was.")


class RemoveResult(BaseModel):
    removed: int = Field(description="Records deleted from the collection.")


def plural(count: int, noun: str) -> str:
    """``1 image``, ``2 images``: the summaries are read by people and models alike."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def index_summary(report: IndexReport) -> str:
    """Indexed, unchanged, duplicates and failed add up to the files found."""
    parts = [
        f"{report.indexed} indexed",
        f"{report.unchanged} unchanged",
        plural(report.duplicates, "duplicate"),
        f"{len(report.failed)} failed",
    ]
    if report.removed:
        parts.append(f"{report.removed} removed")
    if report.captioned or report.caption_failed:
        parts.append(f"{report.captioned} captioned")
    text = f"{', '.join(parts)} of {plural(report.total, 'file')}"
    if report.cancelled:
        text += " (cancelled before the end)"
    for failure in report.failed[:10]:
        text += f"\n  failed: {failure.path}: {failure.reason}"
    if len(report.failed) > 10:
        text += f"\n  ... and {len(report.failed) - 10} more failures"
    if report.caption_failed:
        text += f"\n  {len(report.caption_failed)} without a caption, e.g. "
        text += f"{report.caption_failed[0].path}: {report.caption_failed[0].reason}"
    return text


def search_summary(hits: list[SearchHit]) -> str:
    if not hits:
        return "No matching images."
    lines = [f"{plural(len(hits), 'image')}, best first:"]
    lines += [  # the full id: rerank takes these
        f"{i}. {hit.path} (score {hit.score:.3f}, id {hit.id})"
        + (f": {hit.caption}" if hit.caption else "")
        for i, hit in enumerate(hits, 1)
    ]
    if hits[0].score_kind == "rrf":
        lines.append("Scores are rank-fusion scores of the image and caption rankings.")
    return "\n".join(lines)


def rerank_summary(result: RerankResult) -> str:
    lines = [f"{r.rank}. {r.path}" for r in result.ranking]
    if result.reranked:
        lines.append(f"Reason: {result.reason}" if result.reason else "")
    else:
        lines.insert(0, f"Kept the given order: {result.note or 'the reranker did not answer'}")
    return "\n".join(line for line in lines if line)


def thumbnail(path: Path, size: int, *, max_bytes: int, max_pixels: int) -> ImageContent:
    """A small JPEG of ``path`` so an assistant can look at a hit without reading the file."""
    return ImageContent(
        type="image",
        data=base64.b64encode(
            thumbnail_jpeg(path, size, max_bytes=max_bytes, max_pixels=max_pixels)
        ).decode("ascii"),
        mime_type="image/jpeg",
    )


def thumbnail_jpeg(path: Path, size: int, *, max_bytes: int, max_pixels: int) -> bytes:
    """The JPEG bytes of ``path`` scaled to fit ``size`` x ``size``.

    The file is read with the library's limits (a regular file, at most ``max_bytes``,
    at most ``max_pixels`` declared pixels, checked before decoding): the file behind a
    stored path may have been replaced since it was indexed."""
    from mmsearch.images import decode_image, read_image_bytes

    data = read_image_bytes(path, max_bytes=max_bytes)
    image = decode_image(data, name=str(path), max_pixels=max_pixels, draft_size=size)
    image = image.convert("RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def caption(hit: SearchHit, rank: int) -> TextContent:
    return TextContent(type="text", text=f"#{rank} {hit.path} (score {hit.score:.3f})")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def job_summary(status: IndexJobStatus) -> str:
    """One job in words: the report once it finished, else where it stands and what to
    call next."""
    if status.state == "finished" and status.report is not None:
        return index_summary(status.report)
    head = f"Index job {status.id} is {status.state}"
    if status.state == "queued":
        return (
            f"{head}: it starts when the collection's running job ends. Call index_status "
            f'with job_id "{status.id}" to follow it, or cancel_index to drop it.'
        )
    counts = (
        f"{status.done} of {status.total} files done ({status.indexed} indexed, "
        f"{status.unchanged} unchanged, {status.failed} failed), "
        f"{_duration(status.elapsed_s)} elapsed"
    )
    if status.state == "running":
        left = f", about {_duration(status.eta_s)} left" if status.eta_s is not None else ""
        return (
            f"{head}: {counts}{left}. It continues in the background: call index_status "
            f'with job_id "{status.id}" to follow it, or cancel_index to stop it.'
        )
    text = f"{head}: {status.error or status.state}. {counts}."
    if status.state in ("cancelled", "interrupted"):
        text += " Index the same paths again to continue (stored files are skipped)."
    return text


def jobs_summary(statuses: list[IndexJobStatus]) -> str:
    if not statuses:
        return "No index jobs."
    lines = []
    for s in statuses:
        paths = ", ".join(s.paths)
        lines.append(
            f"{s.id} {s.state}: {s.done} of {s.total} files ({s.indexed} indexed, "
            f"{s.failed} failed) in {s.collection}: {paths[:200]}"
        )
    return "\n".join(lines)
