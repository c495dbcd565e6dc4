"""``load_phi3v``: an official Phi-3 / Phi-3.5 Vision checkpoint as our model + processor."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from mmsearch.errors import ModelLoadError
from mmsearch.models import parameters_on_meta
from mmsearch.models.devices import DTYPES, resolve_device, resolve_dtype
from mmsearch.models.phi3v.checkpoint import (
    DEFAULT_MODEL,
    check_keys,
    checkpoint_files,
    load_mapped_state_dict,
    read_shapes,
    resolve_checkpoint_dir,
)
from mmsearch.models.phi3v.config import Phi3VConfig, parse_config
from mmsearch.models.phi3v.modeling import Phi3VForCausalLM
from mmsearch.models.phi3v.processing import Phi3VProcessor

logger = logging.getLogger(__name__)


def build_model(
    cfg: Phi3VConfig, state_dict: dict[str, torch.Tensor], where: str
) -> Phi3VForCausalLM:
    """Our model holding exactly the given weights; any missing or unexpected key raises
    :class:`ModelLoadError`."""
    with parameters_on_meta():
        model = Phi3VForCausalLM(cfg)
    check_keys((k for k, _ in model.named_parameters()), state_dict, where)
    model.load_state_dict(state_dict, strict=False, assign=True)
    leftover = [k for k, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise ModelLoadError(f"parameters left unset after loading {where}: {leftover[:5]}")
    return model.eval()


def load_phi3v(
    name_or_path: str | Path = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    attn_implementation: str = "sdpa",
    num_crops: int | None = None,
) -> tuple[Phi3VForCausalLM, Phi3VProcessor]:
    """Load an official Phi-3 Vision checkpoint (hub id, fetched on first use, or a local
    directory) into our model and processor. Never falls back to random weights: anything
    missing raises :class:`ModelLoadError` saying which files to provide.

    ``num_crops`` overrides ``preprocessor_config.json`` (16 for Phi-3, 4 recommended for
    Phi-3.5 with several images)."""
    ckpt_dir = resolve_checkpoint_dir(name_or_path)
    raw = json.loads((ckpt_dir / "config.json").read_text())
    files = checkpoint_files(ckpt_dir)
    cfg = parse_config(raw, read_shapes(files))
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev, accelerator=DTYPES.get(str(cfg.torch_dtype), torch.bfloat16))
    cfg.text._attn_implementation = attn_implementation
    cfg.vision._attn_implementation = attn_implementation
    state = load_mapped_state_dict(files, dt, "cpu" if dev.type == "cpu" else dev)
    model = build_model(cfg, state, str(ckpt_dir)).to(dev)
    del state
    gen = model.language_model.generation_config
    gen_file = ckpt_dir / "generation_config.json"
    processor = Phi3VProcessor.from_dir(ckpt_dir, cfg.tile_size, cfg.merged_grid, num_crops)
    stops = list(dict.fromkeys([*cfg.eos_token_ids, *processor.stop_token_ids]))
    if gen_file.is_file():
        eos = json.loads(gen_file.read_text()).get("eos_token_id")
        if eos is not None:
            stops = list(dict.fromkeys([*(eos if isinstance(eos, list) else [eos]), *stops]))
    gen.eos_token_id = stops
    gen.pad_token_id = processor.tokenizer.pad_token_id or stops[0]
    gen.do_sample = False
    logger.info("loaded Phi-3 Vision from %s on %s (%s)", ckpt_dir, dev, dt)
    return model, processor
