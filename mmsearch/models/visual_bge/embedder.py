"""Visualized BGE as an :class:`~mmsearch.embedding.ImageTextEmbedder`: the network, its
tokenizer and its exact preprocessing, created together."""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from mmsearch.errors import InvalidQueryError, ModelLoadError
from mmsearch.models import allocate_parameters, parameters_on_meta
from mmsearch.models.devices import resolve_device, resolve_dtype
from mmsearch.models.visual_bge.checkpoint import (
    ModelFiles,
    checkpoint_filter_fn,
    checkpoint_fingerprint,
    load_official_state_dict,
    resolve_model_files,
)
from mmsearch.models.visual_bge.config import (
    TIMM_MODEL_BY_TEXT_TYPE,
    VARIANTS,
    VISION_PREFIX,
    VisionConfig,
)
from mmsearch.models.visual_bge.model import TEXT_MODELS, VisualBGEModule
from mmsearch.models.visual_bge.preprocess import build_preprocess

log = logging.getLogger(__name__)


def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy every tensor in; any missing, unexpected or mis-shaped key is a
    :class:`ModelLoadError` naming them, never a silently half-random model."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(expected[k].shape) != tuple(state_dict[k].shape)
    )
    problems = []
    for label, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", mis_shaped),
    ):
        if keys:
            shown = ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
            problems.append(f"{len(keys)} {label}: {shown}")
    if problems:
        raise ModelLoadError("checkpoint does not match the architecture; " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=True)


def check_rope_tables(module: VisualBGEModule, state_dict: Mapping[str, torch.Tensor]) -> None:
    """The checkpoint stores the rotary tables it was trained with; timm recomputes them.
    They must agree, or the tower would silently attend with other positions."""
    sin, cos = module.visual.rope.get_embed().float().chunk(2, -1)
    for name, ours in (("freqs_cos", cos), ("freqs_sin", sin)):
        stored = state_dict[VISION_PREFIX + "rope." + name].float()
        if stored.shape != ours.shape or (stored - ours).abs().max().item() > 1e-4:
            raise ModelLoadError(
                f"the checkpoint's rotary table rope.{name} {tuple(stored.shape)} differs from "
                f"the EVA02 one for this tower {tuple(ours.shape)}"
            )


