"""Phi-3 Vision prompts: chat template, image placeholders, tokenisation."""

from __future__ import annotations

import pytest
from PIL import Image
from skimage import data

from mmsearch.errors import InvalidQueryError
from mmsearch.models.phi3v import render_chat
from mmsearch.testing.tiny_phi3v import CHAT_TEMPLATE


def test_chat_messages_render_like_the_official_template(tiny_phi3v) -> None:
    _, proc = tiny_phi3v
    img = Image.fromarray(data.astronaut())
    messages = [
        {"role": "system", "content": "Rank images."},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": img},
                {"type": "image", "image": img},
                {"type": "text", "text": 'Which fits "a man"?'},
            ],
        },
    ]
    text, images = render_chat(messages)
    as_strings = [
        {"role": "system", "content": "Rank images."},
        {"role": "user", "content": '<|image_1|>\n<|image_2|>\nWhich fits "a man"?'},
    ]
    expected = proc.tokenizer.apply_chat_template(
        as_strings, chat_template=CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True
    )
    assert text == expected
    assert images == [img, img]


def test_image_placeholder_expands_to_its_token_count_and_bos_follows(tiny_phi3v) -> None:
    _, proc = tiny_phi3v
    img = Image.fromarray(data.coffee())
    inputs = proc(
        messages=[
            {
                "role": "user",
                "content": [{"type": "image", "image": img}, {"type": "text", "text": "Describe."}],
            }
        ]
    )
    ids = inputs["input_ids"][0].tolist()
    n = proc.image_processor.num_image_tokens(*img.size)
    first = ids.index(-1)
    assert ids[first : first + n] == [-1] * n
    assert ids.count(-1) == n
    bos = proc.tokenizer.bos_token_id
    assert ids[0] == bos and ids[first + n] == bos
    assert inputs["pixel_values"].shape[:2] == (1, proc.image_processor.num_crops + 1)


def test_text_only_prompt_starts_with_bos_and_has_no_pixels(tiny_phi3v) -> None:
    _, proc = tiny_phi3v
    inputs = proc("<|user|>\nHi<|end|>\n<|assistant|>\n")
    assert inputs["input_ids"][0, 0].item() == proc.tokenizer.bos_token_id
    assert "pixel_values" not in inputs


def test_image_tags_must_match_the_images(tiny_phi3v) -> None:
    _, proc = tiny_phi3v
    img = Image.fromarray(data.astronaut())
    with pytest.raises(InvalidQueryError, match="image tags"):
        proc("<|user|>\n<|image_2|>\nHi<|end|>\n", [img])
    with pytest.raises(InvalidQueryError, match="image tags"):
        proc("<|user|>\nHi<|end|>\n", [img])


def test_tiny_tokenizer_round_trips_json(tiny_phi3v) -> None:
    _, proc = tiny_phi3v
    text = '{"ranking": [3, 1, 2], "why": "A-z 0-9 !?"}'
    ids = proc.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert proc.tokenizer.unk_token_id not in ids
    assert proc.decode(ids) == text
