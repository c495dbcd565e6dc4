"""The exact pixel preprocessing Visualized BGE was trained and evaluated with."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision import transforms

from mmsearch.errors import ImageDecodeError
from mmsearch.models.visual_bge.config import CLIP_MEAN, CLIP_STD

_RESIZE_AS_IS = frozenset({"RGB", "RGBA", "L", "LA", "P", "PA", "1", "CMYK"})
"""Modes resized before the RGB conversion, as the reference pipeline does. For RGBA this
matters: Pillow resizes with premultiplied alpha, so fully transparent pixels come out
black rather than whatever colour they happen to store."""


MAX_RESIZED_AREA = 16
"""The resized image may be at most this many times the output's area (an aspect
ratio of 16:1) before only the cropped region is resampled."""


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """``Resize(size, BICUBIC)`` then ``CenterCrop(size)``, as torchvision computes them.

    Resizing the whole image first costs memory in proportion to its aspect ratio: a
    10000x1 strip would become 2240000x224 pixels (gigabytes) only to be cropped to
    224x224. Past :data:`MAX_RESIZED_AREA` output areas, only the source region the crop
    keeps is resampled (Pillow's ``box``, same scale: the same pixels within rounding),
    so memory stays bounded by the output size whatever the shape of the input. Below
    it the reference pipeline runs as it is, pixel for pixel.
    """
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    crop = (left, top, left + size, top + size)
    if (new_w, new_h) == (w, h):
        return image.crop(crop)
    if new_w * new_h <= MAX_RESIZED_AREA * size * size:
        return image.resize((new_w, new_h), Image.Resampling.BICUBIC).crop(crop)
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box)


def build_preprocess(image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """Shortest side to ``image_size`` (bicubic), centre crop, RGB, CLIP mean/std.

    The returned function keeps no state between calls, so worker threads may share it.
    """
    pipeline = transforms.Compose(
        [
            transforms.Lambda(lambda im: resize_center_crop(im, image_size)),
            transforms.Lambda(lambda im: im.convert("RGB")),
            transforms.ToTensor(),
            transforms.Normalize(mean=CLIP_MEAN, std=CLIP_STD),
        ]
    )

    def preprocess(image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}")
        try:
            if image.mode not in _RESIZE_AS_IS:
                image = image.convert("RGB")
            return pipeline(image)
        except (OSError, ValueError) as exc:
            raise ImageDecodeError(
                f"cannot preprocess a {image.mode} image of size {image.size}: {exc}"
            ) from exc

    return preprocess
