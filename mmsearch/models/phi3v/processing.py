"""Phi-3 Vision prompts: chat template, ``<|image_N|>`` placeholders and tokenisation.

Each ``<|image_N|>`` in the prompt becomes ``N_tokens(image N)`` slots holding ``-N``; the
model writes image N's features into exactly those slots. The text between placeholders
is tokenised chunk by chunk, each chunk starting with ``<s>`` as the original processor
does (so ``<s>`` reappears right after every image).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import PreTrainedTokenizerFast

from mmsearch.errors import InvalidQueryError, ModelLoadError
from mmsearch.models.phi3v.image_processing import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    Phi3VImageProcessor,
)

IMAGE_TAG = re.compile(r"<\|image_(\d+)\|>")
STOP_TOKENS = ("<|end|>", "<|endoftext|>")

Message = Mapping[str, Any]


def render_chat(
    messages: Sequence[Message], add_generation_prompt: bool = True
) -> tuple[str, list[Image.Image]]:
    """The Phi-3 Vision chat format, ``<|role|>\\ncontent<|end|>\\n`` per message then
    ``<|assistant|>\\n``. ``content`` is a string (which may already hold
    ``<|image_N|>`` tags) or a list of parts ``{"type": "text", "text": ...}`` /
    ``{"type": "image", "image": PIL.Image}``; image parts are numbered in order of
    appearance and each becomes ``<|image_N|>\\n``. Returns the prompt and the images."""
    images: list[Image.Image] = []
    out: list[str] = []
    for msg in messages:
        role = msg.get("role")
        if role not in ("system", "user", "assistant"):
            raise InvalidQueryError(f"unknown chat role {role!r}")
        content = msg.get("content", "")
        if isinstance(content, str):
            text = content
        else:
            pieces = []
            for part in content:
                kind = part.get("type")
                if kind == "text":
                    pieces.append(str(part.get("text", "")))
                elif kind == "image":
                    img = part.get("image")
                    if not isinstance(img, Image.Image):
                        raise InvalidQueryError("an image part needs a PIL image under 'image'")
                    images.append(img)
                    pieces.append(f"<|image_{len(images)}|>\n")
                else:
                    raise InvalidQueryError(f"unknown content part type {kind!r}")
            text = "".join(pieces)
        out.append(f"<|{role}|>\n{text}<|end|>\n")
    if add_generation_prompt and (not messages or messages[-1].get("role") != "assistant"):
        out.append("<|assistant|>\n")
    return "".join(out), images


class Phi3VProcessor:
    """Tokenizer + image processor; builds model inputs from a prompt or chat messages."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerFast,
        image_processor: Phi3VImageProcessor,
        add_bos: bool = True,
        add_eos: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.add_bos = add_bos
        self.add_eos = add_eos

    @classmethod
    def from_dir(
        cls, ckpt_dir: Path, tile_size: int, merged_grid: int, num_crops: int | None = None
    ) -> Phi3VProcessor:
        """Read ``tokenizer.json``, ``tokenizer_config.json`` and
        ``preprocessor_config.json``; tile geometry comes from the vision tower."""
        tok_file = ckpt_dir / "tokenizer.json"
        if not tok_file.is_file():
            raise ModelLoadError(f"{ckpt_dir} has no tokenizer.json")
        tok_cfg = _read_json(ckpt_dir / "tokenizer_config.json")
        pre_cfg = _read_json(ckpt_dir / "preprocessor_config.json")
        specials = {
            k: _token_str(tok_cfg.get(k))
            for k in ("bos_token", "eos_token", "unk_token", "pad_token")
        }
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(tok_file),
            **{k: v for k, v in specials.items() if v is not None},
        )
        chat_template = tok_cfg.get("chat_template")
        if isinstance(chat_template, str):
            tokenizer.chat_template = chat_template
        image_processor = Phi3VImageProcessor(
            num_crops=int(num_crops if num_crops is not None else pre_cfg.get("num_crops", 16)),
            tile_size=tile_size,
            merged_grid=merged_grid,
            image_mean=pre_cfg.get("image_mean", OPENAI_CLIP_MEAN),
            image_std=pre_cfg.get("image_std", OPENAI_CLIP_STD),
        )
        return cls(
            tokenizer,
            image_processor,
            add_bos=bool(tok_cfg.get("add_bos_token", True)),
            add_eos=bool(tok_cfg.get("add_eos_token", False)),
        )

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids that end an assistant turn (``<|end|>``, ``<|endoftext|>``, ``</s>``)."""
        ids = []
        for tok in (*STOP_TOKENS, self.tokenizer.eos_token):
            if tok is None:
                continue
            i = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(i, int) and i != self.tokenizer.unk_token_id and i not in ids:
                ids.append(i)
        return ids

    def _encode_chunk(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.add_bos and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id, *ids]
        if self.add_eos and self.tokenizer.eos_token_id is not None:
            ids = [*ids, self.tokenizer.eos_token_id]
        return ids

    def __call__(
        self,
        text: str | None = None,
        images: Sequence[Image.Image] | None = None,
        *,
        messages: Sequence[Message] | None = None,
        add_generation_prompt: bool = True,
    ) -> dict[str, Any]:
        """Model inputs (batch of one): ``input_ids`` (image slots negative),
        ``attention_mask``, and with images ``pixel_values`` and ``image_sizes``.
        Give either ``text`` (with ``<|image_N|>`` tags) and ``images``, or ``messages``."""
        if messages is not None:
            if text is not None or images:
                raise InvalidQueryError("give either messages or text/images, not both")
            text, images = render_chat(messages, add_generation_prompt)
        if text is None:
            raise InvalidQueryError("no prompt given")
        images = list(images or [])
        tags = [int(m) for m in IMAGE_TAG.findall(text)]
        if sorted(set(tags)) != list(range(1, len(images) + 1)):
            raise InvalidQueryError(
                f"prompt has image tags {sorted(set(tags))} for {len(images)} image(s); "
                "tags must be <|image_1|> .. <|image_N|>, one per image"
            )
        chunks = IMAGE_TAG.split(text)[::2]
        if not images:
            ids = self._encode_chunk(text)
            input_ids = torch.tensor([ids], dtype=torch.long)
            return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        vis = self.image_processor(images)
        counts = vis["num_img_tokens"]
        ids: list[int] = []
        for i, chunk in enumerate(chunks):
            ids.extend(self._encode_chunk(chunk))
            if i < len(tags):
                ids.extend([-tags[i]] * counts[tags[i] - 1])
        input_ids = torch.tensor([ids], dtype=torch.long)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": vis["pixel_values"],
            "image_sizes": vis["image_sizes"],
        }

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode(
            [i for i in ids if i >= 0], skip_special_tokens=skip_special_tokens
        )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def _token_str(tok: Any) -> str | None:
    if isinstance(tok, dict):
        return tok.get("content")
    return tok if isinstance(tok, str) else None
