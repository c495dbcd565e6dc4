"""The numbered contact sheet the reranker shows the model."""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops

from mmsearch.rerank.sheet import (
    LABEL_BOX,
    PLACEHOLDER,
    build_contact_sheet,
    grid_shape,
)

COLOURS = [((i * 53) % 256, (i * 97 + 40) % 256, (255 - i * 11) % 256) for i in range(20)]


def _solid(i: int, size: tuple[int, int] = (60, 40)) -> Image.Image:
    return Image.new("RGB", size, COLOURS[i])


@pytest.mark.parametrize(
    ("n", "shape"),
    [(1, (1, 1)), (2, (2, 1)), (3, (2, 2)), (4, (2, 2)), (5, (3, 2)), (9, (3, 3)),
     (10, (4, 3)), (16, (4, 4)), (17, (5, 4)), (20, (5, 4))],
)  # fmt: skip
def test_grid_is_as_square_as_possible(n: int, shape: tuple[int, int]) -> None:
    assert grid_shape(n) == shape


def test_sheet_size_follows_the_grid() -> None:
    sheet = build_contact_sheet([_solid(i) for i in range(7)], cell_size=50, gap=4)
    assert (sheet.columns, sheet.rows) == (3, 3)
    assert sheet.image.size == (3 * 50 + 4 * 4, 3 * 50 + 4 * 4)


def test_candidates_fill_the_grid_row_by_row() -> None:
    sheet = build_contact_sheet([_solid(i) for i in range(10)], cell_size=64, gap=8)
    for i, (left, top, right, bottom) in enumerate(sheet.cells):
        row, col = divmod(i, 4)
        assert (left, top) == (8 + col * 72, 8 + row * 72)
        centre = ((left + right) // 2, (top + bottom) // 2)
        assert sheet.image.getpixel(centre) == COLOURS[i]


def test_each_cell_carries_a_black_label_box_with_a_light_number() -> None:
    sheet = build_contact_sheet([_solid(i) for i in range(12)], cell_size=100)
    for cell, box in zip(sheet.cells, sheet.label_boxes, strict=True):
        assert box[:2] == cell[:2]
        crop = sheet.image.crop(box)
        colours = {c for _, c in crop.getcolors(maxcolors=100_000)}
        assert LABEL_BOX in colours
        assert any(min(c) > 200 for c in colours)  # white glyph pixels


def test_labels_are_big_enough_to_read() -> None:
    sheet = build_contact_sheet([_solid(i) for i in range(12)], cell_size=256)
    left, top, right, bottom = sheet.label_boxes[0]
    assert bottom - top >= 256 // 6


def test_two_digit_labels_get_wider_boxes_and_distinct_glyphs() -> None:
    sheet = build_contact_sheet([_solid(0)] * 12, cell_size=100)
    widths = [b[2] - b[0] for b in sheet.label_boxes]
    assert max(widths[:9]) < min(widths[9:])
    glyphs = [sheet.image.crop(b).tobytes() for b in sheet.label_boxes]
    assert len(set(glyphs)) == 12


def test_unreadable_image_becomes_a_grey_placeholder() -> None:
    sheet = build_contact_sheet([_solid(0), None], cell_size=40)
    left, top, right, bottom = sheet.cells[1]
    assert sheet.image.getpixel((right - 2, bottom - 2)) == PLACEHOLDER


def test_thumbnails_keep_their_aspect_ratio_inside_the_cell() -> None:
    sheet = build_contact_sheet([Image.new("RGB", (200, 50), (255, 0, 0))], cell_size=100, gap=0)
    assert sheet.image.getpixel((50, 50)) == (255, 0, 0)
    assert sheet.image.getpixel((50, 90)) == (255, 255, 255)


def test_same_images_draw_the_same_sheet() -> None:
    first = build_contact_sheet([_solid(i) for i in range(9)], cell_size=80).image
    second = build_contact_sheet([_solid(i) for i in range(9)], cell_size=80).image
    assert ImageChops.difference(first, second).getbbox() is None
