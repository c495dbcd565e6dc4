"""Phi-3 Vision image preprocessing: the dynamic "HD" crop transform.

An image is resized (keeping its aspect ratio, long side horizontal) to the largest
``cols x rows`` grid of square tiles with ``cols * rows <= num_crops``, padded with white
to whole tiles, cut into tiles, and preceded by one global view of the whole padded image
resized to a single tile. Tiles are padded with zero tiles to ``num_crops + 1`` so images
stack. Each image then occupies ``(tiles + 1) * t + 1 + (rows + 1) * g`` prompt positions,
where ``g`` is the merged feature grid side (12 for 336 px tiles and 14 px patches) and
``t = g * g``: one row separator per feature row and one separator between the tiles and
the global view.

Alpha is dropped (the pixels' colour channels are kept as stored), as the original
pipeline does; compositing onto white would change what the model sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class HDLayout:
    """Where an image lands: its padded size and tile grid."""

    width: int
    height: int
    cols: int
    rows: int


def hd_grid_scale(width: int, height: int, num_crops: int) -> int:
    """The number of tile columns along the long side: the largest ``s`` with
    ``s * ceil(s / ratio) <= num_crops``."""
    long_side, short_side = max(width, height), min(width, height)
    ratio = long_side / short_side
    scale = 1
    while scale * math.ceil(scale / ratio) <= num_crops:
        scale += 1
    return scale - 1


def hd_layout(width: int, height: int, num_crops: int, tile: int) -> HDLayout:
    """Padded size and tile grid of an image of ``width x height`` pixels."""
    transposed = width < height
    w, h = (height, width) if transposed else (width, height)
    ratio = w / h
    new_w = int(hd_grid_scale(w, h, num_crops) * tile)
    new_h = max(1, int(new_w / ratio))
    pad_h = int(np.ceil(new_h / tile) * tile)
    if transposed:
        return HDLayout(width=pad_h, height=new_w, cols=pad_h // tile, rows=new_w // tile)
    return HDLayout(width=new_w, height=pad_h, cols=new_w // tile, rows=pad_h // tile)


def _drop_alpha(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def hd_resize_pad(image: Image.Image, num_crops: int, tile: int) -> Image.Image:
    """Resize (bilinear, antialiased) to the HD grid width and pad the short side with
    white to whole tiles, centred; portrait images are handled transposed."""
    image = _drop_alpha(image)
    transposed = image.width < image.height
    if transposed:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    w, h = image.size
    ratio = w / h
    new_w = int(hd_grid_scale(w, h, num_crops) * tile)
    # A strip thinner than the grid is wide (10000x1) keeps one row rather than none;
    # the output, and so the memory, is bounded by the grid whatever the input's shape.
    new_h = max(1, int(new_w / ratio))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    target = int(np.ceil(new_h / tile) * tile)
    top = int((target - new_h) / 2)
    canvas = Image.new("RGB", (new_w, target), (255, 255, 255))
    canvas.paste(image, (0, top))
    if transposed:
        canvas = canvas.transpose(Image.Transpose.TRANSPOSE)
    return canvas


class Phi3VImageProcessor:
    """Turns PIL images into ``pixel_values`` of shape ``(N, num_crops + 1, 3, tile, tile)``,
    ``image_sizes`` (padded ``(height, width)``) and per-image token counts."""

    def __init__(
        self,
        num_crops: int = 16,
        tile_size: int = 336,
        merged_grid: int = 12,
        image_mean: Sequence[float] = OPENAI_CLIP_MEAN,
        image_std: Sequence[float] = OPENAI_CLIP_STD,
    ) -> None:
        if num_crops < 1:
            raise ValueError(f"num_crops must be >= 1, got {num_crops}")
        self.num_crops = int(num_crops)
        self.tile_size = int(tile_size)
        self.merged_grid = int(merged_grid)
        self.image_mean = tuple(float(x) for x in image_mean)
        self.image_std = tuple(float(x) for x in image_std)

    def num_image_tokens(self, width: int, height: int) -> int:
        """Prompt positions an image of this size occupies."""
        lay = hd_layout(width, height, self.num_crops, self.tile_size)
        g = self.merged_grid
        return (lay.cols * lay.rows + 1) * g * g + 1 + (lay.rows + 1) * g

    def _to_tensor(self, image: Image.Image) -> torch.Tensor:
        arr = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
        x = arr.permute(2, 0, 1).to(torch.float32).div(255)
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32).view(-1, 1, 1)
        return x.sub_(mean).div_(std)

    def preprocess_one(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int], int]:
        t = self.tile_size
        padded = self._to_tensor(hd_resize_pad(image, self.num_crops, t))
        _, h, w = padded.shape
        rows, cols = h // t, w // t
        glob = F.interpolate(padded[None], size=(t, t), mode="bicubic")
        tiles = padded.reshape(3, rows, t, cols, t).permute(1, 3, 0, 2, 4).reshape(-1, 3, t, t)
        crops = torch.zeros(self.num_crops + 1, 3, t, t, dtype=torch.float32)
        crops[0] = glob[0]
        crops[1 : 1 + rows * cols] = tiles
        g = self.merged_grid
        n_tokens = (rows * cols + 1) * g * g + 1 + (rows + 1) * g
        return crops, (h, w), n_tokens

    def __call__(self, images: Sequence[Image.Image]) -> dict[str, object]:
        if isinstance(images, Image.Image):
            images = [images]
        out = [self.preprocess_one(im) for im in images]
        if not out:
            return {
                "pixel_values": torch.zeros(
                    0, self.num_crops + 1, 3, self.tile_size, self.tile_size
                ),
                "image_sizes": torch.zeros(0, 2, dtype=torch.long),
                "num_img_tokens": [],
            }
        return {
            "pixel_values": torch.stack([o[0] for o in out]),
            "image_sizes": torch.tensor([o[1] for o in out], dtype=torch.long),
            "num_img_tokens": [o[2] for o in out],
        }
