"""Rerank search hits with a vision-language model.

Steps: caption the query image (if any), lay the candidates out as a numbered contact
sheet (or pass them as separate images), ask the model for a ranking under the
permutation constraint, map the numbers back to IDs. A model that fails or runs past
the deadline costs the caller nothing but time: the retrieval order comes back,
marked ``reranked=False`` with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from mmsearch.config import Settings
from mmsearch.errors import ImageDecodeError, InvalidQueryError, RerankError
from mmsearch.images import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    coerce_image,
    load_image_file,
)
from mmsearch.pathnames import check_path, is_utf8
from mmsearch.rerank.backends import (
    ChatMessage,
    ContentPart,
    VisionLanguageModel,
    load_vlm,
    model_lock,
)
from mmsearch.rerank.constrained import (
    ParsedRanking,
    PermutationLogitsProcessor,
    TokenVocabulary,
    candidate_labels,
    parse_answer,
    token_budget,
)
from mmsearch.rerank.sheet import build_contact_sheet, thumbnail
from mmsearch.types import RankedCandidates, RerankCandidate

logger = logging.getLogger(__name__)

CandidateLike = RerankCandidate | Mapping[str, Any] | tuple[str, str | os.PathLike[str]] | Any
"""A :class:`RerankCandidate`, anything with ``id`` and ``path`` attributes (a
``SearchHit``), a ``{"id", "path"}`` mapping, or an ``(id, path)`` pair."""

CAPTION_PROMPT = "Describe this image in one short sentence."
CAPTION_MAX_CHARS = 300


def normalize_candidates(candidates: Sequence[CandidateLike], limit: int) -> list[RerankCandidate]:
    out: list[RerankCandidate] = []
    for c in candidates:
        if isinstance(c, RerankCandidate):
            out.append(c)
        elif isinstance(c, Mapping):
            out.append(RerankCandidate(id=str(c["id"]), path=str(c["path"])))
        elif isinstance(c, tuple) and len(c) == 2:
            out.append(RerankCandidate(id=str(c[0]), path=str(c[1])))
        elif hasattr(c, "id") and hasattr(c, "path"):
            out.append(RerankCandidate(id=str(c.id), path=str(c.path)))
        else:
            raise InvalidQueryError(f"not a rerank candidate (needs an id and a path): {c!r}")
    if not out:
        raise InvalidQueryError("rerank needs at least one candidate")
    if len(out) > limit:
        raise InvalidQueryError(
            f"{len(out)} candidates given; at most {limit} can be reranked at once "
            "(setting max_rerank_candidates)"
        )
    duplicates = sorted(i for i, k in Counter(c.id for c in out).items() if k > 1)
    if duplicates:
        shown = ", ".join(repr(d) for d in duplicates[:5])
        raise InvalidQueryError(f"candidate IDs must be unique; repeated: {shown}")
    return out


def validate_request(
    candidates: Sequence[CandidateLike],
    text: str | None,
    image: str | os.PathLike[str] | Image.Image | None,
    limit: int,
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> tuple[list[RerankCandidate], str | None, Image.Image | None]:
    """Check a request before any model is touched."""
    items = normalize_candidates(candidates, limit)
    if text is not None and not isinstance(text, str):
        raise InvalidQueryError(f"text must be a string, not {type(text).__name__}")
    text = (text or "").strip() or None
    if text is not None and not is_utf8(text):
        raise InvalidQueryError("text is not valid Unicode (it holds a lone surrogate)")
    query_image = (
        open_query_image(image, max_bytes=max_bytes, max_pixels=max_pixels)
        if image is not None
        else None
    )
    if text is None and query_image is None:
        raise InvalidQueryError("rerank needs a query text, a query image, or both")
    return items, text, query_image


def open_query_image(
    image: str | os.PathLike[str] | bytes | Image.Image,
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Image.Image:
    """The query image as RGB, read with the same limits as indexing (a regular file,
    at most ``max_bytes``, at most ``max_pixels``): a FIFO or a bomb is an
    :class:`ImageDecodeError`, not a hang or a Pillow exception."""
    if not isinstance(image, Image.Image | bytes | bytearray | memoryview):
        image = check_path(image, "query image path")
        image = os.path.expanduser(image)
    pil = coerce_image(image, max_bytes=max_bytes, max_pixels=max_pixels)
    return pil.convert("RGB")


def _open_candidate(path: str, size: int, max_bytes: int, max_pixels: int) -> Image.Image | None:
    """A thumbnail of one candidate, or ``None`` (noted in the result) when its file
    cannot be read: candidates are read like indexed files, so a file replaced by a FIFO,
    a device or a bomb since it was indexed costs nothing but its place."""
    try:
        loaded = load_image_file(path, max_bytes=max_bytes, max_pixels=max_pixels, draft_size=size)
        return thumbnail(loaded.image, size)
    except (ImageDecodeError, OSError, ValueError) as e:
        logger.warning("cannot read rerank candidate: %s", e)
        return None


def _one_line(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


class Reranker:
    """One model, its vocabulary index cache and the rerank settings."""

    def __init__(
        self,
        model: VisionLanguageModel,
        *,
        timeout_s: float = 120.0,
        max_candidates: int = 20,
        reason_max_chars: int = 200,
        input_mode: str = "sheet",
        cell_size: int = 256,
        caption_max_new_tokens: int = 40,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        if input_mode == "images" and not model.supports_multiple_images:
            raise RerankError(f"{model.model_id} takes one image per prompt; use the sheet")
        self.model = model
        self.timeout_s = timeout_s
        self.max_candidates = max_candidates
        self.reason_max_chars = reason_max_chars
        self.input_mode = input_mode
        self.cell_size = cell_size
        self.caption_max_new_tokens = caption_max_new_tokens
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self._vocab: TokenVocabulary | None = None
        self._model_lock = model_lock(model)

    @classmethod
    def from_settings(cls, settings: Settings) -> Reranker:
        return cls(
            load_vlm(settings),
            timeout_s=settings.rerank_timeout_s,
            max_candidates=settings.max_rerank_candidates,
            reason_max_chars=settings.rerank_reason_max_chars,
            input_mode=settings.rerank_input,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
        )

    @property
    def vocabulary(self) -> TokenVocabulary:
        if self._vocab is None:
            self._vocab = TokenVocabulary(self.model.tokenizer, self.model.eos_token_id)
        return self._vocab

    def rerank(
        self,
        candidates: Sequence[CandidateLike],
        text: str | None = None,
        image: str | os.PathLike[str] | Image.Image | None = None,
        *,
        save_sheet: str | os.PathLike[str] | None = None,
    ) -> RankedCandidates:
        started = time.monotonic()
        items, text, query_image = validate_request(
            candidates,
            text,
            image,
            self.max_candidates,
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
        )
        ids = [c.id for c in items]
        thumbs = [
            _open_candidate(c.path, self.cell_size, self.max_image_bytes, self.max_image_pixels)
            for c in items
        ]
        unreadable = [c.id for c, t in zip(items, thumbs, strict=True) if t is None]
        notes = [f"unreadable candidate files: {', '.join(unreadable)}"] if unreadable else []
        sheet = None
        if self.input_mode == "sheet" or save_sheet is not None:
            sheet = build_contact_sheet(thumbs, cell_size=self.cell_size)
            if save_sheet is not None:
                sheet.image.save(save_sheet)

        def result(
            order: list[str], reranked: bool, reason: str = "", note: str = ""
        ) -> RankedCandidates:
            return RankedCandidates(
                ids=order,
                reranked=reranked,
                reason=reason,
                model_id=self.model.model_id,
                note="; ".join([*notes, note] if note else notes),
                elapsed_s=time.monotonic() - started,
            )

        if len(items) == 1:
            return result(ids, True, note="one candidate: nothing to reorder")
        deadline = started + self.timeout_s
        try:
            with self._model_lock:  # one request at a time on the model; waiting counts
                caption = self._caption(query_image, deadline) if query_image is not None else None
                messages = self._messages(thumbs, sheet.image if sheet else None, text, caption)
                labels = self._decode_ranking(messages, len(items), deadline)
        except TimeoutError as e:
            logger.warning("rerank timed out: %s", e)
            return result(ids, False, note=str(e))
        except Exception as e:  # any model failure keeps the retrieval order
            logger.exception("rerank failed; keeping the retrieval order")
            return result(ids, False, note=f"reranker failed: {type(e).__name__}: {e}")
        position = {label: i for i, label in enumerate(candidate_labels(len(items)))}
        order = [ids[position[label]] for label in labels.labels]
        return result(order, True, reason=labels.reason)

    def _caption(self, image: Image.Image, deadline: float) -> str:
        messages: list[ChatMessage] = [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": thumbnail(image, self.cell_size * 2)},
                    {"type": "text", "text": CAPTION_PROMPT},
                ],
            }
        ]
        inputs = self.model.build_inputs(messages)
        generated = self.model.generate(
            inputs, max_new_tokens=self.caption_max_new_tokens, deadline=deadline
        )
        if generated.timed_out:
            raise TimeoutError(f"timed out after {self.timeout_s:g}s while captioning the query")
        caption = self.model.tokenizer.decode(generated.token_ids, skip_special_tokens=True)
        return _one_line(caption, CAPTION_MAX_CHARS)

    def _messages(
        self,
        thumbs: list[Image.Image | None],
        sheet: Image.Image | None,
        text: str | None,
        caption: str | None,
    ) -> list[ChatMessage]:
        n = len(thumbs)
        request = ["You rank images for a search."]
        if text:
            request.append(f'The user asks for: "{_one_line(text, 1000)}".')
        if caption is not None:
            request.append(f'The user gave an example image, described as: "{caption}".')
        content: list[ContentPart] = []
        if sheet is not None and self.input_mode == "sheet":
            content.append({"type": "image", "image": sheet})
            request.append(
                f"The picture shows {n} candidate images in a grid; each has its number "
                "in a black box at its top-left corner."
            )
            content.append({"type": "text", "text": "\n".join(request)})
        else:
            request.append(f"Here are {n} candidate images, numbered 1 to {n}.")
            content.append({"type": "text", "text": "\n".join(request)})
            for i, thumb in enumerate(thumbs, start=1):
                content.append({"type": "text", "text": f"\nCandidate {i}:"})
                if thumb is None:
                    content.append({"type": "text", "text": " (file unreadable)"})
                else:
                    content.append({"type": "image", "image": thumb})
        content.append(
            {
                "type": "text",
                "text": (
                    f"\nRank all {n} candidates from the best match to the worst. Answer "
                    'in JSON: {"ranking": [the numbers 1 to ' + str(n) + ", best first, "
                    'each exactly once], "reason": "one short sentence"}.'
                ),
            }
        )
        return [{"role": "user", "content": content}]

    def _decode_ranking(
        self, messages: list[ChatMessage], n: int, deadline: float
    ) -> ParsedRanking:
        inputs = self.model.build_inputs(messages)
        processor = PermutationLogitsProcessor(self.vocabulary, n, self.reason_max_chars)
        generated = self.model.generate(
            inputs,
            max_new_tokens=token_budget(n, self.reason_max_chars),
            logits_processor=processor,
            deadline=deadline,
        )
        if generated.timed_out:
            raise TimeoutError(f"timed out after {self.timeout_s:g}s while ranking")
        parsed = parse_answer(self.vocabulary.text_of(generated.token_ids), n)
        return ParsedRanking(parsed.labels, self._readable_reason(generated.token_ids, parsed))

    def _readable_reason(self, token_ids: list[int], parsed: ParsedRanking) -> str:
        """The reason decoded as a whole, so characters split across byte tokens come out
        whole (token by token they read as U+FFFD)."""
        try:
            decoded = json.loads(self.model.tokenizer.decode(token_ids, skip_special_tokens=True))
        except (ValueError, TypeError):
            return parsed.reason
        reason = decoded.get("reason") if isinstance(decoded, dict) else None
        return reason if isinstance(reason, str) else parsed.reason


_SHARED: dict[tuple[Any, ...], Reranker] = {}


def rerank(
    candidates: Sequence[CandidateLike],
    text: str | None = None,
    image: str | os.PathLike[str] | Image.Image | None = None,
    *,
    settings: Settings | None = None,
    save_sheet: str | os.PathLike[str] | None = None,
    reranker: Reranker | None = None,
) -> RankedCandidates:
    """Reorder ``candidates`` (best first) for the query ``text`` and/or ``image``.

    Every candidate ID comes back exactly once. The model is loaded on first use and
    shared by the process. Raises :class:`InvalidQueryError` for no query, no or too many
    candidates, or repeated IDs; :class:`ImageDecodeError` for an unreadable query
    image; :class:`ModelLoadError` when the model cannot be loaded. Failures while the
    model runs (and timeouts) return the input order with ``reranked=False``."""
    if reranker is None:
        settings = settings or Settings()
        validate_request(
            candidates,
            text,
            image,
            settings.max_rerank_candidates,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
        )
        key = tuple(
            getattr(settings, f)
            for f in (
                "rerank_model",
                "rerank_backend",
                "rerank_device",
                "dtype",
                "rerank_timeout_s",
                "max_rerank_candidates",
                "rerank_reason_max_chars",
                "rerank_input",
                "max_image_bytes",
                "max_image_pixels",
            )
        )
        if key not in _SHARED:
            _SHARED[key] = Reranker.from_settings(settings)
        reranker = _SHARED[key]
    return reranker.rerank(candidates, text, image, save_sheet=save_sheet)
