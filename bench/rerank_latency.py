"""Latency of one rerank of 9 candidates with the permutation constraint, with and
without the query-image caption step, against unconstrained decoding of the same prompt.

The baseline builds the same contact sheet and prompt and generates exactly as many
tokens as the constrained answer had, with no logits processor: the difference is the
cost of the constraint. Default: the tiny random Phi-3 Vision on the CPU (checks the
code path; says little about real latency). ``--full``: the full Phi-3 Vision
architecture (4.2 B parameters, random weights; the tiny tokenizer, so answers take more
tokens than with the real one) on a GPU, in bfloat16.

``--full --device cpu``: the CPU's own default dtype (``resolve_dtype("auto")``: float32
without native bfloat16). The full model does not fit beside other work in float32
(about 17 GB), so the language model is built at full width with ``--layers`` of its 32
decoder layers (CLIP-L complete) and each phase is extrapolated per layer: every decoder
layer is timed by hooks, and ``non-layer time + mean layer time x 32`` is reported. The
prompt pass (CLIP and language model apart) and one decoding step are timed for 4, 9 and
16 candidates and each ``--num-crops``, interleaved round by round, next to the bounds this
CPU puts on them: prompt FLOPs at its best float32 matrix-multiply speed, and one
step's weight bytes at its copy bandwidth.

    python bench/rerank_latency.py [--runs 5] [--full --device cuda]
    python bench/rerank_latency.py --full --device cpu [--layers 2] [--num-crops 1 4 9 16]
        [--quantize int8 float16] [--query-image]

``--quantize``: the same phases with the language model packed (each mode on a copy, after
the float32 baseline), and the agreement of its rankings and logits with float32.
``--query-image``: what a query image adds, captioned first or shown in the ranking prompt.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import machine, make_photo_folder, percentiles, print_table, write_results

from mmsearch.images import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS
from mmsearch.models.devices import resolve_dtype
from mmsearch.models.phi3v import load_phi3v
from mmsearch.rerank.backends import Phi3VisionVLM
from mmsearch.rerank.budget import copy_bandwidth, matmul_flops
from mmsearch.rerank.pipeline import Reranker, _open_candidate
from mmsearch.rerank.quantize import PackedLinear, packed_weight_bytes, quantize_language_model
from mmsearch.rerank.sheet import build_contact_sheet
from mmsearch.testing.tiny_phi3v import _rope_factors, write_tiny_phi3v

QUERY = "a cat sitting on a table"
LIMITS = (DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS)
CAPTION_TOKENS = (20, 40)
"""Caption lengths costed: a one-sentence caption, and the step's cap."""
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
        thumbs = [_open_candidate(p, reranker.cell_size, *LIMITS) for _, p in candidates]
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


FULL_LAYERS = 32


def _linear_params(module: torch.nn.Module) -> int:
    """Float linear weights (packed ones are counted by ``packed_weight_bytes``)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def _all_linear_params(module: torch.nn.Module) -> int:
    packed = sum(
        m.in_features * m.out_features for m in module.modules() if isinstance(m, PackedLinear)
    )
    return _linear_params(module) + packed


class LayerClock:
    """Wall time spent inside each decoder layer (forward hooks), so that a reduced-depth
    model's time can be extrapolated to the full depth."""

    def __init__(self, layers: torch.nn.ModuleList) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._start = 0.0
        self._handles = []
        for layer in layers:
            self._handles.append(layer.register_forward_pre_hook(self._pre))
            self._handles.append(layer.register_forward_hook(self._post))

    def _pre(self, *_: Any) -> None:
        self._start = time.perf_counter()

    def _post(self, *_: Any) -> None:
        self.seconds += time.perf_counter() - self._start
        self.calls += 1

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _extrapolate(total: float, clock: LayerClock, n_layers: int) -> float:
    """``total`` with the timed layers replaced by the full model's 32."""
    per_layer = clock.seconds / clock.calls
    return total - clock.seconds + per_layer * FULL_LAYERS * (clock.calls / n_layers)


