"""A tiny random-weight Phi-3 Vision checkpoint in the official layout (for tests only).

Files and key names are those of ``microsoft/Phi-3-vision-128k-instruct``; only sizes
shrink. The tokenizer is a character-level BPE with byte fallback and the ``▁`` space
convention of the real (Llama sentencepiece) tokenizer, with the same special tokens in
the same order, so prompts and JSON output tokenise the way the real ones do.

``full_size_tiles=True`` keeps the 336 px / 14 px / 1024-wide CLIP geometry that the
upstream code hard-codes (with 2 thin layers) so that code can load the checkpoint too.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + "
    "message['content'] + '<|end|>\\n' }}{% endfor %}{% if add_generation_prompt and "
    "messages[-1]['role'] != 'assistant' %}{{- '<|assistant|>\\n' -}}{% endif %}"
)
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
)
TEXT = {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "kv_heads": 4, "vocab": 384}


def _tokenizer_json() -> tuple[dict, int]:
    from tokenizers import Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in ["▁", *[chr(c) for c in range(33, 127)]]:
        vocab[ch] = len(vocab)
    words = ["▁the", "▁a", "an", "in", "er", "on", "▁{", '":', '▁"', "▁[", "],", "▁0", "▁1"]
    merges: list[tuple[str, str]] = []
    for w in words:
        left = w[0]
        for ch in w[1:]:
            merges.append((left, ch))
            left += ch
            vocab.setdefault(left, len(vocab))
    tok = Tokenizer(
        BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    from tokenizers import AddedToken

    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")]
    )
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False, rstrip=False) for t in SPECIAL_TOKENS]
    )
    return json.loads(tok.to_str()), tok.get_vocab_size()


def _rope_factors(n: int, long: bool) -> list[float]:
    return [1.0 + (i * (3.0 if long else 0.1)) for i in range(n)]


def _weights(seed: int, vocab: int, clip: dict[str, int]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, std: float = 0.05, mean: float = 0.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * std + mean).to(torch.float32)

    h, inter, hd = TEXT["hidden"], TEXT["intermediate"], TEXT["hidden"] // TEXT["heads"]
    qkv = (TEXT["heads"] + 2 * TEXT["kv_heads"]) * hd
    w: dict[str, torch.Tensor] = {"model.embed_tokens.weight": rnd(vocab, h, std=0.5)}
    for i in range(TEXT["layers"]):
        p = f"model.layers.{i}."
        w[p + "self_attn.qkv_proj.weight"] = rnd(qkv, h, std=0.15)
        w[p + "self_attn.o_proj.weight"] = rnd(h, h, std=0.15)
        w[p + "mlp.gate_up_proj.weight"] = rnd(2 * inter, h, std=0.15)
        w[p + "mlp.down_proj.weight"] = rnd(h, inter, std=0.15)
        w[p + "input_layernorm.weight"] = rnd(h, std=0.1, mean=1.0)
        w[p + "post_attention_layernorm.weight"] = rnd(h, std=0.1, mean=1.0)
    w["model.norm.weight"] = rnd(h, std=0.1, mean=1.0)
    w["lm_head.weight"] = rnd(vocab, h, std=0.5)

    c, ci, p, n = clip["hidden"], clip["intermediate"], clip["patch"], clip["positions"]
    v = "model.vision_embed_tokens."
    cv = v + "img_processor.vision_model."
    w[cv + "embeddings.class_embedding"] = rnd(c, std=0.5)
    w[cv + "embeddings.patch_embedding.weight"] = rnd(c, 3, p, p, std=0.05)
    w[cv + "embeddings.position_embedding.weight"] = rnd(n, c, std=0.5)
    for name in ("pre_layrnorm", "post_layernorm"):
        w[cv + name + ".weight"] = rnd(c, std=0.1, mean=1.0)
        w[cv + name + ".bias"] = rnd(c, std=0.05)
    for j in range(clip["layers"]):
        q = f"{cv}encoder.layers.{j}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            w[q + f"self_attn.{proj}.weight"] = rnd(c, c, std=0.05)
            w[q + f"self_attn.{proj}.bias"] = rnd(c, std=0.05)
        for ln in ("layer_norm1", "layer_norm2"):
            w[q + ln + ".weight"] = rnd(c, std=0.1, mean=1.0)
            w[q + ln + ".bias"] = rnd(c, std=0.05)
        w[q + "mlp.fc1.weight"] = rnd(ci, c, std=0.05)
        w[q + "mlp.fc1.bias"] = rnd(ci, std=0.05)
        w[q + "mlp.fc2.weight"] = rnd(c, ci, std=0.05)
        w[q + "mlp.fc2.bias"] = rnd(c, std=0.05)
    w[v + "glb_GN"] = rnd(1, 1, 4 * c, std=1.0)
    w[v + "sub_GN"] = rnd(1, 1, 1, 4 * c, std=1.0)
    w[v + "img_projection.0.weight"] = rnd(h, 4 * c, std=0.05)
    w[v + "img_projection.0.bias"] = rnd(h, std=0.05)
    w[v + "img_projection.2.weight"] = rnd(h, h, std=0.15)
    w[v + "img_projection.2.bias"] = rnd(h, std=0.05)
    return w


def write_tiny_phi3v(
    directory: str | Path, seed: int = 0, *, full_size_tiles: bool = False, num_crops: int = 4
) -> Path:
    """Write a tiny random Phi-3 Vision checkpoint (official file set and key names) into
    ``directory`` and return it. Default tiles are 56 px (4 image tokens per tile) so a
    test prompt with an image stays a few dozen tokens long."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tok_json, tok_size = _tokenizer_json()
    vocab = TEXT["vocab"]
    assert tok_size <= vocab, (tok_size, vocab)
    if full_size_tiles:
        clip = {"hidden": 1024, "intermediate": 64, "layers": 2, "patch": 14, "image": 336}
    else:
        clip = {"hidden": 32, "intermediate": 64, "layers": 2, "patch": 14, "image": 56}
    grid = clip["image"] // clip["patch"]
    clip["positions"] = grid * grid + 1
    head_dim = TEXT["hidden"] // TEXT["heads"]
    ids = {t: tok_json["model"]["vocab"].get(t) for t in ("<s>", "</s>")}
    added = {a["content"]: a["id"] for a in tok_json["added_tokens"]}
    config = {
        "_name_or_path": "Phi-3-vision-128k-instruct",
        "architectures": ["Phi3VForCausalLM"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_phi3_v.Phi3VConfig",
            "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM",
        },
        "bos_token_id": ids["<s>"],
        "embd_layer": {
            "embedding_cls": "image",
            "hd_transform_order": "sub_glb",
            "projection_cls": "mlp",
            "use_hd_transform": True,
            "with_learnable_separator": True,
        },
        "embd_pdrop": 0.0,
        "eos_token_id": ids["</s>"],
        "hidden_act": "silu",
        "hidden_size": TEXT["hidden"],
        "img_processor": {
            "image_dim_out": clip["hidden"],
            "model_name": "openai/clip-vit-large-patch14-336",
            "name": "clip_vision_model",
            "num_img_tokens": (grid // 2) ** 2,
        },
        "initializer_range": 0.02,
        "intermediate_size": TEXT["intermediate"],
        "max_position_embeddings": 131072,
        "model_type": "phi3_v",
        "num_attention_heads": TEXT["heads"],
        "num_hidden_layers": TEXT["layers"],
        "num_key_value_heads": TEXT["kv_heads"],
        "original_max_position_embeddings": 4096,
        "pad_token_id": added["<|endoftext|>"],
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "long_factor": _rope_factors(head_dim // 2, long=True),
            "short_factor": _rope_factors(head_dim // 2, long=False),
            "type": "su",
        },
        "rope_theta": 10000.0,
        "sliding_window": 131072,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.38.1",
        "use_cache": True,
        "vocab_size": vocab,
        "_attn_implementation": "flash_attention_2",
    }
    preprocessor = {
        "auto_map": {
            "AutoProcessor": "processing_phi3_v.Phi3VProcessor",
            "AutoImageProcessor": "image_processing_phi3_v.Phi3VImageProcessor",
        },
        "num_crops": num_crops,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "Phi3VImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "processor_class": "Phi3VProcessor",
        "num_img_tokens": (grid // 2) ** 2,
    }
    tok_config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<unk>",
        "pad_token": "<|endoftext|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": 131072,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "use_default_system_prompt": False,
    }
    special_map = {
        "bos_token": "<s>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<unk>",
        "pad_token": "<|endoftext|>",
    }
    generation = {
        "_from_model_config": True,
        "bos_token_id": ids["<s>"],
        "eos_token_id": ids["</s>"],
        "transformers_version": "4.38.1",
    }
    files = {
        "config.json": config,
        "preprocessor_config.json": preprocessor,
        "tokenizer.json": tok_json,
        "tokenizer_config.json": tok_config,
        "special_tokens_map.json": special_map,
        "generation_config.json": generation,
    }
    for name, obj in files.items():
        (out / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False))
    weights = _weights(seed, vocab, clip)
    save_file(
        {k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    return out
