"""Vision-language models behind one small interface, chosen by configuration.

The reranker needs only three things from a model: turn chat messages holding images
and text into model inputs, generate under a logits processor with a deadline, and
expose its tokenizer (the constrained decoder indexes its vocabulary). Phi-3 Vision
(through :mod:`mmsearch.models.phi3v`) and the ``transformers``-native VLMs loaded
with ``AutoProcessor`` + ``AutoModelForImageTextToText`` (Qwen2-VL / Qwen2.5-VL,
SmolVLM / Idefics3, Phi-4-multimodal, ...) all fit it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

import torch
from PIL import Image
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from mmsearch.config import Settings
from mmsearch.errors import ConfigurationError, ModelLoadError
from mmsearch.models import MODEL_BUILD_LOCK
from mmsearch.models.devices import resolve_device, resolve_dtype

logger = logging.getLogger(__name__)

Backend = Literal["phi3v", "transformers"]

PHI3V_MODEL_TYPES = frozenset({"phi3_v"})


class ContentPart(TypedDict, total=False):
    """One piece of a message: ``{"type": "text", "text": ...}`` or
    ``{"type": "image", "image": PIL.Image}`` (the ``transformers`` chat format)."""

    type: Literal["text", "image"]
    text: str
    image: Image.Image


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: list[ContentPart]


@dataclass(frozen=True, slots=True)
class Generation:
    token_ids: list[int]
    """Newly generated tokens, end-of-sequence included when the model stopped on it."""
    timed_out: bool


@runtime_checkable
class VisionLanguageModel(Protocol):
    """What the reranker needs from a vision-language model."""

    model_id: str
    tokenizer: Any
    """A ``transformers`` tokenizer: ``get_vocab``, ``convert_tokens_to_string``,
    ``decode``."""
    eos_token_id: int
    """The token that ends an answer; the constrained decoder allows it only once the
    answer is complete."""
    supports_multiple_images: bool

    def build_inputs(self, messages: Sequence[ChatMessage]) -> Mapping[str, Any]: ...

    def generate(
        self,
        inputs: Mapping[str, Any],
        *,
        max_new_tokens: int,
        logits_processor: Any | None = None,
        deadline: float | None = None,
    ) -> Generation:
        """Greedy decoding. ``deadline`` is a ``time.monotonic()`` value checked after
        every token; past it, generation stops and ``timed_out`` is set."""
        ...


class DeadlineCriteria(StoppingCriteria):
    """Stops generation once ``time.monotonic()`` passes the deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
        if time.monotonic() >= self.deadline:
            self.fired = True
        return torch.full(
            (input_ids.shape[0],), self.fired, dtype=torch.bool, device=input_ids.device
        )


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    ids = [int(i) for i in ids if i is not None]
    if tokenizer.eos_token_id is not None and int(tokenizer.eos_token_id) not in ids:
        ids.append(int(tokenizer.eos_token_id))
    if not ids:
        raise ModelLoadError("the reranker model defines no end-of-sequence token")
    return ids


class TransformersVLM:
    """A ``transformers`` model with a processor whose chat template takes images."""

    supports_multiple_images = True
    supports_batch_generation = True
    """:meth:`generate_batch` answers several conversations in one padded batch."""

    def __init__(self, model: Any, processor: Any, model_id: str) -> None:
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self._eos_ids = _eos_ids(model, self.tokenizer)
        self.eos_token_id = self._eos_ids[0]

    @classmethod
    def load(cls, name_or_path: str, device: torch.device, dtype: torch.dtype) -> TransformersVLM:
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        try:
            processor = AutoProcessor.from_pretrained(name_or_path)
            model_type = read_model_type(name_or_path)
            # Some multimodal models (Phi-4-multimodal) are registered as causal LMs only.
            auto = (
                AutoModelForCausalLM
                if model_type is not None
                and model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
                else AutoModelForImageTextToText
            )
            with MODEL_BUILD_LOCK:
                model = auto.from_pretrained(name_or_path, dtype=dtype)
        except (OSError, ValueError, KeyError) as e:
            raise ModelLoadError(
                f"cannot load the reranker model {name_or_path!r}: {e}. Set "
                "MMSEARCH_RERANK_MODEL to a Hugging Face model name (downloaded on first "
                "use) or to a local directory holding its config.json, weights and "
                "processor files."
            ) from e
        return cls(model.to(device).eval(), processor, name_or_path)

    def build_inputs(self, messages: Sequence[ChatMessage]) -> Mapping[str, Any]:
        return self.processor.apply_chat_template(
            list(messages),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )

    def _to_model(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        device = self.model.device
        dtype = self.model.dtype
        moved: dict[str, Any] = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device)
                if value.is_floating_point():
                    value = value.to(dtype)
            moved[key] = value
        return moved

    @torch.inference_mode()
    def generate(
        self,
        inputs: Mapping[str, Any],
        *,
        max_new_tokens: int,
        logits_processor: Any | None = None,
        deadline: float | None = None,
    ) -> Generation:
        model_inputs = self._to_model(inputs)
        prompt_len = int(model_inputs["input_ids"].shape[1])
        stop = DeadlineCriteria(deadline) if deadline is not None else None
        processors = LogitsProcessorList([logits_processor] if logits_processor else [])
        out = self.model.generate(
            **model_inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([stop] if stop else []),
            eos_token_id=self._eos_ids,
            pad_token_id=self.tokenizer.pad_token_id or self.eos_token_id,
        )
        sequence = out[0] if isinstance(out, torch.Tensor) else out.sequences[0]
        return Generation(
            token_ids=[int(t) for t in sequence[prompt_len:]],
            timed_out=bool(stop and stop.fired),
        )

    @torch.inference_mode()
    def generate_batch(
        self, conversations: Sequence[Sequence[ChatMessage]], *, max_new_tokens: int
    ) -> list[list[int]]:
        """Greedy answers to several conversations at once (prompts padded on the left),
        each cut at its first end-of-sequence token."""
        tokenizer = self.tokenizer
        previous = getattr(tokenizer, "padding_side", "right")
        tokenizer.padding_side = "left"
        try:
            inputs = self.processor.apply_chat_template(
                [list(c) for c in conversations],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"padding": True},
            )
        finally:
            tokenizer.padding_side = previous
        model_inputs = self._to_model(inputs)
        prompt_len = int(model_inputs["input_ids"].shape[1])
        out = self.model.generate(
            **model_inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self._eos_ids,
            pad_token_id=tokenizer.pad_token_id or self.eos_token_id,
        )
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        answers = []
        for sequence in sequences:
            ids = [int(t) for t in sequence[prompt_len:]]
            cut = next((i for i, t in enumerate(ids) if t in self._eos_ids), len(ids))
            answers.append(ids[:cut])
        return answers


