"""Phi-3 Vision on transformers' own ``Phi3ForCausalLM`` and ``CLIPVisionModel``.

Only the image embedding is ours: CLIP patch features (a chosen hidden layer, CLS
dropped) are merged 2x2 into 4x wider vectors, laid out tile by tile into one feature
map per image with a learned ``sub_GN`` vector closing every row, followed by the learned
``glb_GN`` separator and the global view laid out the same way, then projected by a
two-layer MLP into the language model's embedding space. Those vectors replace the
negative-id slots of the prompt.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import CLIPVisionModel, Phi3ForCausalLM

from mmsearch.models.phi3v.config import Phi3VConfig


class Phi3VImageEmbedding(nn.Module):
    def __init__(self, cfg: Phi3VConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.vision.hidden_size
        hidden = cfg.text.hidden_size
        self.clip = CLIPVisionModel(cfg.vision)
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, dim * 4))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, dim * 4))
        self.projection = nn.Sequential(
            nn.Linear(dim * 4, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        n = cfg.vision.num_hidden_layers
        fl = cfg.feature_layer
        self.layers_to_run = fl if fl >= 0 else n + 1 + fl

    def patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP hidden state ``feature_layer`` of each tile, without CLS: ``(T, grid², C)``.
        Layers after the chosen one are skipped (their output is not used)."""
        clip = self.clip
        h = clip.embeddings(pixel_values.to(clip.embeddings.patch_embedding.weight.dtype))
        h = clip.pre_layrnorm(h)
        for layer in clip.encoder.layers[: self.layers_to_run]:
            h = layer(h, None)
        return h[:, 1:]

    def _merge_2x2(self, feats: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """``(rows*cols, grid², C)`` tiles -> one ``(rows*g, cols*g, 4C)`` map, g = grid/2."""
        n, length, c = feats.shape
        grid = int(round(length**0.5))
        g = grid // 2
        x = feats.reshape(n, g, 2, g, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(n, g, g, 4 * c)
        x = x.reshape(rows, cols, g, g, 4 * c).permute(0, 2, 1, 3, 4)
        return x.reshape(rows * g, cols * g, 4 * c)

    def _with_row_separators(self, fmap: torch.Tensor) -> torch.Tensor:
        h, _, c = fmap.shape
        sep = self.sub_GN.reshape(1, 1, c).expand(h, 1, c).to(fmap.dtype)
        return torch.cat([fmap, sep], dim=1).reshape(-1, c)

    def image_features(
        self, pixel_values: torch.Tensor, image_sizes: torch.Tensor
    ) -> list[torch.Tensor]:
        """Projected features per image, each ``(num_image_tokens, hidden)``. Zero padding
        tiles are not run through CLIP."""
        t = self.cfg.tile_size
        sizes = [(int(h), int(w)) for h, w in image_sizes.tolist()]
        counts = [1 + (h // t) * (w // t) for h, w in sizes]
        crops = torch.cat([pixel_values[i, :k] for i, k in enumerate(counts)])
        feats = self.patch_features(crops)
        proj_dtype = self.projection[0].weight.dtype
        out: list[torch.Tensor] = []
        start = 0
        for (h, w), k in zip(sizes, counts, strict=True):
            f = feats[start : start + k]
            start += k
            rows, cols = h // t, w // t
            glob = self._with_row_separators(self._merge_2x2(f[:1], 1, 1))
            sub = self._with_row_separators(self._merge_2x2(f[1:], rows, cols))
            seq = torch.cat([sub, self.glb_GN.reshape(1, -1).to(sub.dtype), glob])
            out.append(self.projection(seq.to(proj_dtype)))
        return out


class Phi3VForCausalLM(nn.Module):
    """Phi-3 Vision: ``language_model`` (transformers ``Phi3ForCausalLM``) fed with token
    embeddings in which image slots (negative ids) carry projected image features."""

    def __init__(self, cfg: Phi3VConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.language_model = Phi3ForCausalLM(cfg.text)
        self.vision = Phi3VImageEmbedding(cfg)

    @property
    def device(self) -> torch.device:
        return self.language_model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.dtype

    @property
    def generation_config(self) -> Any:
        return self.language_model.generation_config

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Input embeddings with image ``k``'s features in the slots holding ``-k``."""
        emb = self.language_model.get_input_embeddings()
        embeds = emb(input_ids.clamp(min=0))
        image_slots = input_ids < 0
        if not bool(image_slots.any()):
            return embeds
        if pixel_values is None or image_sizes is None:
            raise ValueError("input_ids hold image slots but no pixel_values/image_sizes given")
        feats = self.vision.image_features(pixel_values.to(self.device), image_sizes.to("cpu"))
        embeds = embeds.clone()
        for k, f in enumerate(feats, start=1):
            where = input_ids == -k
            n = int(where.sum())
            if n != f.shape[0]:
                raise ValueError(f"image {k} has {f.shape[0]} features but {n} prompt slots")
            embeds[where] = f.to(embeds.dtype)
        if bool((input_ids < -len(feats)).any()):
            raise ValueError("input_ids refer to more images than pixel_values holds")
        return embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """One forward pass (logits, optionally ``past_key_values``) over the prompt."""
        embeds = self.embed(input_ids.to(self.device), pixel_values, image_sizes)
        return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """transformers ``generate`` on the prompt embeddings; any ``GenerationMixin``
        argument (``logits_processor``, ``max_new_tokens``, ``eos_token_id`` ...) applies.
        Returns ``prompt ids + new ids``, image slots shown as id 0 (as upstream), so new
        tokens start at ``input_ids.shape[1]``."""
        input_ids = input_ids.to(self.device)
        embeds = self.embed(input_ids, pixel_values, image_sizes)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.language_model.generate(
            input_ids=input_ids.clamp(min=0),
            inputs_embeds=embeds,
            attention_mask=attention_mask.to(self.device),
            **generate_kwargs,
        )