def bench_cpu_phases(
    vlm: Phi3VisionVLM,
    photos: list[Path],
    runs: int,
    candidate_counts: list[int],
    crop_counts: list[int],
    decode_steps: int,
) -> dict[str, Any]:
    """Prompt pass (CLIP, language model) and one decoding step per (candidates, crops),
    each extrapolated to 32 layers. CLIP's input is the sheet resized to the crop grid, so
    its cost depends on the crop count only: timed once per crop count and round (on the
    first candidate count), its features reused for the others."""
    model = vlm.model
    lm = model.language_model
    layers = lm.model.layers
    n_layers = len(layers)
    clock = LayerClock(layers)
    reranker = Reranker(vlm)
    image_processor = vlm.processor.image_processor
    tok = vlm.tokenizer
    real_features = model.vision.image_features
    cached: dict[int, list[torch.Tensor]] = {}
    keys = [(n, c) for c in crop_counts for n in candidate_counts]
    clip_s: dict[int, list[float]] = {c: [] for c in crop_counts}
    lm_s: dict[tuple[int, int], list[float]] = {k: [] for k in keys}
    step_s: dict[tuple[int, int], list[float]] = {k: [] for k in keys}
    prompt_tokens: dict[tuple[int, int], int] = {}
    image_tokens: dict[tuple[int, int], int] = {}
    try:
        for _ in range(runs):
            for c in crop_counts:
                image_processor.num_crops = c
                cached.pop(c, None)
                for n in candidate_counts:
                    cands = [(f"id-{i}", str(photos[i % len(photos)])) for i in range(n)]
                    thumbs = [_open_candidate(p, reranker.cell_size, *LIMITS) for _, p in cands]
                    sheet = build_contact_sheet(thumbs, cell_size=reranker.cell_size)
                    messages = reranker._messages(thumbs, sheet.image, QUERY, None)
                    inputs = vlm._to_model(vlm.build_inputs(messages))
                    ids = inputs["input_ids"]
                    prompt_tokens[(n, c)] = int(ids.shape[1])
                    image_tokens[(n, c)] = int((ids < 0).sum())
                    if c not in cached:
                        start = time.perf_counter()
                        with torch.inference_mode():
                            cached[c] = real_features(inputs["pixel_values"], inputs["image_sizes"])
                        clip_s[c].append(time.perf_counter() - start)
                    feats = cached[c]
                    if feats[0].shape[0] != image_tokens[(n, c)]:
                        raise RuntimeError("sheets of different shapes: CLIP must be re-timed")
                    model.vision.image_features = lambda *_a, _f=feats: _f  # type: ignore[method-assign]
                    clock.reset()
                    start = time.perf_counter()
                    with torch.inference_mode():
                        out = model(**inputs, use_cache=True, logits_to_keep=1)
                    lm_s[(n, c)].append(_extrapolate(time.perf_counter() - start, clock, n_layers))
                    nxt = out.logits[:, -1:].argmax(-1)
                    step_s[(n, c)].append(
                        _step_time(vlm, inputs, out.past_key_values, nxt, clock, decode_steps)
                    )
                    print(  # progress, in case the run is cut short
                        f"candidates={n} crops={c} prompt={prompt_tokens[(n, c)]} "
                        f"clip={clip_s[c][-1]:.2f}s lm={lm_s[(n, c)][-1]:.2f}s "
                        f"step={step_s[(n, c)][-1]:.3f}s load={os.getloadavg()[0]:.1f}",
                        file=sys.stderr,
                        flush=True,
                    )
                    del out
    finally:
        model.vision.image_features = real_features  # type: ignore[method-assign]
        clock.remove()

    def answer_tokens(n: int) -> int:
        ranking = ", ".join(f'"{label}"' for label in range(1, n + 1))
        return len(tok.encode('{"ranking": [' + ranking + "]", add_special_tokens=False))

    # Bounds, measured in the same run.
    dtype = lm.dtype
    rate = matmul_flops(dtype, tokens=1024, repeats=5)
    bandwidth = copy_bandwidth(1 << 30, repeats=5)
    per_layer_linear = _linear_params(layers[0])
    per_layer_all = _all_linear_params(layers[0])
    hidden = lm.config.hidden_size
    clip_layers = model.vision.layers_to_run
    clip_linear = _linear_params(model.vision.clip.encoder.layers[0]) * clip_layers
    width = lm.config.hidden_size
    element = torch.finfo(dtype).bits // 8
    packed = packed_weight_bytes(layers[0])
    head = lm.lm_head
    head_bytes = packed_weight_bytes(head) or _linear_params(head) * element
    step_bytes = (per_layer_linear * element + packed) * FULL_LAYERS + head_bytes
    rows = []
    for n, c in keys:
        t = prompt_tokens[(n, c)]
        crops = math.isqrt(c) ** 2  # a square sheet uses the largest square grid
        lm_flops = FULL_LAYERS * (2 * per_layer_all * t + 2 * t * t * hidden)
        clip_flops = (crops + 1) * (2 * clip_linear * 577 + clip_layers * 4 * 577 * 577 * 1024)
        clip = statistics.median(clip_s[c])
        lm_p = statistics.median(lm_s[(n, c)])
        step = statistics.median(step_s[(n, c)])
        k = answer_tokens(n)
        total = clip + lm_p + k * step
        bound = (clip_flops + lm_flops) / rate + k * step_bytes / bandwidth
        rows.append(
            {
                "candidates": n,
                "num_crops": c,
                "crops_used": crops,
                "prompt_tokens": t,
                "image_tokens": image_tokens[(n, c)],
                "clip_s": percentiles(clip_s[c]),
                "lm_prompt_s": percentiles(lm_s[(n, c)]),
                "decode_step_s": percentiles(step_s[(n, c)]),
                "ranking_tokens": k,
                "total_no_reason_s": total,
                "prompt_bound_s": (clip_flops + lm_flops) / rate,
                "decode_step_bound_s": step_bytes / bandwidth,
                "total_bound_s": bound,
                "fraction_of_bound": bound / total,
            }
        )
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "layers_built": n_layers,
        "width": width,
        "matmul_gflops": rate / 1e9,
        "copy_gbytes_s": bandwidth / 1e9,
        "step_weight_gbytes": step_bytes / 1e9,
        "rows": rows,
    }


