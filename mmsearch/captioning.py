"""Captions for indexed images, written by a vision-language model.

Visualized BGE answers text queries by comparing the query's text embedding with image
embeddings, which is not what its authors recommend it for. A short caption per image,
embedded by the same model's text tower (and, where Milvus has it, indexed for BM25
full-text search), gives text queries a text-to-text ranking to fuse with the
text-to-image one (see :mod:`mmsearch.search`).

The model is the reranker's (``Settings.caption_model``, default ``rerank_model``),
loaded once per process through :func:`mmsearch.rerank.backends.load_vlm` and shared
with the reranker when it is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from PIL import Image

from mmsearch.config import Settings
from mmsearch.errors import MMSearchError

if TYPE_CHECKING:
    from mmsearch.rerank.backends import ChatMessage, VisionLanguageModel

log = logging.getLogger(__name__)

CAPTION_PROMPT = (
    "Describe this image in one sentence for a search index: the main subject, "
    "what is happening, the setting, and any visible text."
)
CAPTION_MAX_CHARS = 300
CAPTION_IMAGE_SIZE = 448
"""Longest side of the image shown to the model (the caption needs no more detail)."""


@runtime_checkable
class Captioner(Protocol):
    """Writes one short caption per image."""

    model_id: str

    def caption(self, images: Sequence[Image.Image]) -> list[str | None]:
        """One caption per image, in order; ``None`` where the model failed or said
        nothing. Raises only when the model cannot run at all."""
        ...


def clean_caption(text: str) -> str:
    """One line of printable characters, at most :data:`CAPTION_MAX_CHARS` of them."""
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(printable.split())[:CAPTION_MAX_CHARS].strip()


def caption_image(image: Image.Image, size: int = CAPTION_IMAGE_SIZE) -> Image.Image:
    """An RGB copy no larger than ``size`` on its longest side."""
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        image = background
    small = image.convert("RGB")
    if small is image:
        small = image.copy()
    small.thumbnail((size, size))
    return small


class VLMCaptioner:
    """Captions with a :class:`~mmsearch.rerank.backends.VisionLanguageModel`: greedy,
    at most ``max_new_tokens`` tokens, ``batch_size`` images per call where the backend
    batches (``supports_batch_generation``), one at a time otherwise. A batch that fails
    is retried image by image, so one bad image costs only its own caption."""

    def __init__(
        self,
        vlm: VisionLanguageModel,
        *,
        max_new_tokens: int = 40,
        batch_size: int = 4,
        prompt: str = CAPTION_PROMPT,
    ) -> None:
        self.vlm = vlm
        self.model_id = vlm.model_id
        self.max_new_tokens = max_new_tokens
        self.batch_size = max(1, batch_size)
        self.prompt = prompt

    def _messages(self, image: Image.Image) -> list[ChatMessage]:
        return [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": caption_image(image)},
                    {"type": "text", "text": self.prompt},
                ],
            }
        ]

    def _decode(self, token_ids: list[int]) -> str | None:
        text = clean_caption(self.vlm.tokenizer.decode(token_ids, skip_special_tokens=True))
        return text or None

    def _one(self, image: Image.Image) -> str | None:
        generated = self.vlm.generate(
            self.vlm.build_inputs(self._messages(image)), max_new_tokens=self.max_new_tokens
        )
        return self._decode(generated.token_ids)

    def _batch(self, images: Sequence[Image.Image]) -> list[str | None]:
        batched = getattr(self.vlm, "supports_batch_generation", False)
        if len(images) == 1 or not batched:
            return [self._one(image) for image in images]
        answers = self.vlm.generate_batch(  # type: ignore[attr-defined]
            [self._messages(image) for image in images], max_new_tokens=self.max_new_tokens
        )
        return [self._decode(ids) for ids in answers]

    def caption(self, images: Sequence[Image.Image]) -> list[str | None]:
        from mmsearch.rerank.backends import model_lock

        out: list[str | None] = []
        with model_lock(self.vlm):
            for start in range(0, len(images), self.batch_size):
                chunk = list(images[start : start + self.batch_size])
                try:
                    out.extend(self._batch(chunk))
                    continue
                except MMSearchError:
                    raise
                except Exception:
                    log.warning("captioning a batch failed; retrying image by image", exc_info=True)
                for image in chunk:
                    try:
                        out.append(self._one(image))
                    except MMSearchError:
                        raise
                    except Exception as exc:
                        log.warning("captioning an image failed: %s", exc)
                        out.append(None)
        return out


def caption_settings(settings: Settings) -> Settings:
    """The settings :func:`~mmsearch.rerank.backends.load_vlm` reads, pointed at the
    caption model (its backend detected anew when it is not the reranker's model)."""
    model = settings.caption_model or settings.rerank_model
    if model == settings.rerank_model:
        return settings
    return settings.model_copy(update={"rerank_model": model, "rerank_backend": "auto"})


def load_captioner(settings: Settings) -> VLMCaptioner:
    """The configured caption model, loaded on first use and shared by the process."""
    from mmsearch.rerank.backends import load_vlm

    return VLMCaptioner(
        load_vlm(caption_settings(settings)),
        max_new_tokens=settings.caption_max_new_tokens,
        batch_size=settings.caption_batch_size,
    )
