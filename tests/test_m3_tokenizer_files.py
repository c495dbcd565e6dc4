"""A Visualized BGE m3 directory copied with ``sentencepiece.bpe.model`` but without
``tokenizer.json``: the error names the missing file (transformers' own fallback blames a
missing ``tiktoken``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mmsearch.errors import ModelLoadError
from mmsearch.models.visual_bge import create_embedder
from mmsearch.testing.tiny import write_tiny_visual_bge


def _write_sentencepiece_model(path: Path) -> None:
    """A tiny unigram SentencePiece model, written with the protobuf schema transformers
    ships (no sentencepiece package needed)."""
    from transformers.utils import sentencepiece_model_pb2_new as spm

    model = spm.ModelProto()
    for piece, kind in (("<unk>", 2), ("<s>", 3), ("</s>", 3)):
        entry = model.pieces.add()
        entry.piece, entry.score, entry.type = piece, 0.0, kind
    for piece in ("▁a", "▁cat", "▁red", "a", "c", "t", "r", "e", "d", "▁"):
        entry = model.pieces.add()
        entry.piece, entry.score, entry.type = piece, -1.0, 1
    model.trainer_spec.model_type = 1
    model.trainer_spec.unk_id, model.trainer_spec.bos_id, model.trainer_spec.eos_id = 0, 1, 2
    path.write_bytes(model.SerializeToString())


@pytest.fixture
def m3_style_dir(tmp_path: Path) -> Path:
    directory = write_tiny_visual_bge(tmp_path / "m3")
    for name in ("tokenizer.json", "vocab.txt"):
        (directory / name).unlink(missing_ok=True)
    _write_sentencepiece_model(directory / "sentencepiece.bpe.model")
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512})
    )
    return directory


@pytest.mark.skipif(
    importlib.util.find_spec("sentencepiece") is not None,
    reason="with sentencepiece installed transformers builds the tokenizer",
)
def test_missing_tokenizer_json_is_named(m3_style_dir: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        create_embedder(str(m3_style_dir), device="cpu", dtype="float32")
    message = str(caught.value)
    assert "no tokenizer.json" in message and "sentencepiece.bpe.model" in message
    assert "hf download BAAI/bge-m3 tokenizer.json" in message
    assert "tiktoken" not in message