def _prompt_pass(
    vlm: Phi3VisionVLM, inputs: dict[str, Any], clock: LayerClock
) -> tuple[float, Any, torch.Tensor]:
    """One full forward pass (CLIP included), extrapolated to 32 layers; the cache and
    the next token, to time decoding steps after it."""
    n_layers = len(vlm.model.language_model.model.layers)
    clock.reset()
    start = time.perf_counter()
    with torch.inference_mode():
        out = vlm.model(**inputs, use_cache=True, logits_to_keep=1)
    seconds = _extrapolate(time.perf_counter() - start, clock, n_layers)
    return seconds, out.past_key_values, out.logits[:, -1:].argmax(-1)


def _step_time(
    vlm: Phi3VisionVLM,
    inputs: dict[str, Any],
    past: Any,
    nxt: torch.Tensor,
    clock: LayerClock,
    steps_run: int = 3,
) -> float:
    """Median seconds of ``steps_run`` greedy decoding steps after a prompt pass,
    extrapolated to 32 layers."""
    lm = vlm.model.language_model
    n_layers = len(lm.model.layers)
    mask = inputs["attention_mask"]
    steps = []
    for _ in range(steps_run):
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
        clock.reset()
        start = time.perf_counter()
        with torch.inference_mode():
            out = lm(input_ids=nxt, attention_mask=mask, past_key_values=past, use_cache=True)
        steps.append(_extrapolate(time.perf_counter() - start, clock, n_layers))
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return statistics.median(steps)


