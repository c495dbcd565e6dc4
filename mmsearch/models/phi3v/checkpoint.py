"""Finding and reading official Phi-3 Vision checkpoints.

The official safetensors keep the upstream module names (``model.layers...``,
``model.vision_embed_tokens...``). :func:`official_to_ours` maps each one to our module
tree; it is pure so it can be tested without weights.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from mmsearch.errors import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "microsoft/Phi-3-vision-128k-instruct"
REQUIRED_FILES = (
    "config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors (or model-*.safetensors with model.safetensors.index.json)",
)
MODEL_ENV_VAR = "MMSEARCH_RERANK_MODEL"

_VISION = "model.vision_embed_tokens."
_RENAMES = (
    (_VISION + "img_processor.vision_model.", "vision.clip."),
    (_VISION + "img_projection.", "vision.projection."),
    (_VISION + "glb_GN", "vision.glb_GN"),
    (_VISION + "sub_GN", "vision.sub_GN"),
    ("model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)


def official_to_ours(key: str) -> str | None:
    """Our parameter name for an official checkpoint key, or ``None`` for keys that carry
    nothing of their own (the image embedding's alias of the token embedding, CLIP's
    position-id buffer). Unknown keys come back unchanged so strict loading reports them."""
    if key == _VISION + "wte.weight" or key.endswith("embeddings.position_ids"):
        return None
    for old, new in _RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def checkpoint_files(ckpt_dir: Path) -> list[Path]:
    """The safetensors shards of a checkpoint directory, in index order."""
    index = ckpt_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
        files = [ckpt_dir / n for n in names]
    elif (ckpt_dir / "model.safetensors").is_file():
        files = [ckpt_dir / "model.safetensors"]
    else:
        raise ModelLoadError(f"no model.safetensors or model.safetensors.index.json in {ckpt_dir}")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ModelLoadError(f"checkpoint shards missing: {', '.join(missing)}")
    return files


def read_shapes(files: Iterable[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor shapes by official key, read from the safetensors headers only."""
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for k in fh.keys():
                shapes[k] = tuple(fh.get_slice(k).get_shape())
    return shapes


def load_mapped_state_dict(
    files: Iterable[Path], dtype: torch.dtype, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """All tensors under our names, converted one at a time to ``dtype`` on ``device``
    (so a bf16 checkpoint never sits in memory twice)."""
    out: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt", device="cpu") as fh:
            for k in fh.keys():
                ours = official_to_ours(k)
                if ours is None:
                    continue
                t = fh.get_tensor(k)
                out[ours] = t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
    return out


def check_keys(expected: Iterable[str], found: Mapping[str, object], where: str) -> None:
    """Strict key check: raise :class:`ModelLoadError` listing missing and unexpected keys."""
    exp = set(expected)
    got = set(found)
    missing = sorted(exp - got)
    unexpected = sorted(got - exp)
    if missing or unexpected:

        def show(keys: list[str]) -> str:
            head = ", ".join(keys[:8])
            return head + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        raise ModelLoadError(f"checkpoint {where} does not match Phi-3 Vision: " + "; ".join(parts))


def _missing_help(name: str) -> str:
    return (
        f"Phi-3 Vision weights {name!r} are not available. Download them on a machine with "
        f"internet access (hf download {DEFAULT_MODEL}) or copy a directory "
        f"holding {', '.join(REQUIRED_FILES)}, then point {MODEL_ENV_VAR} (or the "
        "name_or_path argument) at that directory."
    )


def resolve_checkpoint_dir(name_or_path: str | Path) -> Path:
    """A local directory holding the checkpoint: ``name_or_path`` itself if it is a
    directory, else a Hugging Face Hub snapshot (from the local cache, or downloaded on
    first use). Raises :class:`ModelLoadError` when neither is possible."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json. {_missing_help(str(path))}")
        return path
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise ModelLoadError(
            f"{name!r} is neither a directory nor a hub model id. " + _missing_help(name)
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors"]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    from mmsearch.hub import hub_reachable, unreachable_note

    if not hub_reachable():
        raise ModelLoadError(f"{_missing_help(name)} ({unreachable_note()})")
    logger.info("downloading %s from the Hugging Face Hub (first use)", name)
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{_missing_help(name)} (download failed: {exc})") from exc
