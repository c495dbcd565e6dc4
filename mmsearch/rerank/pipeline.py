"""Rerank search hits with a vision-language model.

Steps: caption the query image (if any; on a CPU it goes into the ranking prompt
itself instead), lay the candidates out as a numbered contact sheet (or pass them as
separate images), ask the model for a ranking under the permutation constraint, map the
numbers back to IDs. A model that fails or runs past
the deadline costs the caller nothing but time: the retrieval order comes back,
marked ``reranked=False`` with the reason.

The deadline (``timeout_s``) holds for the whole call: file reading is checked between
files, the work is estimated before the model runs (:mod:`mmsearch.rerank.budget`) and
refused at once when it cannot fit, and the model itself checks it between layers.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
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
    Generation,
    VisionLanguageModel,
    load_vlm,
    model_lock,
)
from mmsearch.rerank.budget import CostModel
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
CAPTION_MIN_TOKENS = 8
"""Tokens a caption is assumed to take when estimating (a low guess: estimates refuse
only what cannot fit)."""
TIMEOUT_SETTING = "MMSEARCH_RERANK_TIMEOUT_S"


class DeadlineExceeded(TimeoutError):
    """The rerank cannot finish, or did not finish, before its deadline."""


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


def _prompt_tokens(inputs: Mapping[str, Any]) -> int:
    ids = inputs.get("input_ids") if isinstance(inputs, Mapping) else None
    shape = getattr(ids, "shape", None)
    return int(shape[-1]) if shape else 0


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
        with_reason: bool = True,
        query_image: str = "caption",
    ) -> None:
        if input_mode == "images" and not model.supports_multiple_images:
            raise RerankError(f"{model.model_id} takes one image per prompt; use the sheet")
        if query_image == "auto":
            query_image = default_query_image_mode(model)
        if query_image not in ("caption", "inline"):
            raise RerankError(f"unknown query image mode {query_image!r} (caption or inline)")
        if query_image == "inline" and not model.supports_multiple_images:
            raise RerankError(
                f"{model.model_id} takes one image per prompt: the query image can only be "
                "captioned (MMSEARCH_RERANK_QUERY_IMAGE=caption)"
            )
        self.model = model
        self.timeout_s = timeout_s
        self.max_candidates = max_candidates
        self.reason_max_chars = reason_max_chars
        self.input_mode = input_mode
        self.cell_size = cell_size
        self.caption_max_new_tokens = caption_max_new_tokens
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self.with_reason = with_reason
        self.query_image = query_image
        """``caption``: describe the query image first; ``inline``: show it in the
        ranking prompt (one generation instead of two)."""
        self._vocab: TokenVocabulary | None = None
        self._model_lock = model_lock(model)
        self.cost = CostModel(getattr(model, "model", None))
        """Seconds a generation will take; updated by every finished one."""

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
            with_reason=settings.rerank_with_reason,
            query_image=settings.rerank_query_image,
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
        with_reason: bool | None = None,
    ) -> RankedCandidates:
        """``with_reason=False``: stop decoding once the ranking is closed (the reason
        comes back empty); ``None``: the reranker's default."""
        started = time.monotonic()
        deadline = started + self.timeout_s
        reason_wanted = self.with_reason if with_reason is None else with_reason
        items, text, query_image = validate_request(
            candidates,
            text,
            image,
            self.max_candidates,
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
        )
        ids = [c.id for c in items]
        notes: list[str] = []

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

        thumbs: list[Image.Image | None] = []
        for c in items:
            if time.monotonic() >= deadline:
                return result(ids, False, note=self._timeout_note("reading the candidate files"))
            thumbs.append(
                _open_candidate(c.path, self.cell_size, self.max_image_bytes, self.max_image_pixels)
            )
        unreadable = [c.id for c, t in zip(items, thumbs, strict=True) if t is None]
        if unreadable:
            notes.append(f"unreadable candidate files: {', '.join(unreadable)}")
        sheet = None
        if self.input_mode == "sheet" or save_sheet is not None:
            sheet = build_contact_sheet(thumbs, cell_size=self.cell_size)
            if save_sheet is not None:
                sheet.image.save(save_sheet)

        if len(items) == 1:
            return result(ids, True, note="one candidate: nothing to reorder")
        try:
            with self._model_lock:  # one request at a time on the model; waiting counts
                sheet_image = sheet.image if sheet else None
                inline = query_image is not None and self.query_image == "inline"
                example = thumbnail(query_image, self.cell_size * 2) if inline else None
                placeholder = "" if query_image is not None and not inline else None
                ranking_inputs = self.model.build_inputs(
                    self._messages(thumbs, sheet_image, text, placeholder, example)
                )
                caption_inputs = (
                    self.model.build_inputs(self._caption_messages(query_image))
                    if query_image is not None and not inline
                    else None
                )
                self._check_estimate(
                    ranking_inputs, caption_inputs, len(items), reason_wanted, deadline
                )
                if caption_inputs is not None:
                    caption = self._caption(caption_inputs, deadline)
                    messages = self._messages(thumbs, sheet_image, text, caption)
                    ranking_inputs = self.model.build_inputs(messages)
                labels, cut_note = self._decode_ranking(
                    ranking_inputs, len(items), deadline, reason_wanted
                )
        except TimeoutError as e:
            logger.warning("rerank timed out: %s", e)
            return result(ids, False, note=str(e))
        except Exception as e:  # any model failure keeps the retrieval order
            logger.exception("rerank failed; keeping the retrieval order")
            return result(ids, False, note=f"reranker failed: {type(e).__name__}: {e}")
        position = {label: i for i, label in enumerate(candidate_labels(len(items)))}
        order = [ids[position[label]] for label in labels.labels]
        return result(order, True, reason=labels.reason, note=cut_note)

    def _timeout_note(self, stage: str) -> str:
        return (
            f"timed out after {self.timeout_s:g} s while {stage} (setting "
            f"{TIMEOUT_SETTING}); the retrieval order is kept"
        )

    def _ranking_tokens(self, n: int, with_reason: bool) -> int:
        """Tokens of the shortest answer: the ranking (and an empty reason)."""
        answer = '{"ranking": [' + ", ".join(f'"{i}"' for i in range(1, n + 1)) + "]"
        if with_reason:
            answer += ', "reason": ""}'
        return len(self.model.tokenizer.encode(answer, add_special_tokens=False)) + 1

    def _check_estimate(
        self,
        ranking_inputs: Mapping[str, Any],
        caption_inputs: Mapping[str, Any] | None,
        n: int,
        with_reason: bool,
        deadline: float,
    ) -> None:
        """Refuse at once (:class:`DeadlineExceeded`) work estimated not to fit."""
        prompt = _prompt_tokens(ranking_inputs)
        estimate = self.cost.estimate(prompt, self._ranking_tokens(n, with_reason))
        if estimate is None:
            return
        if caption_inputs is not None:
            estimate += self.cost.estimate(_prompt_tokens(caption_inputs), CAPTION_MIN_TOKENS) or 0
        left = deadline - time.monotonic()
        if estimate > left:
            raise DeadlineExceeded(
                f"not reranked: estimated {estimate:.0f} s for {n} candidates "
                f"({prompt} prompt tokens) on this device, and {max(left, 0):.0f} s are left "
                f"of {TIMEOUT_SETTING}={self.timeout_s:g}; raise {TIMEOUT_SETTING}, lower "
                "MMSEARCH_RERANK_NUM_CROPS, rerank fewer candidates"
                + ("" if not with_reason else ", ask without the reason")
                + (", pack the weights (MMSEARCH_RERANK_QUANTIZE)" if self._packable() else "")
                + " or use a GPU"
            )

    def _packable(self) -> bool:
        """A float32 CPU model whose weights are not packed yet."""
        from mmsearch.rerank.quantize import PackedLinear

        model = getattr(self.model, "model", None)
        param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
        if param is None or param.device.type != "cpu" or param.dtype != torch.float32:
            return False
        return not any(isinstance(m, PackedLinear) for m in model.modules())

    def _generate(
        self, inputs: Mapping[str, Any], *, max_new_tokens: int, deadline: float, **kwargs: Any
    ) -> Generation:
        generated = self.model.generate(
            inputs, max_new_tokens=max_new_tokens, deadline=deadline, **kwargs
        )
        if not generated.timed_out:
            self.cost.observe(
                generated.prompt_tokens,
                generated.prompt_s,
                len(generated.token_ids),
                generated.decode_s,
            )
        return generated

    def _caption_messages(self, image: Image.Image) -> list[ChatMessage]:
        return [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": thumbnail(image, self.cell_size * 2)},
                    {"type": "text", "text": CAPTION_PROMPT},
                ],
            }
        ]

    def _caption(self, inputs: Mapping[str, Any], deadline: float) -> str:
        generated = self._generate(
            inputs, max_new_tokens=self.caption_max_new_tokens, deadline=deadline
        )
        if generated.timed_out:
            raise DeadlineExceeded(self._timeout_note("captioning the query image"))
        caption = self.model.tokenizer.decode(generated.token_ids, skip_special_tokens=True)
        return _one_line(caption, CAPTION_MAX_CHARS)

    def _messages(
        self,
        thumbs: list[Image.Image | None],
        sheet: Image.Image | None,
        text: str | None,
        caption: str | None,
        example: Image.Image | None = None,
    ) -> list[ChatMessage]:
        """The ranking prompt. ``caption``: the query image's description; ``example``:
        the query image itself, shown before the candidates."""
        n = len(thumbs)
        request = ["You rank images for a search."]
        if text:
            request.append(f'The user asks for: "{_one_line(text, 1000)}".')
        if caption is not None:
            request.append(f'The user gave an example image, described as: "{caption}".')
        content: list[ContentPart] = []
        if example is not None:
            content.append({"type": "image", "image": example})
            request.append("The first picture is an example image the user gave.")
        if sheet is not None and self.input_mode == "sheet":
            content.append({"type": "image", "image": sheet})
            where = "The next picture" if example is not None else "The picture"
            request.append(
                f"{where} shows {n} candidate images in a grid; each has its number "
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
        self, inputs: Mapping[str, Any], n: int, deadline: float, with_reason: bool
    ) -> tuple[ParsedRanking, str]:
        """The ranking and a note (non-empty when the deadline cut the reason short: the
        ranking was complete, so it is kept)."""
        processor = PermutationLogitsProcessor(
            self.vocabulary, n, self.reason_max_chars, with_reason=with_reason
        )
        generated = self._generate(
            inputs,
            max_new_tokens=token_budget(n, self.reason_max_chars),
            logits_processor=processor,
            deadline=deadline,
        )
        text = self.vocabulary.text_of(generated.token_ids)
        if generated.timed_out:
            try:
                parsed = parse_answer(text, n, with_reason=False)
            except RerankError:
                stage = "ranking" if generated.token_ids else "reading the prompt (prompt pass)"
                raise DeadlineExceeded(self._timeout_note(stage)) from None
            return parsed, f"reason cut short by the deadline ({TIMEOUT_SETTING})"
        parsed = parse_answer(text, n, with_reason=with_reason)
        if not with_reason:
            return parsed, ""
        return ParsedRanking(parsed.labels, self._readable_reason(generated.token_ids, parsed)), ""

    def _readable_reason(self, token_ids: list[int], parsed: ParsedRanking) -> str:
        """The reason decoded as a whole, so characters split across byte tokens come out
        whole (token by token they read as U+FFFD)."""
        try:
            decoded = json.loads(self.model.tokenizer.decode(token_ids, skip_special_tokens=True))
        except (ValueError, TypeError):
            return parsed.reason
        reason = decoded.get("reason") if isinstance(decoded, dict) else None
        return reason if isinstance(reason, str) else parsed.reason