class Phi3VisionVLM(TransformersVLM):
    """Phi-3 / Phi-3.5 Vision through :mod:`mmsearch.models.phi3v`; its processor takes
    the same chat messages and numbers the images ``<|image_1|>``, ``<|image_2|>`` ..."""

    supports_batch_generation = False
    """Its processor takes one conversation at a time."""

    @classmethod
    def load(cls, name_or_path: str, device: torch.device, dtype: torch.dtype) -> Phi3VisionVLM:
        try:
            from mmsearch.models.phi3v import load_phi3v
        except ImportError as e:
            raise ModelLoadError(
                "Phi-3 Vision support (mmsearch.models.phi3v) is not available in this "
                "installation; set MMSEARCH_RERANK_MODEL to a transformers-native VLM "
                "(e.g. Qwen/Qwen2.5-VL-3B-Instruct) instead"
            ) from e
        model, processor = load_phi3v(name_or_path, device, dtype)
        return cls(model, processor, name_or_path)

    def build_inputs(self, messages: Sequence[ChatMessage]) -> Mapping[str, Any]:
        return self.processor(messages=list(messages))


def read_model_type(name_or_path: str) -> str | None:
    """``model_type`` from the model's config.json: a local directory, or the Hugging
    Face cache / hub. ``None`` when it cannot be read (offline and not cached)."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        config = local / "config.json"
        if not config.is_file():
            raise ModelLoadError(f"reranker model directory {local} has no config.json")
        return json.loads(config.read_text()).get("model_type")
    try:
        from huggingface_hub import hf_hub_download

        from mmsearch.hub import hub_reachable

        offline = not hub_reachable()
        path = hf_hub_download(name_or_path, "config.json", local_files_only=offline)
    except Exception as e:  # offline, gated, unknown repo: decided by the name below
        logger.debug("cannot read config.json of %s: %s", name_or_path, e)
        return None
    return json.loads(Path(path).read_text()).get("model_type")


def detect_backend(name_or_path: str) -> Backend:
    model_type = read_model_type(name_or_path)
    if model_type is not None:
        return "phi3v" if model_type in PHI3V_MODEL_TYPES else "transformers"
    lowered = name_or_path.lower()
    if "phi-3-vision" in lowered or "phi-3.5-vision" in lowered:
        return "phi3v"
    return "transformers"


_LOADED: dict[tuple[str, str, str, str], VisionLanguageModel] = {}
_LOAD_LOCK = threading.Lock()
_MODEL_LOCKS: dict[int, threading.Lock] = {}


def model_lock(model: VisionLanguageModel) -> threading.Lock:
    """One lock per loaded model, so the reranker and the captioner that share it take
    turns (one generation at a time keeps memory bounded)."""
    with _LOAD_LOCK:
        return _MODEL_LOCKS.setdefault(id(model), threading.Lock())


def _half_precision(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def load_vlm(settings: Settings) -> VisionLanguageModel:
    """The configured reranker model, loaded on first use and shared by the process."""
    device = resolve_device(settings.rerank_device)
    backend = settings.rerank_backend
    if backend == "auto":
        backend = detect_backend(settings.rerank_model)
    key = (settings.rerank_model, backend, device, settings.dtype)
    with _LOAD_LOCK:
        if key not in _LOADED:
            dtype = resolve_dtype(settings.dtype, device, accelerator=_half_precision(device))
            loader = {"phi3v": Phi3VisionVLM, "transformers": TransformersVLM}.get(backend)
            if loader is None:
                raise ConfigurationError(f"unknown rerank backend {backend!r}")
            started = time.monotonic()
            _LOADED[key] = loader.load(settings.rerank_model, device, dtype)
            logger.info(
                "loaded reranker %s (%s) on %s in %.1fs",
                settings.rerank_model,
                backend,
                device,
                time.monotonic() - started,
            )
        return _LOADED[key]
