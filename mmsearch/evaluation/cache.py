"""On-disk cache of gallery image embeddings, so a benchmark's gallery is embedded once.

Layout: ``<cache-dir>/<model>-<hash of model_id>/shard-<n>.npz``, each shard holding
``keys`` (one per image: absolute path, size and modification time) and ``vectors``
(float32). A shard is written to a temporary name and renamed into place, so an interrupted
run leaves only whole shards behind and the next run resumes from them. A file that changes
(new size or mtime) gets a new key and is embedded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmsearch.errors import ConfigurationError

logger = logging.getLogger(__name__)


def file_key(path: Path) -> str:
    """Cache key of an image file: its absolute path plus size and mtime (cheap to recompute
    for 100k+ files, unlike a content hash, and changes whenever the file is rewritten)."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


class EmbeddingCache:
    def __init__(self, cache_dir: Path, model_id: str, dim: int) -> None:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_id)[-48:].strip("_") or "model"
        digest = hashlib.sha256(model_id.encode()).hexdigest()[:12]
        self.dir = Path(cache_dir) / f"{slug}-{digest}"
        self.model_id = model_id
        self.dim = dim
        self._vectors: dict[str, np.ndarray] = {}
        self._load()

    def _load(self) -> None:
        meta_path = self.dir / "meta.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("model_id") != self.model_id or meta.get("dim") != self.dim:
                raise ConfigurationError(
                    f"embedding cache {self.dir} belongs to {meta.get('model_id')!r} "
                    f"(dim {meta.get('dim')}), not {self.model_id!r} (dim {self.dim})"
                )
        for shard in sorted(self.dir.glob("shard-*.npz")):
            with np.load(shard, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
            if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(keys) != len(vectors):
                logger.warning("ignoring malformed cache shard %s", shard)
                continue
            for key, vec in zip(keys.tolist(), vectors, strict=True):
                self._vectors[key] = vec
        if self._vectors:
            logger.info("embedding cache %s: %d vectors", self.dir, len(self._vectors))

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, key: str) -> np.ndarray | None:
        return self._vectors.get(key)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Persist a batch as one new shard (atomically) and keep it in memory."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys), self.dim):
            raise ValueError(f"expected {(len(keys), self.dim)} vectors, got {vectors.shape}")
        if not keys:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            meta_path.write_text(json.dumps({"model_id": self.model_id, "dim": self.dim}))
        index = len(list(self.dir.glob("shard-*.npz")))
        while (self.dir / f"shard-{index:06d}.npz").exists():
            index += 1
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=np.asarray(list(keys), dtype=str), vectors=vectors)
            os.replace(tmp, self.dir / f"shard-{index:06d}.npz")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for key, vec in zip(keys, vectors, strict=True):
            self._vectors[key] = vec