def bench_query_image(
    vlm: Phi3VisionVLM, photos: list[Path], runs: int, n: int, num_crops: int
) -> dict[str, Any]:
    """What a query image adds to a rerank of ``n`` candidates, both ways: ``caption``
    (its own prompt pass, then one step per caption token; the caption's words in the
    ranking prompt are left out) and ``inline`` (the image in the ranking prompt: the
    difference between the two ranking prompt passes). Full passes, CLIP included."""
    vlm.processor.image_processor.num_crops = num_crops
    clock = LayerClock(vlm.model.language_model.model.layers)
    reranker = Reranker(vlm)
    cands = [str(photos[i % (len(photos) - 1)]) for i in range(n)]
    thumbs = [_open_candidate(p, reranker.cell_size, *LIMITS) for p in cands]
    sheet = build_contact_sheet(thumbs, cell_size=reranker.cell_size).image
    query = _open_candidate(str(photos[-1]), 2 * reranker.cell_size, *LIMITS)
    assert query is not None

    def inputs_of(messages: Any) -> dict[str, Any]:
        return vlm._to_model(vlm.build_inputs(messages))

    plain = inputs_of(reranker._messages(thumbs, sheet, QUERY, None))
    inline = inputs_of(reranker._messages(thumbs, sheet, QUERY, None, query))
    caption = inputs_of(reranker._caption_messages(query))
    times: dict[str, list[float]] = {"plain": [], "inline": [], "caption": [], "step": []}
    try:
        for _ in range(runs):
            times["plain"].append(_prompt_pass(vlm, plain, clock)[0])
            times["inline"].append(_prompt_pass(vlm, inline, clock)[0])
            seconds, past, nxt = _prompt_pass(vlm, caption, clock)
            times["caption"].append(seconds)
            times["step"].append(_step_time(vlm, caption, past, nxt, clock))
    finally:
        clock.remove()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "candidates": n,
        "num_crops": num_crops,
        "prompt_tokens": {
            "ranking": int(plain["input_ids"].shape[1]),
            "ranking_inline": int(inline["input_ids"].shape[1]),
            "caption": int(caption["input_ids"].shape[1]),
        },
        "ranking_prompt_s": med["plain"],
        "inline_extra_s": med["inline"] - med["plain"],
        "caption_prompt_s": med["caption"],
        "caption_step_s": med["step"],
        "caption_extra_s": {str(k): med["caption"] + k * med["step"] for k in CAPTION_TOKENS},
    }


def bench_agreement(
    base: Phi3VisionVLM, packed: Phi3VisionVLM, photos: list[Path], trials: int, n: int = 9
) -> dict[str, Any]:
    """Rankings (no reason) of the same requests by the unpacked and the packed model,
    and the largest difference of the ranking prompt's next-token logits."""
    first, second = Reranker(base, timeout_s=1e6), Reranker(packed, timeout_s=1e6)
    queries = [QUERY, "a red car", "snow on a mountain", "a bowl of fruit", "text on a sign"]
    identical = 0
    logit_diffs: list[float] = []
    for t in range(trials):
        cands = [(f"id-{i}", str(photos[(i + t) % len(photos)])) for i in range(n)]
        query = queries[t % len(queries)]
        a = first.rerank(cands, text=query, with_reason=False)
        b = second.rerank(cands, text=query, with_reason=False)
        if not (a.reranked and b.reranked):
            raise RuntimeError(f"rerank fell back: {a.note or b.note}")
        identical += a.ids == b.ids
        thumbs = [_open_candidate(p, first.cell_size, *LIMITS) for _, p in cands]
        sheet = build_contact_sheet(thumbs, cell_size=first.cell_size).image
        inputs = base._to_model(base.build_inputs(first._messages(thumbs, sheet, query, None)))
        with torch.inference_mode():
            la = base.model(**inputs, logits_to_keep=1).logits[0, -1]
            lb = packed.model(**inputs, logits_to_keep=1).logits[0, -1]
        logit_diffs.append(float((la - lb).abs().max() / la.abs().max()))
    return {"trials": trials, "identical_rankings": identical, "max_rel_logit_diff": logit_diffs}


def packed_copy(vlm: Phi3VisionVLM, mode: str) -> Phi3VisionVLM:
    """A copy of ``vlm`` with its language model packed (``mode`` of
    :mod:`mmsearch.rerank.quantize`)."""
    model = copy.deepcopy(vlm.model)
    quantize_language_model(model, mode)  # type: ignore[arg-type]
    return Phi3VisionVLM(model, vlm.processor, f"{vlm.model_id}-{mode}")


