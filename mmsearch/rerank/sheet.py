"""Contact sheet: the candidates as one image, a grid of thumbnails with big numbers.

One image works with every vision-language model, whether or not it takes several
images per prompt, and the numbers are the only way the model refers to candidates.
Drawing is deterministic: the same images give the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont, ImageOps

BACKGROUND = (255, 255, 255)
GAP_COLOUR = (200, 200, 200)
LABEL_BOX = (0, 0, 0)
LABEL_TEXT = (255, 255, 255)
PLACEHOLDER = (128, 128, 128)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ContactSheet:
    image: Image.Image
    columns: int
    rows: int
    cells: list[Box]
    """Thumbnail area of candidate ``i + 1`` (left, top, right, bottom)."""
    label_boxes: list[Box]
    """The black box holding the number of candidate ``i + 1``."""


def grid_shape(n: int) -> tuple[int, int]:
    """(columns, rows): as square as possible, never a row more than needed."""
    if n < 1:
        raise ValueError("a contact sheet needs at least one image")
    columns = math.ceil(math.sqrt(n))
    return columns, math.ceil(n / columns)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def thumbnail(image: Image.Image, size: int) -> Image.Image:
    """The image scaled to fit a ``size`` square, as ``ImageOps.contain`` does, except
    that a side never rounds to zero pixels (a 100000x1 strip becomes size x 1, where
    ``contain`` fails)."""
    image = ImageOps.exif_transpose(image).convert("RGB")
    width, height = size, size
    if image.width != image.height:
        if image.width > image.height:
            height = max(1, round(image.height / image.width * size))
        else:
            width = max(1, round(image.width / image.height * size))
    return image.resize((width, height), Image.Resampling.BICUBIC)


def build_contact_sheet(
    images: Sequence[Image.Image | None],
    *,
    cell_size: int = 256,
    gap: int = 8,
) -> ContactSheet:
    """Lay out ``images`` (``None``: unreadable, drawn as a grey placeholder) row by row,
    each labelled with its 1-based position."""
    n = len(images)
    columns, rows = grid_shape(n)
    width = columns * cell_size + (columns + 1) * gap
    height = rows * cell_size + (rows + 1) * gap
    sheet = Image.new("RGB", (width, height), GAP_COLOUR)
    draw = ImageDraw.Draw(sheet)
    font = _font(max(14, cell_size // 5))
    pad = max(3, cell_size // 40)
    cells: list[Box] = []
    label_boxes: list[Box] = []
    for i, image in enumerate(images):
        row, col = divmod(i, columns)
        left = gap + col * (cell_size + gap)
        top = gap + row * (cell_size + gap)
        cell: Box = (left, top, left + cell_size, top + cell_size)
        draw.rectangle((cell[0], cell[1], cell[2] - 1, cell[3] - 1), fill=BACKGROUND)
        if image is None:
            draw.rectangle((cell[0], cell[1], cell[2] - 1, cell[3] - 1), fill=PLACEHOLDER)
        else:
            thumb = thumbnail(image, cell_size)
            sheet.paste(
                thumb,
                (left + (cell_size - thumb.width) // 2, top + (cell_size - thumb.height) // 2),
            )
        text = str(i + 1)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        box: Box = (left, top, left + (x1 - x0) + 2 * pad, top + (y1 - y0) + 2 * pad)
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=LABEL_BOX)
        draw.text((left + pad - x0, top + pad - y0), text, font=font, fill=LABEL_TEXT)
        cells.append(cell)
        label_boxes.append(box)
    return ContactSheet(sheet, columns, rows, cells, label_boxes)
