"""Latency of one rerank of 9 candidates with the permutation constraint, with and
without the query-image caption step, against unconstrained decoding of the same prompt.

The baseline builds the same contact sheet and prompt and generates exactly as many
tokens as the constrained answer had, with no logits processor: the difference is the
cost of the constraint. Default: the tiny random Phi-3 Vision on the CPU (checks the
code path; says little about real latency). ``--full``: the full Phi-3 Vision
architecture (4.2 B parameters, random weights; the tiny tokenizer, so answers take more
tokens than with the real one) on a GPU, in bfloat16.

    python bench/rerank_latency.py [--runs 5] [--full --device cuda]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import machine, make_photo_folder, percentiles, print_table, write_results

from mmsearch.models.phi3v import load_phi3v
from mmsearch.rerank.backends import Phi3VisionVLM
from mmsearch.rerank.pipeline import Reranker, _open_candidate
from mmsearch.rerank.sheet import build_contact_sheet
from mmsearch.testing.tiny_phi3v import _rope_factors, write_tiny_phi3v

QUERY = "a cat sitting on a table"
FULL_TEXT = {
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32064,
}


def full_size_phi3v(
    directory: Path,
    device: str,
    dtype: torch.dtype,
    *,
    text: dict[str, int] = FULL_TEXT,
    clip_layers: int = 24,
    num_crops: int = 16,
) -> Phi3VisionVLM:
    """Phi-3-vision-128k-instruct's architecture with random weights, built in place on
    ``device`` (no 8 GB checkpoint written); tokenizer and processor files of the tiny
    model (336 px tiles, 16 crops)."""
    from mmsearch.models.phi3v.config import CLIP_PREFIX, parse_config
    from mmsearch.models.phi3v.modeling import Phi3VForCausalLM
    from mmsearch.models.phi3v.processing import Phi3VProcessor

    write_tiny_phi3v(directory, full_size_tiles=True, num_crops=num_crops)
    raw = json.loads((directory / "config.json").read_text())
    raw.update(text)
    head_half = text["hidden_size"] // text["num_attention_heads"] // 2
    raw["rope_scaling"]["long_factor"] = _rope_factors(head_half, long=True)
    raw["rope_scaling"]["short_factor"] = _rope_factors(head_half, long=False)
    shapes: dict[str, tuple[int, ...]] = {
        CLIP_PREFIX + "embeddings.class_embedding": (1024,),
        CLIP_PREFIX + "embeddings.patch_embedding.weight": (1024, 3, 14, 14),
        CLIP_PREFIX + "embeddings.position_embedding.weight": (577, 1024),
    }
    for i in range(clip_layers):
        shapes[CLIP_PREFIX + f"encoder.layers.{i}.mlp.fc1.weight"] = (4096, 1024)
    cfg = parse_config(raw, shapes)
    cfg.text._attn_implementation = "sdpa"
    cfg.vision._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Phi3VForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(previous)
    processor = Phi3VProcessor.from_dir(directory, cfg.tile_size, cfg.merged_grid, num_crops)
    gen = model.language_model.generation_config
    gen.eos_token_id = list(dict.fromkeys([*cfg.eos_token_ids, *processor.stop_token_ids]))
    gen.pad_token_id = processor.tokenizer.pad_token_id or gen.eos_token_id[0]
    gen.do_sample = False
    n_params = sum(p.numel() for p in model.parameters())
    log = logging.getLogger(__name__)
    log.warning("Phi-3 Vision architecture: %.2fB parameters", n_params / 1e9)
    return Phi3VisionVLM(model, processor, "phi3v-full-size-random")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_rerank(vlm: Phi3VisionVLM, photos: list[Path], runs: int) -> dict[str, Any]:
    """p50/p95 of rerank (with and without the caption step) and of the unconstrained
    baseline; token counts of every constrained answer."""
    reranker = Reranker(vlm)
    candidates = [(f"id-{i}", str(p)) for i, p in enumerate(photos[:9])]
    query_image = str(photos[9])
    lengths: list[int] = []
    original = vlm.generate

    def recording(inputs: Any, **kwargs: Any) -> Any:
        generated = original(inputs, **kwargs)
        if kwargs.get("logits_processor") is not None:
            lengths.append(len(generated.token_ids))
        return generated

    tok = vlm.tokenizer

    def constrained(**kwargs: Any) -> tuple[float, int]:
        lengths.clear()
        _sync()
        start = time.perf_counter()
        result = reranker.rerank(candidates, **kwargs)
        _sync()
        elapsed = time.perf_counter() - start
        if not result.reranked:
            raise RuntimeError(f"rerank fell back: {result.note}")
        assert sorted(result.ids) == sorted(c[0] for c in candidates)
        return elapsed, lengths[-1]

    def unconstrained(k: int) -> tuple[float, int, int]:
        _sync()
        start = time.perf_counter()
        thumbs = [_open_candidate(p, reranker.cell_size) for _, p in candidates]
        sheet = build_contact_sheet(thumbs, cell_size=reranker.cell_size)
        inputs = vlm.build_inputs(reranker._messages(thumbs, sheet.image, QUERY, None))
        model_inputs = vlm._to_model(inputs)
        generated = vlm.model.generate(
            **model_inputs,
            max_new_tokens=k,
            min_new_tokens=k,
            do_sample=False,
            num_beams=1,
            pad_token_id=tok.pad_token_id or vlm.eos_token_id,
        )
        _sync()
        prompt = int(model_inputs["input_ids"].shape[1])
        return time.perf_counter() - start, int(generated.shape[1]) - prompt, prompt

    vlm.generate = recording  # type: ignore[method-assign]
    labels = ("constrained", "constrained_with_caption", "unconstrained_baseline")
    times: dict[str, list[float]] = {label: [] for label in labels}
    tokens: dict[str, list[int]] = {label: [] for label in labels}
    constrained(text=QUERY)  # warm-up (vocabulary index, kernels)
    # One of each per round, so that load from other processes weighs on all alike.
    for _ in range(runs):
        elapsed, k = constrained(text=QUERY)
        times["constrained"].append(elapsed)
        tokens["constrained"].append(k)
        elapsed, k2 = constrained(text=QUERY, image=query_image)
        times["constrained_with_caption"].append(elapsed)
        tokens["constrained_with_caption"].append(k2)
        elapsed, n_new, prompt = unconstrained(k)
        times["unconstrained_baseline"].append(elapsed)
        tokens["unconstrained_baseline"].append(n_new)
    vlm.generate = original  # type: ignore[method-assign]
    out: dict[str, Any] = {
        label: {"seconds": percentiles(times[label]), "answer_tokens": tokens[label]}
        for label in labels
    }
    out["prompt_tokens"] = prompt
    return out


def report(results: dict[str, Any], where: str) -> None:
    base = results["unconstrained_baseline"]["seconds"]["p50"]
    rows = []
    for label in ("unconstrained_baseline", "constrained", "constrained_with_caption"):
        r = results[label]
        s, toks = r["seconds"], r["answer_tokens"]
        rows.append([label, s["p50"], s["p95"], f"{min(toks)}..{max(toks)}", s["p50"] / base])
    print(f"\nrerank of 9 candidates, {where}; prompt {results['prompt_tokens']} tokens\n")
    print_table(["decoding", "p50 s", "p95 s", "answer tokens", "x baseline p50"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--device", default=None, help="default: cuda with --full, else cpu")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = args.device or ("cuda" if args.full else "cpu")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        photos = make_photo_folder(tmp / "photos", 10)
        if args.full:
            vlm = full_size_phi3v(tmp / "phi3v", device, torch.bfloat16)
            where = f"full-size Phi-3 Vision (random weights), {device}, bfloat16"
        else:
            model, processor = load_phi3v(
                write_tiny_phi3v(tmp / "phi3v"), device=device, dtype="float32"
            )
            vlm = Phi3VisionVLM(model, processor, "phi3v-tiny")
            where = f"tiny Phi-3 Vision, {device}, float32"
        results = bench_rerank(vlm, photos, args.runs)
    report(results, where)
    name = "rerank_latency_full" if args.full else "rerank_latency_tiny"
    path = write_results(name, {"machine": machine(), "model": where, **results}, args.out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