def _load_text_config(text_dir: Path):
    try:
        config = AutoConfig.from_pretrained(text_dir, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - malformed or unreadable config
        raise ModelLoadError(f"cannot read the text model config in {text_dir}: {exc}") from exc
    if config.model_type not in TEXT_MODELS:
        raise ModelLoadError(
            f"{text_dir}/config.json describes a {config.model_type!r} model; Visualized BGE "
            f"needs one of {', '.join(TEXT_MODELS)}"
        )
    return config


_SPM_FILE = "sentencepiece.bpe.model"
_VOCAB_FILES = ("tokenizer.json", "vocab.txt", _SPM_FILE)


def _require_tokenizer_builder(text_dir: Path) -> None:
    """A SentencePiece model without ``tokenizer.json`` (as Visualized BGE m3's text model
    can be copied) is converted by transformers only with the ``sentencepiece`` package;
    without it transformers falls back to a tiktoken reader and reports that ``tiktoken``
    is missing, which points the wrong way. Name the missing file instead."""
    if (text_dir / "tokenizer.json").is_file() or not (text_dir / _SPM_FILE).is_file():
        return
    if importlib.util.find_spec("sentencepiece") is not None:
        return
    raise ModelLoadError(
        f"{text_dir} has {_SPM_FILE} but no tokenizer.json: copy tokenizer.json of the text "
        "model there (for Visualized BGE m3: hf download BAAI/bge-m3 tokenizer.json "
        f"--local-dir {text_dir}), or install the sentencepiece package to build the "
        f"tokenizer from {_SPM_FILE}"
    )


def _load_tokenizer(text_dir: Path, vocab_size: int) -> PreTrainedTokenizerBase:
    if not any((text_dir / name).is_file() for name in _VOCAB_FILES):
        raise ModelLoadError(
            f"{text_dir} has no tokenizer vocabulary (one of {', '.join(_VOCAB_FILES)}); copy "
            "the tokenizer files of the text model there"
        )
    _require_tokenizer_builder(text_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(text_dir, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - missing or malformed tokenizer files
        raise ModelLoadError(f"cannot load the tokenizer in {text_dir}: {exc}") from exc
    if len(tokenizer) <= len(tokenizer.all_special_tokens):
        raise ModelLoadError(f"the tokenizer in {text_dir} has no vocabulary beyond its specials")
    if tokenizer.cls_token_id is None or tokenizer.pad_token_id is None:
        raise ModelLoadError(f"the tokenizer in {text_dir} has no [CLS] or padding token")
    if len(tokenizer) > vocab_size:
        raise ModelLoadError(
            f"the tokenizer in {text_dir} has {len(tokenizer)} tokens but the text model only "
            f"{vocab_size}"
        )
    tokenizer.padding_side = "right"
    return tokenizer


class VisualBGE:
    """Visualized BGE embedder (text, image, or image+text into one space).

    Text alone runs the BGE encoder as usual; an image alone is the image tokens
    between [CLS] and [SEP]; image+text puts the image tokens between [CLS] and the text.
    Each input gets the [CLS] state, L2-normalised.

    ``bfloat16`` on the CPU is mixed precision: matrix products run in bfloat16 under
    :func:`torch.autocast` (the linear layers' weights are stored in bfloat16, which is
    what autocast would cast them to on every call), while norms, softmax, the patch
    embedding and the residual stream stay float32. On CPUs with native bfloat16
    (AVX512-BF16, AMX) that is about twice as fast as float32 and closer to it (cosine
    >= 0.9999 on photos) than casting the whole model, which is also slower there; it is
    the default on such CPUs. Elsewhere ``dtype`` casts the weights.
    """

    def __init__(
        self,
        module: VisualBGEModule,
        tokenizer: PreTrainedTokenizerBase,
        model_id: str,
        device: torch.device,
        dtype: torch.dtype,
        batch_size: int = 16,
    ) -> None:
        self.autocast = device.type == "cpu" and dtype == torch.bfloat16
        weight_dtype, linear_dtype = storage_dtypes(device, dtype)
        self.module = module.to(device=device).eval()
        set_precision(self.module, weight_dtype, linear_dtype)
        self._input_dtype = weight_dtype
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.dim = module.hidden_size
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.image_size = module.vision_config.img_size
        self._preprocess: Callable[[Image.Image], torch.Tensor] = build_preprocess(self.image_size)
        self._tokenizer_max = int(min(tokenizer.model_max_length, 1_000_000))
        self._lock = threading.Lock()
        self._image_only_tokens: tuple[torch.Tensor, torch.Tensor] | None = None

    def __repr__(self) -> str:
        return (
            f"VisualBGE({self.model_id!r}, dim={self.dim}, device={self.device}, "
            f"dtype={self.dtype})"
        )

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL image (any mode) -> normalised float32 ``(3, S, S)`` tensor. Thread-safe."""
        return self._preprocess(image)

    def _pixels(self, images: Sequence[Image.Image | torch.Tensor]) -> torch.Tensor:
        tensors = []
        for i, image in enumerate(images):
            if isinstance(image, Image.Image):
                image = self._preprocess(image)
            if not isinstance(image, torch.Tensor):
                raise InvalidQueryError(f"image {i} is a {type(image).__name__}, not an image")
            if tuple(image.shape) != (3, self.image_size, self.image_size):
                raise InvalidQueryError(
                    f"image tensor {i} has shape {tuple(image.shape)}, expected "
                    f"(3, {self.image_size}, {self.image_size}) from preprocess()"
                )
            tensors.append(image)
        return torch.stack(tensors).to(device=self.device, dtype=self._input_dtype)

    def _tokens(self, texts: Sequence[str], with_image: bool) -> tuple[torch.Tensor, torch.Tensor]:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidQueryError(f"text {i} is a {type(text).__name__}, not a string")
        max_length = min(self._tokenizer_max, self.module.max_text_tokens(with_image))
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)

    def _image_only(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty text's tokens ([CLS] [SEP]) for ``n`` images, tokenised once."""
        if self._image_only_tokens is None:
            self._image_only_tokens = self._tokens([""], with_image=True)
        ids, mask = self._image_only_tokens
        return ids.expand(n, -1), mask.expand(n, -1)

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[Image.Image | torch.Tensor] | None = None,
        *,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Embed texts, images, or (image, text) pairs; float32 ``(n, dim)``, unit norm.

        Runs in chunks of ``batch_size`` (default: the embedder's); each text chunk is
        padded to its own longest text and truncated to what the model can take
        (512 tokens for BGE base).
        """
        if isinstance(texts, str):
            raise InvalidQueryError("texts must be a sequence of strings, not one string")
        if texts is None and images is None:
            raise InvalidQueryError("nothing to encode: give texts, images or both")
        if texts is not None and images is not None and len(texts) != len(images):
            raise InvalidQueryError(
                f"image+text pairs need as many texts as images ({len(texts)} vs {len(images)})"
            )
        n = len(texts) if texts is not None else len(images)  # type: ignore[arg-type]
        step = batch_size or self.batch_size
        if step < 1:
            raise InvalidQueryError(f"batch_size must be positive, got {step}")
        out = np.empty((n, self.dim), dtype=np.float32)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast)
        with self._lock, autocast:
            for start in range(0, n, step):
                stop = min(start + step, n)
                if images is None:
                    ids, mask = self._tokens(texts[start:stop], with_image=False)  # type: ignore[index]
                    reps = self.module.encode_text(ids, mask)
                else:
                    pixels = self._pixels(images[start:stop])
                    if texts is None:
                        ids, mask = self._image_only(stop - start)
                    else:
                        ids, mask = self._tokens(texts[start:stop], with_image=True)
                    reps = self.module.encode_fused(pixels, ids, mask)
                reps = torch.nn.functional.normalize(reps.float(), dim=-1)
                out[start:stop] = reps.cpu().numpy()
        return out


def storage_dtypes(device: torch.device, dtype: torch.dtype) -> tuple[torch.dtype, torch.dtype]:
    """The dtypes the weights are kept in for running in ``dtype`` on ``device``: (every
    other parameter, linear layers). bfloat16 on the CPU is mixed precision: float32 but
    for the linear layers' weights; anything else is one dtype throughout."""
    if device.type == "cpu" and dtype == torch.bfloat16:
        return torch.float32, torch.bfloat16
    return dtype, dtype


def set_precision(
    module: nn.Module, dtype: torch.dtype, linear_dtype: torch.dtype, *, buffers: bool = True
) -> None:
    """Linear layers' parameters in ``linear_dtype``, every other floating parameter (and,
    with ``buffers``, floating buffer) in ``dtype``; tensors already right are left alone,
    so no transient copy is made of them."""
    for layer in module.modules():
        target = linear_dtype if isinstance(layer, nn.Linear) else dtype
        for name, param in list(layer.named_parameters(recurse=False)):
            if param.is_floating_point() and param.dtype != target:
                converted = param.detach().to(target)
                setattr(layer, name, nn.Parameter(converted, requires_grad=param.requires_grad))
        for name, buffer in list(layer.named_buffers(recurse=False)) if buffers else []:
            if buffer.is_floating_point() and buffer.dtype != dtype:
                setattr(layer, name, buffer.to(dtype))


def build_module(
    files: ModelFiles,
    dtype: torch.dtype = torch.float32,
    linear_dtype: torch.dtype | None = None,
) -> tuple[VisualBGEModule, PreTrainedTokenizerBase]:
    """Read a checkpoint and its text files into a loaded module on the CPU, its
    parameters in ``dtype`` (the linear layers' in ``linear_dtype``, default ``dtype``;
    see :func:`storage_dtypes`), allocated in that precision and filled from the
    checkpoint once."""
    state = load_official_state_dict(files.checkpoint)
    vision = VisionConfig.from_state_dict(state)
    text_config = _load_text_config(files.text_dir)
    variant = VARIANTS.get(files.name)
    timm_model = variant.timm_model if variant else TIMM_MODEL_BY_TEXT_TYPE[text_config.model_type]
    with parameters_on_meta():
        module = VisualBGEModule(vision, text_config, timm_model)
    set_precision(module, dtype, linear_dtype or dtype, buffers=False)
    allocate_parameters(module)
    check_rope_tables(module, state)
    load_strict(module, checkpoint_filter_fn(state))
    tokenizer = _load_tokenizer(files.text_dir, int(text_config.vocab_size))
    return module, tokenizer


def create_embedder(
    name_or_path: str | Path = "base_en_v1.5",
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    *,
    batch_size: int = 16,
    cache_dir: Path | None = None,
) -> VisualBGE:
    """Load Visualized BGE with its preprocessing.

    ``name_or_path``: a variant name (``base_en_v1.5``, ``m3``), fetched from the Hugging
    Face hub into its cache on first use, or a local directory holding the ``.pth``
    checkpoint with the text model's ``config.json`` and tokenizer files. Raises
    :class:`ModelLoadError` when the files cannot be had or do not fit together.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device, accelerator=torch.float16)
    files = resolve_model_files(name_or_path, cache_dir=cache_dir)
    module, tokenizer = build_module(files, *storage_dtypes(torch_device, torch_dtype))
    model_id = f"visualized-bge/{files.name}@{checkpoint_fingerprint(files.checkpoint)}"
    log.info("loaded %s from %s on %s (%s)", model_id, files.checkpoint, torch_device, torch_dtype)
    return VisualBGE(module, tokenizer, model_id, torch_device, torch_dtype, batch_size=batch_size)
