"""Shaping library results for MCP clients: output models, summaries and thumbnails."""

from __future__ import annotations

import base64
import io
import warnings
from pathlib import Path

from mcp_types import ImageContent, TextContent
from pydantic import BaseModel, Field

from mmsearch.types import IndexReport, SearchHit

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


def index_summary(report: IndexReport) -> str:
    parts = [f"{report.indexed} indexed", f"{report.unchanged} unchanged"]
    if report.removed:
        parts.append(f"{report.removed} removed")
    parts.append(f"{len(report.failed)} failed")
    if report.captioned or report.caption_failed:
        parts.append(f"{report.captioned} captioned")
    text = f"{', '.join(parts)} of {report.total} files"
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
    lines = [f"{len(hits)} image{'s' if len(hits) != 1 else ''}, best first:"]
    lines += [
        f"{i}. {hit.path} (score {hit.score:.3f}, id {hit.id[:12]})"
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
    from PIL import Image, ImageOps

    from mmsearch.errors import ImageDecodeError
    from mmsearch.images import read_image_bytes

    data = read_image_bytes(path, max_bytes=max_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
    with image:
        if image.width * image.height > max_pixels:
            raise ImageDecodeError(f"over the {max_pixels}-pixel limit")
        image.draft("RGB", (size, size))
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def caption(hit: SearchHit, rank: int) -> TextContent:
    return TextContent(type="text", text=f"#{rank} {hit.path} (score {hit.score:.3f})")
