"""The interface every image-text embedder offers to the indexer and the search."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image


@runtime_checkable
class ImageTextEmbedder(Protocol):
    """Embeds text, images, or image+text pairs into one space.

    ``model_id`` names the weights (not only the architecture): a collection records it
    and refuses vectors from any other model. ``dim`` is the embedding size.
    """

    model_id: str
    dim: int

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Turn a decoded RGB(A) image into the model's pixel tensor (C, H, W).

        Safe to call from worker threads, so decoding overlaps with the model.
        """
        ...

    def encode(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[Image.Image | torch.Tensor] | None = None,
        *,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Embed a batch; returns float32 ``(n, dim)``, L2-normalised.

        texts only: text embeddings. images only: image embeddings. Both, of equal
        length: the fused embedding of each (image, text) pair. Images may be PIL
        images or tensors already returned by :meth:`preprocess`.
        """
        ...