def report_cpu(results: dict[str, Any], where: str) -> None:
    print(
        f"\nrerank phases, {where}; {results['layers_built']} of 32 decoder layers built, "
        "times extrapolated per layer to 32; CLIP-L complete\n"
        f"bound: float32 matmul {results['matmul_gflops']:.0f} GFLOP/s, copy bandwidth "
        f"{results['copy_gbytes_s']:.1f} GB/s, {results['step_weight_gbytes']:.1f} GB of "
        "weights read per decoding step\n"
    )
    rows = [
        [
            r["candidates"],
            r["num_crops"],
            f"{r['prompt_tokens']} ({r['image_tokens']})",
            r["clip_s"]["p50"],
            r["lm_prompt_s"]["p50"],
            f"{r['lm_prompt_s']['min']:.3g}..{r['lm_prompt_s']['p95']:.3g}",
            r["decode_step_s"]["p50"],
            r["ranking_tokens"],
            r["total_no_reason_s"],
            r["total_bound_s"],
            r["fraction_of_bound"],
        ]
        for r in results["rows"]
    ]
    print_table(
        [
            "cands",
            "crops",
            "prompt tok (image)",
            "CLIP s",
            "LM prompt s",
            "LM min..p95",
            "s/token",
            "rank tok",
            "total s",
            "bound s",
            "fraction",
        ],
        rows,
    )


def report_query_image(rows: list[dict[str, Any]], where: str) -> None:
    print(f"\nquery image, 9 candidates, {where}; seconds added to the rerank\n")
    print_table(
        [
            "crops",
            "rank prompt tok",
            "+inline tok",
            "inline +s",
            "caption prompt tok",
            "caption prompt s",
            "s/token",
            *(f"caption {k} tok s" for k in CAPTION_TOKENS),
        ],
        [
            [
                r["num_crops"],
                r["prompt_tokens"]["ranking"],
                r["prompt_tokens"]["ranking_inline"] - r["prompt_tokens"]["ranking"],
                r["inline_extra_s"],
                r["prompt_tokens"]["caption"],
                r["caption_prompt_s"],
                r["caption_step_s"],
                *(r["caption_extra_s"][str(k)] for k in CAPTION_TOKENS),
            ]
            for r in rows
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--device", default=None, help="default: cuda with --full, else cpu")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--layers", type=int, default=2, help="decoder layers built (CPU)")
    parser.add_argument("--num-crops", type=int, nargs="+", default=[1, 4, 9, 16])
    parser.add_argument("--candidates", type=int, nargs="+", default=[4, 9, 16])
    parser.add_argument("--decode-steps", type=int, default=4)
    parser.add_argument(
        "--quantize",
        nargs="+",
        default=["none"],
        choices=["none", "int8", "float16"],
        help="CPU: language model weights as stored (none) or packed; each against none",
    )
    parser.add_argument(
        "--query-image", action="store_true", help="CPU: cost of a query image, both ways"
    )
    parser.add_argument("--agreement-trials", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = args.device or ("cuda" if args.full else "cpu")
    cpu_phases = args.full and torch.device(device).type == "cpu"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        photos = make_photo_folder(tmp / "photos", 10)
        if cpu_phases:
            dtype = resolve_dtype("auto", torch.device("cpu"), accelerator=torch.bfloat16)
            text = FULL_TEXT | {"num_hidden_layers": args.layers}
            vlm = full_size_phi3v(tmp / "phi3v", device, dtype, text=text)
            where = f"Phi-3 Vision width (random weights), cpu, {str(dtype)[6:]}"
            results = {}
            for mode in dict.fromkeys(["none", *args.quantize]):
                run = vlm if mode == "none" else packed_copy(vlm, mode)
                label = where if mode == "none" else f"{where}, language model packed {mode}"
                phases = bench_cpu_phases(
                    run, photos, args.runs, args.candidates, args.num_crops, args.decode_steps
                )
                report_cpu(phases, label)
                if args.query_image:
                    phases["query_image"] = [
                        bench_query_image(run, photos, args.runs, 9, c) for c in args.num_crops
                    ]
                    report_query_image(phases["query_image"], label)
                if mode != "none":
                    phases["agreement"] = bench_agreement(vlm, run, photos, args.agreement_trials)
                    print(f"\nagreement with unpacked weights: {phases['agreement']}")
                    del run
                results[mode] = phases
            results["threads"] = torch.get_num_threads()
            results["loadavg_at_end"] = os.getloadavg()
            name = "rerank_latency_cpu"
        else:
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
