"""Finding, reading and re-keying the official Visualized BGE checkpoints."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from mmsearch.errors import ModelLoadError
from mmsearch.models.visual_bge.config import (
    VARIANTS,
    VISION_PREFIX,
    WEIGHTS_REPO,
    VisualBGEVariant,
    variant_for_checkpoint_file,
)

log = logging.getLogger(__name__)

_TEXT_PREFIXES = {
    "bge_embeddings.": "text.embeddings.",
    "bge_encoder.": "text.encoder.",
    "bge_pooler.": "text.pooler.",
}

_VISION_RENAMES = (
    ("mlp.ffn_ln.", "mlp.norm."),
    ("attn.inner_attn_ln.", "attn.norm."),
    ("mlp.w1.", "mlp.fc1_g."),
    ("mlp.w2.", "mlp.fc1_x."),
    ("mlp.w3.", "mlp.fc2."),
    ("attn.q_bias", "attn.q_proj.bias"),
    ("attn.v_bias", "attn.v_proj.bias"),
)

_DROPPED = ("model_visual.logit_scale",)
"""The CLIP logit scale: a training-time temperature, unused for embedding."""

_DROPPED_VISION = ("head.", "norm.")
"""The CLIP projection head and the tower's final norm: Visualized BGE takes the image
tokens from the last block, before both."""

_DERIVED_BUFFERS = ("text.embeddings.position_ids", "text.embeddings.token_type_ids")
"""Index buffers that some transformers versions saved and others recompute."""


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official ``Visualized_*.pth`` state dict onto :class:`VisualBGEModule`'s keys.

    Pure key mapping: tensors pass through unchanged. ``bge_{embeddings,encoder,pooler}.``
    become the transformers text model's ``text.{embeddings,encoder,pooler}.``; the
    EVA02 tower under ``model_visual.visual.`` becomes timm's ``Eva`` naming under
    ``visual.``; the rotary tables (recomputed by timm, checked separately), the CLIP head,
    the tower's final norm and the logit scale are dropped. Keys the mapping does not know
    are kept as they are, so a strict load reports them.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in _DROPPED:
            continue
        if key.startswith(VISION_PREFIX):
            name = key[len(VISION_PREFIX) :]
            if name.startswith(_DROPPED_VISION) or "rope.freqs_" in name:
                continue
            for old, new in _VISION_RENAMES:
                name = name.replace(old, new)
            out["visual." + name] = value
            continue
        for old, new in _TEXT_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        if key in _DERIVED_BUFFERS:
            continue
        out[key] = value
    return out


def load_official_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` state dict safely (tensors only, no pickled code)."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a load error
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelLoadError(f"{path} is not a plain state dict of tensors")
    return dict(state)


def checkpoint_fingerprint(path: Path) -> str:
    """A short id for a checkpoint file's content: SHA-256 of its size and its first and
    last MiB. Cheap on multi-gigabyte files, and enough to tell apart any two
    checkpoints that differ in their weights."""
    chunk = 1 << 20
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            digest.update(f.read(chunk))
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class ModelFiles:
    """Where one Visualized BGE model's files are: the weights and the text model's
    ``config.json`` plus tokenizer, and the variant name the weights are known by."""

    checkpoint: Path
    text_dir: Path
    name: str


_HOW_TO_PROVIDE = (
    "To use a local copy, put in one directory the checkpoint {ckpt} (from the Hugging Face "
    "repo {weights}) together with config.json and the tokenizer files ({files}) of {text}, "
    "and set MMSEARCH_EMBED_MODEL=/path/to/that/directory."
)


def how_to_provide(variant: VisualBGEVariant) -> str:
    return _HOW_TO_PROVIDE.format(
        ckpt=variant.checkpoint_file,
        weights=WEIGHTS_REPO,
        files=", ".join(f for f in variant.text_files if f != "config.json"),
        text=variant.text_repo,
    )


def find_local_files(directory: Path) -> ModelFiles:
    """Locate the checkpoint and text files in a local model directory."""
    if not directory.is_dir():
        raise ModelLoadError(f"model directory {directory} does not exist")
    known = [directory / v.checkpoint_file for v in VARIANTS.values()]
    present = [p for p in known if p.is_file()]
    if not present:
        present = sorted(directory.glob("*.pth"))
    if len(present) != 1:
        found = ", ".join(p.name for p in present) or "none"
        raise ModelLoadError(
            f"{directory} must hold exactly one Visualized BGE checkpoint (.pth), found: {found}. "
            + how_to_provide(VARIANTS["base_en_v1.5"])
        )
    checkpoint = present[0]
    if not (directory / "config.json").is_file():
        raise ModelLoadError(
            f"{directory} has no config.json of the text model. "
            + how_to_provide(
                variant_for_checkpoint_file(checkpoint.name) or VARIANTS["base_en_v1.5"]
            )
        )
    variant = variant_for_checkpoint_file(checkpoint.name)
    return ModelFiles(
        checkpoint=checkpoint,
        text_dir=directory,
        name=variant.name if variant else checkpoint.stem,
    )


def download_files(variant: VisualBGEVariant, cache_dir: Path | None = None) -> ModelFiles:
    """Fetch a variant's checkpoint and text files into the Hugging Face cache (a no-op
    once cached). Raises :class:`ModelLoadError` with instructions when that fails."""
    from huggingface_hub import hf_hub_download, snapshot_download

    from mmsearch.hub import hub_reachable, unreachable_note

    offline = not hub_reachable()  # then only the local cache is asked, at once
    try:
        checkpoint = hf_hub_download(
            WEIGHTS_REPO, variant.checkpoint_file, cache_dir=cache_dir, local_files_only=offline
        )
        text_dir = snapshot_download(
            variant.text_repo,
            allow_patterns=list(variant.text_files),
            cache_dir=cache_dir,
            local_files_only=offline,
        )
    except Exception as exc:  # noqa: BLE001 - network, auth and cache errors alike
        reason = unreachable_note() if offline else f"{exc.__class__.__name__}: {exc}"
        raise ModelLoadError(
            f"could not download Visualized BGE {variant.name!r} ({reason}). "
            + how_to_provide(variant)
        ) from exc
    if not (Path(text_dir) / "config.json").is_file():
        raise ModelLoadError(f"{variant.text_repo} gave no config.json. " + how_to_provide(variant))
    return ModelFiles(checkpoint=Path(checkpoint), text_dir=Path(text_dir), name=variant.name)


def resolve_model_files(name_or_path: str | Path, cache_dir: Path | None = None) -> ModelFiles:
    """A local directory is used as it is; a variant name is fetched on first use."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return find_local_files(path)
    name = str(name_or_path)
    if name in VARIANTS:
        return download_files(VARIANTS[name], cache_dir=cache_dir)
    if isinstance(name_or_path, Path) or "/" in name or "\\" in name or name.startswith((".", "~")):
        raise ModelLoadError(
            f"model directory {path} does not exist. " + how_to_provide(VARIANTS["base_en_v1.5"])
        )
    raise ModelLoadError(
        f"embedding model {name!r} is neither a known variant ({', '.join(VARIANTS)}) nor an "
        "existing directory. " + how_to_provide(VARIANTS["base_en_v1.5"])
    )
