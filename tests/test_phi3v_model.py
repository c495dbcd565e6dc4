"""Phi-3 Vision model: generation with images, agreement with the upstream code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data
from transformers import LogitsProcessor, LogitsProcessorList

from mmsearch.models.phi3v import load_phi3v
from mmsearch.testing.tiny_phi3v import write_tiny_phi3v

UPSTREAM = Path(__file__).parent / "data" / "phi3v_upstream_tiny.json"


def _inputs(proc, image: Image.Image, text: str = "What is this?"):
    return proc(
        messages=[
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": text}],
            }
        ]
    )


def test_generate_produces_new_tokens_for_a_prompt_with_an_image(tiny_phi3v) -> None:
    model, proc = tiny_phi3v
    inputs = _inputs(proc, Image.fromarray(data.astronaut()))
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False, eos_token_id=None)
    prompt_len = inputs["input_ids"].shape[1]
    assert out.shape == (1, prompt_len + 5)
    assert (out[0, prompt_len:] >= 0).all()


class _Force(LogitsProcessor):
    def __init__(self, token: int) -> None:
        self.token = token

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.token] = 0
        return forced


def test_generate_applies_standard_logits_processors(tiny_phi3v) -> None:
    model, proc = tiny_phi3v
    inputs = _inputs(proc, Image.fromarray(data.coffee()))
    brace = proc.tokenizer.convert_tokens_to_ids("{")
    out = model.generate(
        **inputs,
        max_new_tokens=3,
        eos_token_id=None,
        logits_processor=LogitsProcessorList([_Force(brace)]),
    )
    assert out[0, inputs["input_ids"].shape[1] :].tolist() == [brace] * 3


def test_image_content_changes_the_logits(tiny_phi3v) -> None:
    model, proc = tiny_phi3v
    with torch.no_grad():
        a = model(**_inputs(proc, Image.fromarray(data.astronaut()))).logits[0, -1]
        b = model(**_inputs(proc, Image.fromarray(data.chelsea()))).logits[0, -1]
    assert not torch.allclose(a, b, atol=1e-3)


def test_cached_decoding_matches_a_full_forward(tiny_phi3v) -> None:
    model, proc = tiny_phi3v
    inputs = _inputs(proc, Image.fromarray(data.astronaut()))
    with torch.no_grad():
        first = model(**inputs, use_cache=True)
        nxt = first.logits[0, -1].argmax().view(1, 1)
        step = model.language_model(
            input_ids=nxt, cache=first.past_key_values, use_cache=True
        ).logits[0, -1]
        ids = torch.cat([inputs["input_ids"], nxt], dim=1)
        full = model(
            ids, pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"]
        ).logits[0, -1]
    assert torch.allclose(step, full, atol=1e-4)


@pytest.fixture(scope="module")
def full_tile_model(tmp_path_factory: pytest.TempPathFactory):
    ckpt = write_tiny_phi3v(tmp_path_factory.mktemp("phi3v_full"), seed=0, full_size_tiles=True)
    return load_phi3v(ckpt, device="cpu", dtype="float32")


@pytest.mark.parametrize("case", ["astronaut", "rgba"])
def test_matches_recorded_upstream_outputs(full_tile_model, case: str) -> None:
    """Recorded from the upstream remote code on transformers 4.48 (fp32, eager) for the
    same tiny checkpoint (336 px tiles, as the upstream code requires)."""
    import numpy as np

    ref = json.loads(UPSTREAM.read_text())
    model, proc = full_tile_model
    if case == "astronaut":
        image = Image.fromarray(data.astronaut())
    else:
        rgb = data.chelsea()
        alpha = np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None, :].repeat(rgb.shape[0], 0)
        image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    inputs = proc(ref["prompt"], [image])
    exp = ref[case]
    assert inputs["input_ids"][0].tolist() == exp["input_ids"]
    assert inputs["image_sizes"].tolist() == exp["image_sizes"]
    pv = inputs["pixel_values"].double()
    assert pv.sum().item() == pytest.approx(exp["pixel_sum"], rel=1e-6, abs=1e-3)
    assert pv.abs().sum().item() == pytest.approx(exp["pixel_abs_sum"], rel=1e-6)
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    assert (logits - torch.tensor(exp["last_logits"])).abs().max().item() < 1e-4
    if case == "astronaut":
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=None)
        assert out[0, inputs["input_ids"].shape[1] :].tolist() == exp["greedy_12"]
