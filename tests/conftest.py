"""Shared test fixtures: tiny models, real photos on disk, a store in a temporary folder,
an embedder, a Milvus server."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from tiny_models import write_tiny_qwen2vl, write_tiny_text_lm

from mmsearch.config import Settings
from mmsearch.library import ImageSearch
from mmsearch.testing.tiny import WRITERS

# Tests run in-process unless they ask for the service (tests/test_service.py): a service
# started by one test must not serve the next one's calls.
os.environ["MMSEARCH_SERVICE"] = "off"


@pytest.fixture(scope="session")
def tiny_phi3v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Phi-3 Vision checkpoint in the official layout (56 px tiles)."""
    from mmsearch.testing.tiny_phi3v import write_tiny_phi3v

    return write_tiny_phi3v(tmp_path_factory.mktemp("phi3v"), seed=0)


@pytest.fixture(scope="session")
def tiny_phi3v(tiny_phi3v_dir: Path):
    """(model, processor) loaded from the tiny checkpoint, on the CPU in float32."""
    from mmsearch.models.phi3v import load_phi3v

    return load_phi3v(tiny_phi3v_dir, device="cpu", dtype="float32")


# --- reranker -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def single_thread_torch() -> Iterator[None]:
    """Tiny models run several times faster on one thread than fighting over shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_text_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_text_lm(tmp_path_factory.mktemp("tiny-text-lm"))


@pytest.fixture(scope="session")
def tiny_text_lm(tiny_text_lm_dir: Path, single_thread_torch: None):  # noqa: ANN201
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_text_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_text_lm_dir).eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


@pytest.fixture(scope="session")
def tiny_vlm(tiny_vlm_dir: Path, single_thread_torch: None):  # noqa: ANN201
    from mmsearch.rerank.backends import TransformersVLM

    return TransformersVLM.load(str(tiny_vlm_dir), "cpu", torch.float32)


@pytest.fixture(scope="session")
def candidate_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """24 small solid-colour PNGs, all different."""
    folder = tmp_path_factory.mktemp("candidates")
    paths = []
    for i in range(24):
        path = folder / f"c{i:02d}.png"
        colour = ((i * 53) % 256, (i * 97 + 40) % 256, (255 - i * 11) % 256)
        Image.new("RGB", (40 + 3 * i, 30 + 2 * i), colour).save(path)
        paths.append(path)
    return paths


# --- embedder ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with every tiny random-weight model in its own subfolder
    (``visual_bge/``, ...), as ``python -m mmsearch.testing.tiny DIR`` writes them."""
    root = tmp_path_factory.mktemp("tiny_checkpoints")
    for name, writer in WRITERS.items():
        writer(root / name)
    return root


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    """Real photographs: an astronaut, a coffee cup, a cat, a rocket launch."""
    return {
        name: Image.fromarray(np.asarray(getattr(data, name)()))
        for name in ("astronaut", "coffee", "chelsea", "rocket")
    }


# --- library, store and Milvus server -------------------------------------------------

PHOTOS = {
    "astronaut.png": "astronaut",
    "coffee.jpg": "coffee",
    "chelsea.png": "chelsea",
    "rocket.jpg": "rocket",
    "camera.png": "camera",
}


