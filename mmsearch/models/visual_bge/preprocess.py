"""The exact pixel preprocessing Visualized BGE was trained and evaluated with."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from mmsearch.errors import ImageDecodeError
from mmsearch.models.visual_bge.config import CLIP_MEAN, CLIP_STD

_RESIZE_AS_IS = frozenset({"RGB", "RGBA", "L", "LA", "P", "PA", "1", "CMYK"})
"""Modes resized before the RGB conversion, as the reference pipeline does. For RGBA this
matters: Pillow resizes with premultiplied alpha, so fully transparent pixels come out
black rather than whatever colour they happen to store."""


def build_preprocess(image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """Shortest side to ``image_size`` (bicubic), centre crop, RGB, CLIP mean/std.

    The returned function keeps no state between calls, so worker threads may share it.
    """
    pipeline = transforms.Compose(
        [
            transforms.Resize(image_size, interpolation=InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size),
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
