"""Tiny random-weight models and tokenizers, written offline, for the reranker tests.

Random weights are the worst case for a constrained reranker: the model has no idea
what a ranking is and happily repeats itself. The tokenizers are trained on JSON
rankings without pre-splitting, so their vocabularies hold tokens that span label
digits, quotes, commas and spaces (``1",``, ``", "1``), the hard cases for a
uniqueness check that has to work on characters, not tokens.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

WORDS = (
    "the a red blue cat dog image shows best match because it looks like query photo "
    "with pattern colour candidate first second ranking reason similar"
).split()


def _corpus(seed: int = 0, lines: int = 3000) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        n = rng.randint(1, 24)
        labels = [str(i) for i in range(1, n + 1)]
        rng.shuffle(labels)
        if rng.random() < 0.5:
            labels = [rng.choice(labels) for _ in labels]
        reason = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 8)))
        sep = rng.choice([",", ", "])
        out.append(
            '{"ranking": [' + sep.join(f'"{x}"' for x in labels) + '], "reason": "' + reason + '"}'
        )
        out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))))
    return out


def _train(tok: Tokenizer, special: list[str], vocab_size: int, alphabet: list[str]) -> None:
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)


def sentencepiece_style_tokenizer(special: list[str], vocab_size: int = 700) -> Tokenizer:
    """Llama/Phi-3 flavour: ``\u2581`` for spaces, byte fallback, tokens may cross spaces."""
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token=None))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    _train(tok, special + bytes_, vocab_size, alphabet=list("\u2581"))
    return tok


def byte_level_tokenizer(special: list[str], vocab_size: int = 700) -> Tokenizer:
    """GPT-2/Qwen flavour: byte-level BPE, no regex pre-split so merges span anything."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    _train(tok, special, vocab_size, alphabet=pre_tokenizers.ByteLevel.alphabet())
    return tok


def write_tiny_text_lm(directory: Path, seed: int = 0) -> Path:
    """A 2-layer random ``Phi3ForCausalLM`` with a sentencepiece-style tokenizer."""
    from transformers import Phi3Config, Phi3ForCausalLM

    special = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=sentencepiece_style_tokenizer(special),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|end|>"],
    )
    tok.chat_template = (
        "{% for m in messages %}<|user|>{% for c in m['content'] %}"
        "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|end|>"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    torch.manual_seed(seed)
    config = Phi3Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = Phi3ForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


QWEN2VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tiny_qwen2vl(directory: Path, seed: int = 0) -> Path:
    """A random 1-layer ``Qwen2VLForConditionalGeneration`` with its processor; images
    are shrunk to a few patches so a forward pass takes milliseconds."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    special = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=byte_level_tokenizer(special),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=special[1:],
    )
    tok.image_token = "<|image_pad|>"
    tok.video_token = "<|video_pad|>"
    tok.vision_start_token = "<|vision_start|>"
    tok.vision_end_token = "<|vision_end|>"
    pixels = 28 * 28 * 4
    image_processor = Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels)
    video_processor = Qwen2VLVideoProcessor(min_pixels=pixels, max_pixels=pixels)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=video_processor,
        chat_template=QWEN2VL_CHAT_TEMPLATE,
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in special}
    torch.manual_seed(seed)
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [1, 1, 2],
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.bos_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    (directory / "README.txt").write_text(
        json.dumps({"note": "random weights, for tests only"}) + "\n"
    )
    return directory
