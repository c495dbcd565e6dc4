"""Tiny random-weight checkpoints in the same on-disk layouts as the real ones, written
without any network access, so the full loading path runs in tests.

``python -m mmsearch.testing.tiny DIR`` writes every tiny model into its own subfolder
(``DIR/visual_bge/``, ...).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from transformers import BertConfig, PretrainedConfig

from mmsearch.models.visual_bge.config import EVA02_ROPE_REF_GRID, VISION_PREFIX, VisionConfig
from mmsearch.models.visual_bge.model import VisualBGEModule
from mmsearch.testing.tiny_phi3v import write_tiny_phi3v

TINY_VISION = VisionConfig(
    img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_hidden=170
)

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = """
a an the this that these those there here is are was were be been being am do does did
have has had having will would can could should may might must shall of in on at by for
with about against between into through during before after above below to from up down
out off over under again further then once and but or nor not no yes so than too very
just only own same such both each few more most other some any all what which who whom
whose when where why how i me my we our you your he him his she her it its they them
their man woman men women boy girl child children baby person people friend family
face hand hands eye eyes hair head arm leg foot feet body smile
cat cats kitten dog dogs puppy bird birds horse cow sheep pig fish animal animals tiger
lion leopard bear zebra giraffe elephant monkey mouse rabbit duck chicken insect
astronaut space suit rocket launch moon star stars sky planet earth sun cloud clouds rain
snow ice water sea ocean lake river beach sand wave waves mountain mountains hill forest
tree trees flower flowers grass garden field park road street city town house building
room kitchen table chair bed door window wall floor roof car cars bus train plane boat
bike bicycle truck phone case computer screen book paper pen cup mug coffee tea milk
food bread cake pizza apple orange banana fruit plate bowl glass bottle wine beer
red orange yellow green blue purple pink brown black white gray grey dark light bright
big small large little long short tall old new young hot cold warm cool good bad nice
happy sad beautiful pretty ugly clean dirty open closed full empty fast slow high low
photo photograph picture image painting drawing art color colour pattern shape line
circle square front back side top bottom left right middle center inside outside near
far one two three four five six seven eight nine ten first second last day night morning
evening time year today sitting standing walking running playing eating drinking holding
looking wearing flying swimming lying sleeping man's text word words sign
""".split()
_PIECES = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
_SUFFIXES = ["##" + p for p in _PIECES] + ["##s", "##es", "##ed", "##ing", "##er", "##ly", "##'s"]
_PUNCT = list(".,;:!?'\"()-/&+")


def tiny_vocab() -> list[str]:
    """A WordPiece vocabulary of common English words, letters and suffixes: any
    lower-case text tokenizes into distinct pieces, without [UNK] for plain words."""
    seen: dict[str, None] = {}
    for token in [*_SPECIAL, *_PUNCT, *_PIECES, *_SUFFIXES, *_WORDS]:
        seen.setdefault(token, None)
    return list(seen)


def eva02_rope_tables(head_dim: int, grid: int, ref_grid: int = EVA02_ROPE_REF_GRID):
    """EVA02's 2-D rotary tables (cos, sin), each ``(grid*grid, head_dim)``: half the head
    rotates with the row, half with the column, frequencies set for ``ref_grid``."""
    quarter = head_dim // 4
    half = head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, half, 2)[:quarter].float() / half))
    t = torch.arange(grid) / grid * ref_grid
    per_axis = torch.outer(t, freqs).repeat_interleave(2, dim=-1)
    rows = per_axis[:, None, :].expand(grid, grid, -1)
    cols = per_axis[None, :, :].expand(grid, grid, -1)
    angles = torch.cat([rows, cols], dim=-1).reshape(grid * grid, -1)
    return angles.cos(), angles.sin()


_TO_OFFICIAL_VISION = (
    ("mlp.fc1_g.", "mlp.w1."),
    ("mlp.fc1_x.", "mlp.w2."),
    ("mlp.fc2.", "mlp.w3."),
    ("mlp.norm.", "mlp.ffn_ln."),
    ("attn.norm.", "attn.inner_attn_ln."),
    ("attn.q_proj.bias", "attn.q_bias"),
    ("attn.v_proj.bias", "attn.v_bias"),
)
_TO_OFFICIAL_TEXT = {
    "text.embeddings.": "bge_embeddings.",
    "text.encoder.": "bge_encoder.",
    "text.pooler.": "bge_pooler.",
}


def _randomise(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Weights scaled so activations keep unit size through the layers: with the usual
    0.02-std init every input would come out nearly the same vector."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim == 1:
                p.copy_(1 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            elif "patch_embed" not in name and ("embed" in name or "cls_token" in name):
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))


def official_state_dict(
    module: VisualBGEModule, clip_embed_dim: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``module``'s weights in the layout of the published ``Visualized_*.pth`` files,
    with the parts those files carry and the module does not use (the tower's final norm,
    its CLIP head, the logit scale, the stored rotary tables) filled in."""
    vision = module.vision_config
    out: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        if key.startswith("visual."):
            name = key[len("visual.") :]
            for ours, theirs in _TO_OFFICIAL_VISION:
                name = name.replace(ours, theirs)
            out[VISION_PREFIX + name] = value.clone()
        else:
            for ours, theirs in _TO_OFFICIAL_TEXT.items():
                if key.startswith(ours):
                    key = theirs + key[len(ours) :]
                    break
            out[key] = value.clone()
    width = vision.embed_dim
    out[VISION_PREFIX + "norm.weight"] = 1 + 0.1 * torch.randn(width, generator=generator)
    out[VISION_PREFIX + "norm.bias"] = 0.1 * torch.randn(width, generator=generator)
    out[VISION_PREFIX + "head.weight"] = torch.randn(clip_embed_dim, width, generator=generator)
    out[VISION_PREFIX + "head.bias"] = torch.zeros(clip_embed_dim)
    cos, sin = eva02_rope_tables(vision.head_dim, vision.grid_size)
    for owner in ["", *(f"blocks.{i}.attn." for i in range(vision.depth))]:
        out[VISION_PREFIX + owner + "rope.freqs_cos"] = cos.clone()
        out[VISION_PREFIX + owner + "rope.freqs_sin"] = sin.clone()
    out["model_visual.logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return out


def write_wordpiece_tokenizer(directory: Path, vocab: Iterable[str], max_length: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    specials = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    (directory / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "model_max_length": max_length,
        **specials,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def write_visual_bge_checkpoint(
    directory: str | Path,
    *,
    vision: VisionConfig,
    text_config: PretrainedConfig,
    vocab: list[str],
    seed: int = 0,
    checkpoint_file: str = "Visualized_base_en_v1.5.pth",
    clip_embed_dim: int = 32,
    timm_model: str = "eva02_base_patch16_clip_224",
) -> Path:
    """Write a random-weight Visualized BGE (BERT text side) model directory: the
    official-layout ``.pth``, the text ``config.json`` and a WordPiece tokenizer."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    module = VisualBGEModule(vision, text_config, timm_model)
    _randomise(module, generator)
    torch.save(official_state_dict(module, clip_embed_dim, generator), directory / checkpoint_file)
    text_config.save_pretrained(directory)
    write_wordpiece_tokenizer(directory, vocab, max_length=512)
    return directory


def write_tiny_visual_bge(directory: str | Path, seed: int = 0) -> Path:
    """A tiny Visualized BGE base_en_v1.5 look-alike: 64 px images in 16 px patches, width
    64, two vision and two text layers. Same files and key layout as the real one."""
    vocab = tiny_vocab()
    text_config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        type_vocab_size=2,
        pad_token_id=0,
    )
    return write_visual_bge_checkpoint(
        directory, vision=TINY_VISION, text_config=text_config, vocab=vocab, seed=seed
    )


BASE_VISION = VisionConfig(
    img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_hidden=2048
)
"""EVA02-CLIP-B/16 at 224 px, the vision tower of Visualized BGE base_en_v1.5."""


def write_full_size_visual_bge(directory: str | Path, seed: int = 0) -> Path:
    """A random-weight model with the full base_en_v1.5 architecture (EVA02-B/16 +
    BERT-base, 30522-token vocabulary; a 0.8 GB checkpoint), for benchmarks: the same
    compute as the real model, none of its meaning."""
    vocab = tiny_vocab()
    vocab += [f"[unused{i}]" for i in range(30522 - len(vocab))]
    return write_visual_bge_checkpoint(
        directory,
        vision=BASE_VISION,
        text_config=BertConfig(),
        vocab=vocab,
        seed=seed,
        clip_embed_dim=512,
    )


WRITERS: dict[str, Callable[[Path], Path]] = {
    "visual_bge": write_tiny_visual_bge,
    "phi3v": write_tiny_phi3v,
}
"""Subfolder name -> writer; ``main`` writes each into ``DIR/<name>/``."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    for name, writer in WRITERS.items():
        path = writer(args.directory / name)
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