class PixelHashEmbedder:
    """A second, cheap embedder with a chosen model id and dimension, for the tests of
    what happens when a collection meets another model: images are a fixed random
    projection of 16x16 pixels, texts a sum of hashed token vectors, pairs the normalised
    sum."""

    def __init__(self, dim: int = 32, model_id: str = "test-pixel-hash-v1") -> None:
        self.dim = dim
        self.model_id = model_id
        rng = np.random.default_rng(0)
        self._proj = rng.standard_normal((3 * 16 * 16, dim)).astype(np.float32)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        if image.mode == "RGBA":
            bg = Image.new("RGB", image.size, (255, 255, 255))
            bg.paste(image, mask=image.getchannel("A"))
            image = bg
        small = image.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR)
        arr = np.asarray(small, dtype=np.float32) / 255.0 - 0.5
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())

    def _text_vec(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        for token in text.lower().split():
            seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")
            vec += np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return vec

    def encode(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[Image.Image | torch.Tensor] | None = None,
        *,
        batch_size: int | None = None,
    ) -> np.ndarray:
        rows = []
        if images is not None:
            for im in images:
                t = im if isinstance(im, torch.Tensor) else self.preprocess(im)
                rows.append(t.numpy().reshape(-1) @ self._proj)
        if texts is not None:
            tv = [self._text_vec(t) for t in texts]
            rows = [r + 0.5 * t for r, t in zip(rows, tv, strict=True)] if rows else tv
        out = np.stack(rows).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class CountingEmbedder:
    """Wraps an embedder and counts ``encode`` calls, so tests can see what was embedded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model_id: str = inner.model_id
        self.dim: int = inner.dim
        self.encode_calls = 0

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.inner.preprocess(image)

    def encode(self, texts=None, images=None, *, batch_size=None) -> np.ndarray:  # noqa: ANN001
        self.encode_calls += 1
        return self.inner.encode(texts=texts, images=images, batch_size=batch_size)


def build_test_embedder(checkpoint: str) -> Any:
    """The tiny random-weight Visualized BGE in ``checkpoint`` (also used by subprocesses)."""
    from mmsearch.models.visual_bge import create_embedder

    return create_embedder(checkpoint, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def embedder_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random-weight Visualized BGE checkpoint: the library is tested on the real
    model code. Its scores carry no meaning; only exact matches (an image against its own
    stored copy) are asserted."""
    from mmsearch.testing.tiny import write_tiny_visual_bge

    return str(write_tiny_visual_bge(tmp_path_factory.mktemp("tiny_visual_bge")))


@pytest.fixture(scope="session")
def shared_embedder(embedder_spec: str, single_thread_torch: None) -> Any:
    return build_test_embedder(embedder_spec)


@pytest.fixture
def embedder(shared_embedder: Any) -> CountingEmbedder:
    return CountingEmbedder(shared_embedder)


@pytest.fixture
def make_embedder() -> type[PixelHashEmbedder]:
    """Build embedders with another model id or dimension (model mismatch tests)."""
    return PixelHashEmbedder


@pytest.fixture(scope="session")
def photo_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skimage import data

    folder = tmp_path_factory.mktemp("photo_sources")
    for name, attr in PHOTOS.items():
        img = Image.fromarray(getattr(data, attr)())
        img.thumbnail((256, 256))  # keeps the suite fast; still real photographs
        img.save(folder / name)
    return folder


@pytest.fixture
def photo_dir(tmp_path: Path, photo_sources: Path) -> Path:
    """A fresh folder holding the test photos (safe to modify)."""
    folder = tmp_path / "photos"
    shutil.copytree(photo_sources, folder)
    return folder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", batch_size=2, decode_workers=2)


@pytest.fixture
def engine(settings: Settings, embedder: CountingEmbedder) -> Iterator[ImageSearch]:
    lib = ImageSearch(settings, embedder_factory=lambda s: embedder)
    yield lib
    lib.close()


# -- a real Milvus server -----------------------------------------------------------------

MILVUS_COMPONENTS = (
    "rootCoord",
    "proxy",
    "queryCoord",
    "queryNode",
    "indexCoord",
    "indexNode",
    "dataCoord",
    "dataNode",
)


def _milvus_binaries(cache_dir: Path) -> Path:
    """Unpack the server package's binaries once into the pytest cache (about 250 MB,
    8 s to decompress), under a file lock in case two runs race."""
    import fcntl

    import milvus

    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        milvus._initialize_data_files(str(cache_dir))
    return cache_dir / "bin"


@pytest.fixture(scope="session")
def milvus_server_uri(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A Milvus standalone server (PyPI package ``milvus``) for this test session.

    Ports are free ones found by the package (starting from Milvus's defaults). etcd
    listens on 127.0.0.1 only; each component advertises 127.0.0.1; the gRPC services
    and the metrics/health port of Milvus 2.3 bind all interfaces (no setting changes
    that). Skipped only when the server cannot start here.
    """
    milvus = pytest.importorskip("milvus", reason="the `milvus` server package is not installed")
    from pymilvus import MilvusClient

    data_dir = tmp_path_factory.mktemp("milvus_server")
    try:
        bin_dir = _milvus_binaries(Path(request.config.cache.mkdir("milvus-server-bin")))
    except OSError as exc:
        pytest.skip(f"cannot unpack the Milvus server binaries: {exc}")
    (data_dir / "bin").symlink_to(bin_dir, target_is_directory=True)
    config = milvus.MilvusServerConfig(data_dir=str(data_dir))
    for component in MILVUS_COMPONENTS:
        config.set(f"{component}.ip", "127.0.0.1")
    config.set("proxy.http.enabled", "false")
    server = milvus.MilvusServer(config, wait_for_started=False)
    try:
        server.start()
        server.wait_started(timeout=120_000)
    except Exception as exc:  # the binary cannot run on this machine
        server.stop()
        log = data_dir / "logs" / "milvus-stderr.log"
        tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
        pytest.skip(f"the Milvus server binary did not start: {exc} {tail}")
    uri = f"http://127.0.0.1:{server.listen_port}"
    try:
        # The first collection a fresh server creates waits for its components to settle
        # (about 25 s here); pay that once, before the tests.
        client = MilvusClient(uri=uri)
        client.create_collection("warmup", dimension=2)
        client.drop_collection("warmup")
        client.close()
        yield uri
    finally:
        server.stop()