def default_query_image_mode(model: VisionLanguageModel) -> str:
    """``inline`` on a CPU, where the caption's own generation costs about a second a
    token (bench/README.md), for models that take several images; ``caption`` elsewhere
    (what GPUs have always sent)."""
    device = getattr(getattr(model, "model", None), "device", None)
    on_cpu = device is not None and torch.device(device).type == "cpu"
    return "inline" if on_cpu and model.supports_multiple_images else "caption"


_SHARED: dict[tuple[Any, ...], Reranker] = {}


def rerank(
    candidates: Sequence[CandidateLike],
    text: str | None = None,
    image: str | os.PathLike[str] | Image.Image | None = None,
    *,
    settings: Settings | None = None,
    save_sheet: str | os.PathLike[str] | None = None,
    reranker: Reranker | None = None,
    with_reason: bool | None = None,
) -> RankedCandidates:
    """Reorder ``candidates`` (best first) for the query ``text`` and/or ``image``.

    Every candidate ID comes back exactly once. The model is loaded on first use and
    shared by the process. Raises :class:`InvalidQueryError` for no query, no or too many
    candidates, or repeated IDs; :class:`ImageDecodeError` for an unreadable query
    image; :class:`ModelLoadError` when the model cannot be loaded. Failures while the
    model runs (and timeouts) return the input order with ``reranked=False``.
    ``with_reason``: ask for the one-line reason (default: ``rerank_with_reason``);
    without it decoding stops once the ranking is closed."""
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
                "rerank_num_crops",
                "rerank_with_reason",
                "rerank_memory_check",
                "rerank_quantize",
                "rerank_query_image",
            )
        )
        if key not in _SHARED:
            _SHARED[key] = Reranker.from_settings(settings)
        reranker = _SHARED[key]
    return reranker.rerank(candidates, text, image, save_sheet=save_sheet, with_reason=with_reason)
