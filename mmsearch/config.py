"""Configuration: one settings object, read once from ``MMSEARCH_*`` variables and passed down."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("mmsearch", appauthor=False))


class Settings(BaseSettings):
    """Every knob mmsearch has. Environment variables are the field names upper-cased,
    prefixed with ``MMSEARCH_`` (``MMSEARCH_MILVUS_URI``, ``MMSEARCH_BATCH_SIZE``, ...)."""

    model_config = SettingsConfigDict(env_prefix="MMSEARCH_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    """Where the default Milvus Lite file and other local state live."""

    milvus_uri: str = ""
    """A Milvus Lite file path (default: ``<data_dir>/mmsearch.db``) or a server URI
    such as ``http://localhost:19530``."""

    milvus_token: str | None = None
    """Token for a Milvus server (``user:password`` or an API key)."""

    collection: str = "images"

    embed_model: str = "base_en_v1.5"
    """Visualized BGE variant (``base_en_v1.5`` or ``m3``) or a local directory holding
    its checkpoint, the text model's ``config.json`` and tokenizer files."""

    device: str = "auto"
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:1``, ``mps``."""

    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """``auto``: half precision on a GPU; bfloat16 on a CPU with native bfloat16
    (AVX512-BF16, AMX), float32 on other CPUs. ``bfloat16`` on the CPU is mixed precision
    for the embedder (bfloat16 matrix products, float32 norms and residual stream): about
    twice as fast as float32 on such CPUs, cosine >= 0.9999 to float32. The reranker casts
    its weights. ``float32`` for full precision."""

    batch_size: int = Field(default=16, ge=1, le=4096)

    decode_workers: int = Field(default=4, ge=1, le=64)
    """Threads decoding images while the model embeds the previous batch."""

    max_image_pixels: int = Field(default=100_000_000, ge=1)
    """Images with more pixels are refused before decoding (decompression bombs)."""

    max_image_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    """Image files (and query images) larger than this many bytes are refused."""

    max_top_k: int = Field(default=1000, ge=1, le=16384)
    """Upper bound on ``top_k`` for a search."""

    max_query_chars: int = Field(default=4096, ge=1, le=1_000_000)
    """Longest query text accepted, in characters."""

    max_index_files: int = Field(default=100_000, ge=1)
    """Most image files one index call may take (a folder walk stops past it)."""

    index_timeout_s: float | None = Field(default=None, gt=0)
    """An indexing run stops between batches after this many seconds (its report says
    ``timed_out``; run it again to continue). Unset: no limit."""

    search_timeout_s: float = Field(default=120.0, gt=0)
    """The MCP server answers a search, stats or remove call that takes longer with an
    error (the work itself finishes in the background)."""

    http_token: str | None = None
    """Bearer token the HTTP transport requires (``Authorization: Bearer <token>``).
    Unset: no authentication (only allowed on a loopback address)."""

    http_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Extra ``Host`` header values the HTTP transport accepts besides
    ``127.0.0.1:*``, ``localhost:*`` and ``[::1]:*`` (``host:port`` or ``host:*``)."""

    http_allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Extra browser ``Origin`` values the HTTP transport accepts besides the loopback
    ones (``http://127.0.0.1:*``, ...). Requests without an Origin are accepted."""

    http_max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Largest HTTP request body; larger ones get 413 before they are read."""

    milvus_index_type: str = "FLAT"
    """Vector index of new collections (``FLAT`` is exact; ``IVF_FLAT``, ``HNSW``, ``AUTOINDEX``
    where the Milvus deployment supports them). Existing collections keep their index."""

    milvus_index_params: dict[str, int | float | str] = Field(default_factory=dict)
    """Build parameters of that index, as JSON (``{"nlist": 128}``)."""

    milvus_search_params: dict[str, int | float | str] = Field(default_factory=dict)
    """Search parameters passed with every query, as JSON (``{"nprobe": 16}``)."""

    milvus_flush: Literal["auto", "end", "batch", "never"] = "auto"
    """When indexing asks Milvus to flush: once at the end of a run (and on cancel), after
    every batch, or never (leave it to Milvus). ``auto``: ``end`` for Milvus Lite,
    ``never`` for a server."""

    allowed_roots: Annotated[list[Path] | None, NoDecode] = None
    """Folders the MCP server may read and index (``MMSEARCH_ALLOWED_ROOTS``: paths
    separated by ``os.pathsep``, or a JSON list). Unset: only the roots the MCP client
    shares; with neither, every path is refused."""

    rerank_model: str = "microsoft/Phi-3-vision-128k-instruct"
    """Vision-language model that reranks hits: a Hugging Face name (fetched on first
    use) or a local directory. Phi-3 Vision, or any model ``AutoModelForImageTextToText``
    loads (Qwen2.5-VL, SmolVLM, Phi-4-multimodal, ...)."""

    rerank_backend: Literal["auto", "phi3v", "transformers"] = "auto"
    """``auto``: decided by ``model_type`` in the model's config.json."""

    rerank_device: str = "auto"
    """Device of the reranker, independent of the embedder's ``device``."""

    rerank_timeout_s: float = Field(default=120.0, gt=0)
    """Bound on a whole rerank: reading the files, the prompt pass (checked between layers)
    and decoding. A rerank estimated not to fit returns at once; past the bound, one
    returns. Either way the retrieval order comes back with ``reranked=False`` and a note."""

    rerank_num_crops: int | None = Field(default=None, ge=1, le=64)
    """Phi-3 Vision: 336 px crops the contact sheet is cut into (HD transform
    ``num_crops``); the prompt holds about 144 tokens per crop, plus 144 for the whole
    sheet. Unset: the checkpoint's own value (16) on a GPU, 1 on a CPU (a 9-candidate
    sheet then shows each candidate at about 107 px instead of 256; 4 crops: 215 px).
    Square sheets use 1, 4, 9 or 16 crops."""

    rerank_with_reason: bool = True
    """Ask the reranker for a one-line reason after the ranking. Off: decoding stops as
    soon as the ranking is closed (fewer tokens: faster, most of all on a CPU)."""

    rerank_quantize: Literal["none", "int8", "float16"] = "none"
    """Pack the reranker's language model for a CPU (float32 only): ``int8`` weights
    with activations quantized per call (about 4x fewer bytes per decoding step, faster
    prompt pass), or ``float16`` weights (half the bytes, closer to float32). Opt-in: the
    image encoder is unchanged, and rankings can differ where the model hesitates."""

    rerank_query_image: Literal["auto", "caption", "inline"] = "auto"
    """How a query image reaches the reranker. ``caption``: the model first describes it
    in one sentence (a generation of its own), and the ranking prompt quotes the
    description; ``inline``: the image itself goes into the ranking prompt, one pass and
    no caption. ``auto``: ``inline`` on a CPU, where each generated token costs about a
    second; ``caption`` elsewhere."""

    rerank_memory_check: bool = True
    """Refuse to load a reranker larger than the free memory of its device."""

    max_rerank_candidates: int = Field(default=20, ge=1, le=100)
    """More candidates than this is refused: the contact sheet would be unreadable."""

    rerank_reason_max_chars: int = Field(default=200, ge=0, le=2000)
    """Upper bound on the length of the reranker's one-line explanation."""

    rerank_input: Literal["sheet", "images"] = "sheet"
    """``sheet``: one contact sheet with numbered thumbnails (works with every VLM);
    ``images``: each candidate as its own image (models that take several images)."""

    captions: bool = False
    """Caption every image while indexing (``index(captions=...)`` and ``mmsearch index
    --captions`` override it). Captions make text queries better; they cost one
    vision-language model call per image."""

    caption_model: str = ""
    """Vision-language model that writes the captions; empty: ``rerank_model`` (loaded once
    and shared with the reranker when they are the same)."""

    caption_max_new_tokens: int = Field(default=40, ge=1, le=512)
    """Upper bound on the length of one caption, in tokens."""

    caption_batch_size: int = Field(default=4, ge=1, le=256)
    """Images captioned per model call, where the model takes batches."""

    rrf_k: int = Field(default=60, ge=1, le=100_000)
    """Constant ``k`` of reciprocal rank fusion: a hit at rank ``r`` of a ranking adds
    ``1 / (k + r)`` to its fused score. Larger ``k`` flattens the advantage of the top ranks."""

    rrf_depth: int = Field(default=100, ge=1, le=16_384)
    """Hits each ranking contributes to the fusion of a text query (at least ``top_k``)."""

    watch: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Folders kept in sync besides those added with ``mmsearch watch add``
    (``MMSEARCH_WATCH``: paths separated by ``os.pathsep``, or a JSON list)."""

    watch_debounce_s: float = Field(default=2.0, gt=0, le=3600)
    """A watched folder is synced once no file in it has changed for this long, so a
    burst of files (a camera import) becomes one sync."""

    watch_rescan_s: float | None = Field(default=900.0, gt=0)
    """Every watched folder is synced this often even without events, for changes the
    file-system events missed (inotify limits, network drives). Unset: never."""

    watch_polling: bool = False
    """Poll the watched folders instead of using the operating system's events (for
    network drives, whose changes made on another machine raise no events)."""

    watch_poll_s: float = Field(default=10.0, gt=0, le=3600)
    """How often polling looks at the watched folders (where native events are off or
    unavailable)."""

    service: Literal["auto", "on", "off"] = "auto"
    """Whether the CLI and ``mmsearch-mcp`` talk to the one long-lived service of this data
    directory (started on demand) or load the models in their own process. ``auto``: the
    service on Linux and macOS, in-process on Windows. ``off``: in-process everywhere."""

    service_idle_s: float = Field(default=600.0, gt=0)
    """The service exits after this many seconds with no client connected, no job running
    and no folder watched (watching stops with the service)."""

    service_start_timeout_s: float = Field(default=60.0, gt=0)
    """How long a front waits for a service it started to answer."""

    @field_validator("allowed_roots", "watch", mode="before")
    @classmethod
    def _split_roots(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None if info.field_name == "allowed_roots" else []
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part.strip()]
        return value

    @field_validator("http_allowed_hosts", "http_allowed_origins", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.milvus_uri:
            self.milvus_uri = str(self.data_dir / "mmsearch.db")
        return self

    @property
    def uses_service(self) -> bool:
        if self.service == "auto":
            return os.name == "posix"
        return self.service == "on"

    @property
    def uses_milvus_lite(self) -> bool:
        return not self.milvus_uri.startswith(("http://", "https://", "tcp://", "unix:"))
