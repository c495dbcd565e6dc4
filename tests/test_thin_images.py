"""Very thin images (10000x1, 100000x1: a few hundred bytes, under the pixel limit) cost
memory bounded by the output, not by the aspect ratio, in every place pixels are
prepared: the embedder's preprocessing, the Phi-3 Vision HD transform, rerank
thumbnails, and indexing as a whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmsearch.library import ImageSearch
from mmsearch.models.phi3v.image_processing import Phi3VImageProcessor
from mmsearch.models.visual_bge.preprocess import MAX_RESIZED_AREA, build_preprocess
from mmsearch.rerank import Reranker
from mmsearch.rerank.sheet import thumbnail

SHAPES = [(10_000, 1), (1, 10_000), (100_000, 1), (1, 100_000)]


@pytest.fixture
def resized_areas(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The area of every image Pillow is asked to resize to."""
    areas: list[int] = []
    original = Image.Image.resize

    def spy(self: Image.Image, size: Any, *args: Any, **kwargs: Any) -> Image.Image:
        areas.append(int(size[0]) * int(size[1]))
        if areas[-1] > 2**24:  # never let a regression allocate gigabytes here
            raise AssertionError(f"asked to resize to {size[0]}x{size[1]} pixels")
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    return areas


@pytest.mark.parametrize("shape", SHAPES)
def test_embedder_preprocessing_of_a_strip_resizes_only_to_the_output(
    shape: tuple[int, int], resized_areas: list[int]
) -> None:
    pixels = build_preprocess(224)(Image.new("RGB", shape, (200, 10, 10)))
    assert tuple(pixels.shape) == (3, 224, 224)
    assert max(resized_areas) <= MAX_RESIZED_AREA * 224 * 224


def test_embedder_preprocessing_of_a_strip_stays_small_in_memory(tmp_path: Path) -> None:
    """Peak resident memory of a fresh process preprocessing a 10000x1 PNG (about 2 GB
    when the whole strip was scaled up before cropping)."""
    png = tmp_path / "strip.png"
    Image.new("RGB", (10_000, 1), (0, 128, 255)).save(png)
    probe = textwrap.dedent(f"""
        import resource
        from PIL import Image
        from mmsearch.models.visual_bge.preprocess import build_preprocess
        preprocess = build_preprocess(224)
        preprocess(Image.new("RGB", (64, 64)))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        preprocess(Image.open({str(png)!r}).convert("RGB"))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) // 1024)
    """)
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    grown_mib = int(done.stdout.split()[-1])
    assert grown_mib < 100, f"preprocessing a 10000x1 strip grew the process by {grown_mib} MiB"


@pytest.mark.parametrize("shape", SHAPES)
def test_phi3v_hd_transform_of_a_strip_is_bounded_by_its_grid(
    shape: tuple[int, int], resized_areas: list[int]
) -> None:
    processor = Phi3VImageProcessor(num_crops=4, tile_size=336)
    crops, (height, width), _ = processor.preprocess_one(Image.new("RGB", shape, (9, 9, 9)))
    assert tuple(crops.shape) == (5, 3, 336, 336)
    assert height * width <= 4 * 336 * 336
    assert max(resized_areas) <= 4 * 336 * 336


@pytest.mark.parametrize("shape", SHAPES)
def test_rerank_thumbnail_of_a_strip_keeps_one_pixel_row(shape: tuple[int, int]) -> None:
    small = thumbnail(Image.new("RGB", shape), 256)
    assert sorted(small.size) == [1, 256]


def test_a_strip_is_indexed_like_any_image(engine: ImageSearch, tmp_path: Path) -> None:
    folder = tmp_path / "strips"
    folder.mkdir()
    for w, h in SHAPES:
        Image.new("RGB", (w, h), (w % 251, 3, 4)).save(folder / f"{w}x{h}.png")
    report = engine.index([folder])
    assert report.failed == [] and report.indexed == len(SHAPES)


def test_a_strip_candidate_is_reranked(tiny_vlm: Any, tmp_path: Path) -> None:
    strip, tall = tmp_path / "strip.png", tmp_path / "tall.png"
    Image.new("RGB", (100_000, 1), (1, 2, 3)).save(strip)
    Image.new("RGB", (1, 100_000), (3, 2, 1)).save(tall)
    result = Reranker(tiny_vlm, reason_max_chars=8, cell_size=32).rerank(
        [("strip", strip), ("tall", tall)], text="a line"
    )
    assert sorted(result.ids) == ["strip", "tall"]
    assert "unreadable" not in result.note
