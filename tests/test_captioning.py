"""The caption model: vision-language backends behind :class:`VLMCaptioner` (tiny
random-weight Qwen2-VL and Phi-3 Vision), and captions written through the library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmsearch.captioning import (
    CAPTION_MAX_CHARS,
    VLMCaptioner,
    caption_settings,
    clean_caption,
)
from mmsearch.config import Settings
from mmsearch.errors import CaptionError
from mmsearch.library import ImageSearch


@pytest.fixture(scope="module")
def images(photos: dict[str, Image.Image]) -> list[Image.Image]:
    return [photos[name] for name in ("astronaut", "coffee", "chelsea")]


def test_captions_are_one_printable_line_each(tiny_vlm: Any, images: list[Image.Image]) -> None:
    captions = VLMCaptioner(tiny_vlm, max_new_tokens=6).caption(images)
    assert len(captions) == 3
    for caption in captions:
        assert caption and caption.isprintable() and len(caption) <= CAPTION_MAX_CHARS


def test_the_token_budget_bounds_each_caption(tiny_vlm: Any, images: list[Image.Image]) -> None:
    short = VLMCaptioner(tiny_vlm, max_new_tokens=2).caption(images[:1])[0]
    longer = VLMCaptioner(tiny_vlm, max_new_tokens=12).caption(images[:1])[0]
    assert short is not None and longer is not None
    assert len(short) < len(longer) and longer.startswith(short.split()[0])


def test_batched_captions_equal_one_at_a_time(tiny_vlm: Any, images: list[Image.Image]) -> None:
    batched = VLMCaptioner(tiny_vlm, max_new_tokens=6, batch_size=3).caption(images)
    single = VLMCaptioner(tiny_vlm, max_new_tokens=6, batch_size=1).caption(images)
    assert batched == single


def test_phi3_vision_captions_one_image_at_a_time(
    tiny_phi3v: Any, images: list[Image.Image], single_thread_torch: None
) -> None:
    from mmsearch.rerank.backends import Phi3VisionVLM

    model, processor = tiny_phi3v
    vlm = Phi3VisionVLM(model, processor, "tiny-phi3v")
    assert not vlm.supports_batch_generation
    captions = VLMCaptioner(vlm, max_new_tokens=4, batch_size=2).caption(images[:2])
    assert len(captions) == 2 and all(c is None or c.isprintable() for c in captions)


def test_control_characters_and_line_breaks_are_cleaned() -> None:
    assert clean_caption(" a\x17cat\n on  a mat \t") == "a cat on a mat"
    assert len(clean_caption("word " * 200)) <= CAPTION_MAX_CHARS


def test_the_caption_model_defaults_to_the_reranker() -> None:
    settings = Settings(rerank_model="some/vlm", rerank_backend="phi3v")
    assert caption_settings(settings) is settings
    other = caption_settings(settings.model_copy(update={"caption_model": "other/vlm"}))
    assert other.rerank_model == "other/vlm" and other.rerank_backend == "auto"


class MiscountingCaptioner:
    model_id = "test/miscounting"

    def caption(self, images: list[Image.Image]) -> list[str | None]:
        return ["one caption"]


def test_a_captioner_that_loses_count_is_an_error(
    settings: Settings, embedder: Any, photo_dir: Path
) -> None:
    with ImageSearch(
        settings,
        embedder_factory=lambda s: embedder,
        captioner_factory=lambda s: MiscountingCaptioner(),
    ) as lib:
        with pytest.raises(CaptionError, match="captions for"):
            lib.index([photo_dir], captions=True)


def test_the_library_captions_with_the_configured_vision_language_model(
    tmp_path: Path, tiny_vlm_dir: Path, embedder: Any, photo_dir: Path, single_thread_torch: None
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        rerank_model=str(tiny_vlm_dir),
        rerank_device="cpu",
        caption_max_new_tokens=8,
        caption_batch_size=2,
    )
    with ImageSearch(settings, embedder_factory=lambda s: embedder) as lib:
        report = lib.index([photo_dir], captions=True)
        assert report.captioned == 5 and not report.caption_failed
        records = list(lib.store.iter_records("images"))
        assert all(r.caption for r in records)
        by_id = {r.id: r.caption for r in lib.get([r.id for r in records])}
        hits = lib.search(text=records[0].caption or "", top_k=5)
        assert {h.id: h.caption for h in hits} == by_id
        assert all(h.score_kind == "rrf" and h.cosine is not None for h in hits)
