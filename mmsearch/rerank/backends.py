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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
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
    prompt_tokens: int = 0
    prompt_s: float | None = None
    """Seconds to the first new token: the prompt pass (image encoder included)."""
    decode_s: float | None = None
    """Seconds from the first new token to the last."""


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
    """Stops generation once ``time.monotonic()`` passes the deadline; also notes when
    each token came (the first one closes the prompt pass)."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.fired = False
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
        now = time.monotonic()
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now
        if self.deadline is not None and now >= self.deadline:
            self.fired = True
        return torch.full(
            (input_ids.shape[0],), self.fired, dtype=torch.bool, device=input_ids.device
        )


class PastDeadline(Exception):  # noqa: N818 - a signal, caught inside generate
    """Raised between two layers of a forward pass once the deadline has passed."""


@contextmanager
def layer_deadline(model: torch.nn.Module, deadline: float | None) -> Iterator[None]:
    """Check the deadline before every layer of every layer stack (decoder, vision
    encoder): a prompt pass of minutes on a CPU stops within one layer of the deadline
    instead of running to its end. Stopping criteria only run between tokens."""
    if deadline is None:
        yield
        return

    def check(*_: Any) -> None:
        if time.monotonic() >= deadline:
            raise PastDeadline

    handles = [
        layer.register_forward_pre_hook(check)
        for stack in model.modules()
        if isinstance(stack, torch.nn.ModuleList)
        for layer in stack
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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
    def load(
        cls,
        name_or_path: str,
        device: torch.device,
        dtype: torch.dtype,
        *,
        num_crops: int | None = None,
        memory_check: bool = True,
    ) -> TransformersVLM:
        """``num_crops`` applies to Phi-3 Vision only."""
        device = torch.device(device)
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        try:
            processor = AutoProcessor.from_pretrained(name_or_path)
            model_type = read_model_type(name_or_path)
            local = Path(name_or_path).expanduser()
            if memory_check and local.is_dir():
                _check_checkpoint_memory(local, device, dtype)
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
        clock = DeadlineCriteria(deadline)
        criteria = [clock]
        extra = getattr(logits_processor, "stopping_criterion", None)
        if extra is not None:  # e.g. stop as soon as the ranking is closed
            criteria.append(extra)
        processors = LogitsProcessorList([logits_processor] if logits_processor else [])
        started = time.monotonic()
        try:
            with layer_deadline(self.model, deadline):
                out = self.model.generate(
                    **model_inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    logits_processor=processors,
                    stopping_criteria=StoppingCriteriaList(criteria),
                    eos_token_id=self._eos_ids,
                    pad_token_id=self.tokenizer.pad_token_id or self.eos_token_id,
                )
        except PastDeadline:
            return Generation(token_ids=[], timed_out=True, prompt_tokens=prompt_len)
        sequence = out[0] if isinstance(out, torch.Tensor) else out.sequences[0]
        first, last = clock.first_token_at, clock.last_token_at
        return Generation(
            token_ids=[int(t) for t in sequence[prompt_len:]],
            timed_out=clock.fired,
            prompt_tokens=prompt_len,
            prompt_s=None if first is None else first - started,
            decode_s=None if first is None or last is None else last - first,
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
    def load(
        cls,
        name_or_path: str,
        device: torch.device,
        dtype: torch.dtype,
        *,
        num_crops: int | None = None,
        memory_check: bool = True,
    ) -> Phi3VisionVLM:
        try:
            from mmsearch.models.phi3v import load_phi3v
            from mmsearch.models.phi3v.checkpoint import resolve_checkpoint_dir
        except ImportError as e:
            raise ModelLoadError(
                "Phi-3 Vision support (mmsearch.models.phi3v) is not available in this "
                "installation; set MMSEARCH_RERANK_MODEL to a transformers-native VLM "
                "(e.g. Qwen/Qwen2.5-VL-3B-Instruct) instead"
            ) from e
        device = torch.device(device)
        if memory_check:
            _check_checkpoint_memory(resolve_checkpoint_dir(name_or_path), device, dtype)
        model, processor = load_phi3v(name_or_path, device, dtype, num_crops=num_crops)
        return cls(model, processor, name_or_path)

    def build_inputs(self, messages: Sequence[ChatMessage]) -> Mapping[str, Any]:
        return self.processor(messages=list(messages))


def _check_checkpoint_memory(directory: Path, device: torch.device, dtype: torch.dtype) -> None:
    from mmsearch.rerank.budget import check_memory, checkpoint_weight_bytes

    config = directory / "config.json"
    stored = json.loads(config.read_text()).get("torch_dtype") if config.is_file() else None
    needed = checkpoint_weight_bytes(directory, dtype, stored)
    check_memory(needed, device, f"the reranker {directory.name} in {str(dtype)[6:]}")


def default_num_crops(device: torch.device) -> int | None:
    """Contact-sheet crops when ``rerank_num_crops`` is unset: the checkpoint's own value
    on accelerators; 1 on a CPU, where each prompt token of the full Phi-3 Vision costs
    about 60 ms in float32 on two cores (bench/README.md): 313 image tokens instead of
    2,509, the only value that brings a 9-candidate rerank near a minute there."""
    return CPU_NUM_CROPS if device.type == "cpu" else None


CPU_NUM_CROPS = 1


def read_model_type(name_or_path: str) -> str | None:
    """``model_type`` from the model's config.json: a local directory, or the Hugging
    Face cache / hub. ``None`` when it cannot be read (offline and not cached)."""
    config = _read_config(name_or_path)
    return None if config is None else config.get("model_type")


def stored_dtype(name_or_path: str) -> torch.dtype:
    """The precision the checkpoint's weights are stored in (float32 when unsaid)."""
    config = _read_config(name_or_path) or {}
    stored = config.get("torch_dtype") or config.get("dtype")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(str(stored), torch.float32)


