"""Phi-3 Vision HD image preprocessing on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from mmsearch.models.phi3v import Phi3VImageProcessor


def _photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)())


@pytest.mark.parametrize(
    ("image", "padded_hw", "tiles", "tokens"),
    [
        # 512x512: a 4x4 grid of 336 px tiles; (16+1)*144 + 1 + (4+1)*12
        (lambda: _photo("astronaut"), (1344, 1344), 16, 2509),
        # 600x400 landscape: 4 columns, 896 px high padded to 3 rows
        (lambda: _photo("coffee"), (1008, 1344), 12, 1921),
        # the same photo in portrait: 3 columns x 4 rows
        (lambda: _photo("coffee").transpose(Image.Transpose.ROTATE_90), (1344, 1008), 12, 1933),
        # grayscale camera squeezed to 8:1: one row of 8 tiles, (8+1)*144 + 1 + 2*12
        (lambda: _photo("camera").resize((800, 100)), (336, 2688), 8, 1321),
    ],
)
def test_hd_transform_crop_grid_and_token_count(image, padded_hw, tiles, tokens) -> None:
    proc = Phi3VImageProcessor(num_crops=16)
    out = proc([image()])
    assert out["pixel_values"].shape == (1, 17, 3, 336, 336)
    assert out["image_sizes"].tolist() == [list(padded_hw)]
    assert out["num_img_tokens"] == [tokens]
    assert proc.num_image_tokens(*image().size) == tokens
    used = out["pixel_values"][0].flatten(1).abs().sum(1) > 0
    assert used.tolist() == [True] * (1 + tiles) + [False] * (16 - tiles)


def test_rgba_alpha_is_dropped_not_composited() -> None:
    rgb = data.chelsea()
    alpha = np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None, :].repeat(rgb.shape[0], 0)
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    proc = Phi3VImageProcessor(num_crops=4)
    dropped = proc([Image.fromarray(rgb)])["pixel_values"]
    assert torch.equal(proc([rgba])["pixel_values"], dropped)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    composited = Image.alpha_composite(white, rgba).convert("RGB")
    assert not torch.allclose(proc([composited])["pixel_values"], dropped)


def test_short_side_is_padded_with_white_centred() -> None:
    img = Image.new("RGB", (672, 300), (0, 0, 0))
    pv = Phi3VImageProcessor(num_crops=2)([img])["pixel_values"][0]
    top_tile = pv[1]
    white = (1 - torch.tensor(Phi3VImageProcessor().image_mean)) / torch.tensor(
        Phi3VImageProcessor().image_std
    )
    assert torch.allclose(top_tile[:, 0, 0], white, atol=1e-5)
    assert torch.allclose(
        top_tile[:, 168, 0],
        -torch.tensor(Phi3VImageProcessor().image_mean)
        / torch.tensor(Phi3VImageProcessor().image_std),
        atol=1e-5,
    )
