"""Visualized BGE: an EVA02-CLIP vision tower whose patch tokens are fed, as extra
tokens, into a BGE text encoder; the [CLS] state is the embedding."""

from __future__ import annotations

import timm
import torch
from torch import nn
from transformers import BertModel, PretrainedConfig, XLMRobertaModel

from mmsearch.errors import ModelLoadError
from mmsearch.models.visual_bge.config import EVA02_ROPE_REF_GRID, VisionConfig

TEXT_MODELS: dict[str, type[nn.Module]] = {"bert": BertModel, "xlm-roberta": XLMRobertaModel}


def create_vision_tower(timm_model: str, vision: VisionConfig) -> nn.Module:
    """The timm EVA02 tower with every size taken from ``vision``. Its final norm is
    replaced by identity: Visualized BGE uses the last block's tokens un-normed."""
    tower = timm.create_model(
        timm_model,
        pretrained=False,
        num_classes=0,
        img_size=vision.img_size,
        patch_size=vision.patch_size,
        embed_dim=vision.embed_dim,
        depth=vision.depth,
        num_heads=vision.num_heads,
        # timm sizes the MLP as int(dim * ratio); the half keeps float error from rounding down
        mlp_ratio=(vision.mlp_hidden + 0.5) / vision.embed_dim,
        ref_feat_shape=(EVA02_ROPE_REF_GRID, EVA02_ROPE_REF_GRID),
    )
    tower.norm = nn.Identity()
    return tower


class VisualBGEModule(nn.Module):
    """The network alone (no tokenizer, no preprocessing); keys follow
    :func:`~mmsearch.models.visual_bge.checkpoint.checkpoint_filter_fn`."""

    def __init__(self, vision: VisionConfig, text_config: PretrainedConfig, timm_model: str):
        super().__init__()
        model_type = getattr(text_config, "model_type", None)
        if model_type not in TEXT_MODELS:
            raise ModelLoadError(
                f"text model type {model_type!r} is not supported (expected one of "
                f"{', '.join(TEXT_MODELS)})"
            )
        text_config._attn_implementation = "sdpa"
        self.vision_config = vision
        self.visual = create_vision_tower(timm_model, vision)
        self.text = TEXT_MODELS[model_type](text_config, add_pooling_layer=True)
        self.visual_proj = nn.Linear(vision.embed_dim, text_config.hidden_size)
        self.hidden_size = int(text_config.hidden_size)
        self.max_positions = int(text_config.max_position_embeddings)
        self.text_position_offset = (
            int(text_config.pad_token_id) + 1 if model_type == "xlm-roberta" else 0
        )
        """XLM-R numbers text positions from padding_idx + 1; BERT from 0."""

    @property
    def num_image_tokens(self) -> int:
        return self.vision_config.num_patches

    def max_text_tokens(self, with_image: bool) -> int:
        """Longest token sequence whose positions still fit the position table."""
        if with_image:
            return self.max_positions - self.num_image_tokens
        return self.max_positions - self.text_position_offset

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch tokens of the last vision block, without the vision [CLS] token."""
        return self.visual.forward_features(pixels)[:, 1:]

    def _encode(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        dtype = embeddings.dtype
        additive = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        hidden = self.text.encoder(embeddings, attention_mask=additive).last_hidden_state
        return hidden[:, 0]

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[CLS] state of the text encoder over the text alone (unnormalised)."""
        embeddings = self.text.embeddings(
            input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids)
        )
        return self._encode(embeddings, attention_mask)

    def encode_fused(
        self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """[CLS] state over ``[CLS] image tokens text-tokens-after-CLS`` (unnormalised).

        Image tokens are projected, given positions 1..n and the text embeddings' own
        LayerNorm (no token-type embedding); the text that follows continues the positions
        after them, its [CLS] keeps position 0. Image tokens are always attended to.
        """
        emb = self.text.embeddings
        image = self.visual_proj(self.image_tokens(pixels))
        batch, n_image = image.shape[:2]
        device = image.device
        image_pos = torch.arange(1, 1 + n_image, device=device)
        image = emb.LayerNorm(image + emb.position_embeddings(image_pos))

        n_text = input_ids.shape[1]
        text_pos = torch.cat(
            [
                torch.zeros(1, dtype=torch.long, device=device),
                torch.arange(n_image + 1, n_image + n_text, device=device),
            ]
        )
        text = emb(
            input_ids=input_ids,
            token_type_ids=torch.zeros_like(input_ids),
            position_ids=text_pos.unsqueeze(0).expand(batch, -1),
        )
        sequence = torch.cat([text[:, :1], image, text[:, 1:]], dim=1)
        mask = torch.cat(
            [
                torch.ones(batch, 1 + n_image, dtype=attention_mask.dtype, device=device),
                attention_mask[:, 1:],
            ],
            dim=1,
        )
        return self._encode(sequence, mask)