def _read_config(name_or_path: str) -> dict[str, Any] | None:
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        config = local / "config.json"
        if not config.is_file():
            raise ModelLoadError(f"reranker model directory {local} has no config.json")
        return json.loads(config.read_text())
    try:
        from huggingface_hub import hf_hub_download

        from mmsearch.hub import hub_reachable

        offline = not hub_reachable()
        path = hf_hub_download(name_or_path, "config.json", local_files_only=offline)
    except Exception as e:  # offline, gated, unknown repo: decided by the name below
        logger.debug("cannot read config.json of %s: %s", name_or_path, e)
        return None
    return json.loads(Path(path).read_text())


def detect_backend(name_or_path: str) -> Backend:
    model_type = read_model_type(name_or_path)
    if model_type is not None:
        return "phi3v" if model_type in PHI3V_MODEL_TYPES else "transformers"
    lowered = name_or_path.lower()
    if "phi-3-vision" in lowered or "phi-3.5-vision" in lowered:
        return "phi3v"
    return "transformers"


_LOADED: dict[tuple[Any, ...], VisionLanguageModel] = {}
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
    num_crops = settings.rerank_num_crops or default_num_crops(device)
    quantize = settings.rerank_quantize
    key = (settings.rerank_model, backend, device, settings.dtype, num_crops, quantize)
    with _LOAD_LOCK:
        if key not in _LOADED:
            dtype = resolve_dtype(settings.dtype, device, accelerator=_half_precision(device))
            load_dtype = dtype
            if quantize != "none":
                from mmsearch.rerank.quantize import check_target

                check_target(quantize, device, dtype)
                # Packed straight from the checkpoint's own precision: the float32 copy
                # of the whole model never exists, so the memory check counts 2 bytes a
                # weight, not 4 (a 16 GB machine can load Phi-3 Vision this way).
                load_dtype = stored_dtype(settings.rerank_model)
            loader = {"phi3v": Phi3VisionVLM, "transformers": TransformersVLM}.get(backend)
            if loader is None:
                raise ConfigurationError(f"unknown rerank backend {backend!r}")
            started = time.monotonic()
            vlm = loader.load(
                settings.rerank_model,
                device,
                load_dtype,
                num_crops=num_crops,
                memory_check=settings.rerank_memory_check,
            )
            if quantize != "none":
                from mmsearch.rerank.quantize import quantize_language_model

                quantize_language_model(vlm.model, quantize)
            _LOADED[key] = vlm
            logger.info(
                "loaded reranker %s (%s) on %s in %.1fs%s",
                settings.rerank_model,
                backend,
                device,
                time.monotonic() - started,
                "" if quantize == "none" else f", language model packed in {quantize}",
            )
        return _LOADED[key]
