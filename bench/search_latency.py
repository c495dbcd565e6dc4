"""Search latency of the embedded Milvus (Milvus Lite) against the numpy brute-force floor.

For each vector distribution and collection size, the same vectors go into a fresh
Milvus Lite file and into a numpy matrix. Every index type the installed Milvus Lite
offers is then built in turn, and the queries are timed on Milvus and on the numpy scan
in alternating blocks of ten, so both see the same load on a shared machine.
Reported: p50/p95 latency of a top-9 search returning one scalar field, the ratio of
Milvus's p50 to numpy's, and recall@10 against exact search.

The script needs only numpy and pymilvus with a Milvus Lite, so it also runs from a
virtual environment with another Milvus Lite version (``pip install milvus-lite==2.5.1
pymilvus numpy 'setuptools<81'``). The ``photos`` distribution needs mmsearch and torch.

    python bench/search_latency.py --sizes 10k,100k --dists random,clustered
    python bench/search_latency.py --sizes 100k --indexes FLAT --queries 100
    python bench/search_latency.py --sizes 10k --dists photos --tiny
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TOP_K = 9
RECALL_K = 10
DIM = 768
RESULTS_DIR = Path(__file__).resolve().parent / "results"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


# ── machine and versions ────────────────────────────────────────────────────


def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _meminfo_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "pymilvus": _version("pymilvus"),
        "milvus_lite": _version("milvus-lite"),
        "faiss_cpu": _version("faiss-cpu"),
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ── data ────────────────────────────────────────────────────────────────────


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def random_unit(n: int, n_queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform on the sphere: no structure, the worst case for any ANN index."""
    rng = np.random.default_rng(seed)
    return (
        normalise(rng.standard_normal((n, dim), dtype=np.float32)),
        normalise(rng.standard_normal((n_queries, dim), dtype=np.float32)),
    )


def clustered(n: int, n_queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian mixture on the sphere, closer to real embeddings: n/100 centres (1k to
    10k), each point at cosine ~0.8-0.95 from its centre, spreads varying by cluster.
    Queries are new draws from the same mixture, so their neighbours share a cluster."""
    rng = np.random.default_rng(seed)
    n_centres = int(np.clip(n // 100, 1000, 10000))
    centres = normalise(rng.standard_normal((n_centres, dim), dtype=np.float32))
    spread = rng.uniform(0.35, 0.75, size=n_centres).astype(np.float32)

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, dim), dtype=np.float32)
        for start in range(0, count, 50_000):
            stop = min(count, start + 50_000)
            which = rng.integers(0, n_centres, size=stop - start)
            noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
            noise *= (spread[which] / np.sqrt(dim))[:, None]
            out[start:stop] = centres[which] + noise
        return normalise(out)

    return draw(n), draw(n_queries)


def _sample_images(source: str) -> list[Any]:
    """Sample photos shipped by installed packages (scikit-image's data, Debian's
    ``dataset-fashion-mnist``), as PIL images; missing sources give none."""
    from PIL import Image

    images: list[Any] = []
    if source in ("skimage", "all"):
        try:
            import skimage.data as skd
        except ImportError:
            skd = None
        if skd is not None:
            for name in (
                "astronaut",
                "coffee",
                "chelsea",
                "rocket",
                "cat",
                "immunohistochemistry",
                "hubble_deep_field",
                "retina",
                "motorcycle_left",
                "colorwheel",
                "camera",
                "page",
                "text",
                "moon",
                "brick",
                "grass",
                "gravel",
                "horse",
                "clock",
                "coins",
                "logo",
                "eagle",
            ):
                try:
                    arr = getattr(skd, name)()
                except Exception:  # some need pooch/network or are missing
                    continue
                arr = np.asarray(arr)
                if arr.dtype == bool:
                    arr = arr.astype(np.uint8) * 255
                if arr.dtype != np.uint8:
                    arr = (255 * (arr - arr.min()) / max(1e-9, float(np.ptp(arr)))).astype(np.uint8)
                if arr.ndim == 2:
                    arr = np.stack([arr] * 3, axis=-1)
                images.append(Image.fromarray(arr[..., :3]).convert("RGB"))
    if source in ("fashion-mnist", "all"):
        for part in ("train", "t10k"):
            path = FASHION_MNIST_DIR / f"{part}-images-idx3-ubyte.gz"
            if not path.exists():
                continue
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
            count, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
            pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)
            images.extend(Image.fromarray(255 - p).convert("RGB") for p in pixels)
    return images


def _augmented(images: list[Any], count: int, seed: int) -> Iterator[Any]:
    """``count`` random crops (30-100% of the area), flips and brightness changes of the
    given images, cycling through them: many near-duplicates, as in real photo folders."""
    from PIL import ImageEnhance, ImageOps

    rng = np.random.default_rng(seed)
    for i in range(count):
        img = images[i % len(images)] if len(images) < count else images[i]
        w, h = img.size
        scale = float(np.sqrt(rng.uniform(0.3, 1.0)))
        cw, ch = max(8, int(w * scale)), max(8, int(h * scale))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = img.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            out = ImageOps.mirror(out)
        yield ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.7, 1.3)))


@dataclass
class PhotoEmbeddings:
    vectors: np.ndarray
    model_id: str
    note: str


def photo_embeddings(args: argparse.Namespace, count: int) -> PhotoEmbeddings | str:
    """Embeddings of ``count`` augmented sample photos from the Visualized BGE embedder,
    cached under the work directory. Returns a reason string when it cannot run."""
    try:
        from mmsearch.models.visual_bge import create_embedder  # type: ignore[attr-defined]
    except ImportError as exc:
        return f"photos skipped: the Visualized BGE embedder is not importable ({exc})"
    model: str = args.embed_model
    note = "real weights" if not args.tiny else ""
    if args.tiny:
        try:
            from mmsearch.testing.tiny import write_tiny_visual_bge
        except ImportError as exc:
            return f"photos skipped: no tiny checkpoint writer ({exc})"
        model = str(write_tiny_visual_bge(Path(args.workdir) / "tiny"))
        note = "TINY RANDOM-WEIGHT CHECKPOINT: not representative of real embeddings"
    elif args.random_weights:
        note = "RANDOM WEIGHTS at full size: not representative of real embeddings"
    try:
        embedder = create_embedder(model, device="cpu")
    except Exception as exc:
        return f"photos skipped: the embedder could not be loaded from {model!r} ({exc})"
    cache = Path(args.workdir) / (
        f"photos-{embedder.model_id.replace('/', '_').replace('@', '_')}"
        f"-{args.photo_source}-{count}-{args.seed}.npy"
    )
    if cache.exists():
        return PhotoEmbeddings(np.load(cache), embedder.model_id, note)
    images = _sample_images(args.photo_source)
    if not images:
        return f"photos skipped: no sample photos found for source {args.photo_source!r}"
    vectors = np.empty((count, embedder.dim), dtype=np.float32)
    batch: list[Any] = []
    done = 0
    started = time.perf_counter()
    for img in _augmented(images, count, args.seed):
        batch.append(embedder.preprocess(img))
        if len(batch) == 64:
            vectors[done : done + 64] = embedder.encode(images=batch)
            done += 64
            batch = []
            if done % 6400 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"  embedded {done}/{count} photos ({rate:.0f}/s)", file=sys.stderr)
    if batch:
        vectors[done:] = embedder.encode(images=batch)
    np.save(cache, vectors)
    return PhotoEmbeddings(vectors, embedder.model_id, note)


# ── index configurations ────────────────────────────────────────────────────


@dataclass
class IndexConfig:
    index_type: str
    build: dict[str, Any]
    searches: list[dict[str, Any]]

    @property
    def label(self) -> str:
        b = ",".join(f"{k}={v}" for k, v in self.build.items())
        return f"{self.index_type}({b})" if b else self.index_type


def index_configs(names: list[str], n: int, lite_major: int) -> list[IndexConfig]:
    """Build and search parameters per index type, scaled to the collection size."""
    nlist = int(min(4096, max(16, 4 * np.sqrt(n))))
    nlist = 1 << int(np.round(np.log2(nlist)))
    ivf_probes = [p for p in (16, 64, 256) if p <= nlist]
    table: dict[str, IndexConfig] = {
        "FLAT": IndexConfig("FLAT", {}, [{}]),
        "IVF_FLAT": IndexConfig("IVF_FLAT", {"nlist": nlist}, [{"nprobe": p} for p in ivf_probes]),
        "IVF_SQ8": IndexConfig("IVF_SQ8", {"nlist": nlist}, [{"nprobe": p} for p in ivf_probes]),
        "HNSW": IndexConfig(
            "HNSW", {"M": 16, "efConstruction": 200}, [{"ef": e} for e in (64, 128, 256)]
        ),
        "HNSW_SQ": IndexConfig(
            "HNSW_SQ", {"M": 16, "efConstruction": 200}, [{"ef": e} for e in (64, 128)]
        ),
        "AUTOINDEX": IndexConfig("AUTOINDEX", {}, [{}]),
    }
    if names == ["auto"]:
        names = (
            ["FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ"]
            if lite_major >= 3
            else ["FLAT", "IVF_FLAT", "AUTOINDEX"]
        )
    unknown = [x for x in names if x not in table]
    if unknown:
        raise SystemExit(f"unknown index types {unknown}; known: {sorted(table)}")
    return [table[x] for x in names]


# ── Milvus Lite ─────────────────────────────────────────────────────────────


class LiteCollection:
    """One Milvus Lite file holding one collection, through pymilvus's MilvusClient."""

    def __init__(self, path: Path, dim: int, metric: str) -> None:
        from pymilvus import DataType, MilvusClient

        self.path = path
        self.metric = metric
        self.name = "bench"
        self.client = MilvusClient(str(path))
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("path", DataType.VARCHAR, max_length=512)
        params = self.client.prepare_index_params()
        params.add_index(field_name="vector", index_type="FLAT", metric_type=metric)
        self.client.create_collection(self.name, schema=schema, index_params=params)
        self.index: IndexConfig = IndexConfig("FLAT", {}, [{}])

    def insert(self, vectors: np.ndarray, batch: int) -> float:
        started = time.perf_counter()
        for start in range(0, len(vectors), batch):
            stop = min(len(vectors), start + batch)
            rows = [
                {"id": i, "vector": vectors[i].tolist(), "path": f"/photos/{i:07d}.jpg"}
                for i in range(start, stop)
            ]
            self.client.insert(self.name, rows)
        return time.perf_counter() - started

    def flush(self) -> float:
        started = time.perf_counter()
        self.client.flush(self.name)
        self._wait_background()
        return time.perf_counter() - started

    def _wait_background(self) -> None:
        """Milvus Lite 3.x compacts and builds indexes in a background thread after a
        flush; searches during that run far slower, so wait for it (a private hook of
        the in-process server; absent in 2.x, whose index builds are synchronous)."""
        try:
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:
            return
        servers = getattr(server_manager_instance, "_servers", {})
        entry = servers.get(os.path.abspath(self.path))
        if not entry or not isinstance(entry, tuple) or len(entry) < 2:
            return
        db = entry[1]
        try:
            col = db.get_collection(self.name)
        except Exception:
            return
        wait = getattr(col, "_wait_for_bg", None)
        if wait is not None:
            wait()

    def set_index(self, cfg: IndexConfig) -> float:
        started = time.perf_counter()
        self.client.release_collection(self.name)
        self.client.drop_index(self.name, "vector")
        params = self.client.prepare_index_params()
        params.add_index(
            field_name="vector",
            index_type=cfg.index_type,
            metric_type=self.metric,
            params=cfg.build,
        )
        self.client.create_index(self.name, params)
        self.client.load_collection(self.name)
        self._wait_background()
        self.index = cfg
        return time.perf_counter() - started

    def search(self, query: np.ndarray, limit: int, params: dict[str, Any]) -> list[int]:
        hits = self.client.search(
            self.name,
            [query.tolist()],
            limit=limit,
            output_fields=["path"],
            search_params={"metric_type": self.metric, "params": params},
        )
        return [int(h["id"]) for h in hits[0]]

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass


# ── measurement ─────────────────────────────────────────────────────────────


def numpy_top_k(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """The floor: one matrix-vector product over all stored vectors, then top-k."""
    scores = vectors @ query
    part = np.argpartition(-scores, k)[:k]
    return part[np.argsort(-scores[part])]


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 64):
        scores = queries[start : start + 64] @ vectors.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
        out[start : start + 64] = np.take_along_axis(part, order, axis=1)
    return out


@dataclass
class Row:
    dist: str
    n: int
    dim: int
    metric: str
    engine: str
    index: str
    search_params: dict[str, Any]
    flushed: bool
    p50_ms: float
    p95_ms: float
    numpy_p50_ms: float
    numpy_p95_ms: float
    ratio_p50: float
    min_ms: float
    numpy_min_ms: float
    ratio_min: float
    recall_at_10: float
    samples: int
    build_s: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def timed_pairs(
    search: Callable[[np.ndarray], object],
    floor: Callable[[np.ndarray], object],
    queries: np.ndarray,
    reps: int,
    budget_s: float,
    block: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Time every query on both, in alternating blocks of ``block`` queries (which one
    goes first alternates too): both see the same machine load, while thread pools that
    spin for a while after a call (OpenBLAS, OpenMP in Milvus) mostly hit their own
    block. Stops early, after at least one block each, once ``budget_s`` is spent."""
    for q in queries[:3]:
        search(q)
        floor(q)
    times: tuple[list[float], list[float]] = ([], [])
    fns = (search, floor)
    started = time.perf_counter()
    turn = 0
    for _ in range(reps):
        for start in range(0, len(queries), block):
            chunk = queries[start : start + block]
            for which in (0, 1) if turn % 2 == 0 else (1, 0):
                for q in chunk:
                    t0 = time.perf_counter()
                    fns[which](q)
                    times[which].append(time.perf_counter() - t0)
            turn += 1
            if time.perf_counter() - started > budget_s:
                return np.array(times[0]), np.array(times[1])
    return np.array(times[0]), np.array(times[1])


def measure(
    lite: LiteCollection,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    params: dict[str, Any],
    args: argparse.Namespace,
) -> tuple[np.ndarray, np.ndarray, float]:
    lat, floor = timed_pairs(
        lambda q: lite.search(q, TOP_K, params),
        lambda q: numpy_top_k(vectors, q, TOP_K),
        queries,
        args.reps,
        args.budget,
    )
    found = [lite.search(q, RECALL_K, params) for q in queries[: args.recall_queries]]
    recall = float(
        np.mean(
            [len(set(f) & set(t.tolist())) / RECALL_K for f, t in zip(found, truth, strict=True)]
        )
    )
    return lat, floor, recall


def ms(x: np.ndarray, pct: float) -> float:
    return round(float(np.percentile(x, pct)) * 1e3, 3)


def run_case(
    dist: str,
    vectors: np.ndarray,
    queries: np.ndarray,
    args: argparse.Namespace,
    engine: str,
    lite_major: int,
    note: str,
    emit: Callable[[Row], None],
) -> None:
    n, dim = vectors.shape
    truth = exact_top_k(vectors, queries[: args.recall_queries], RECALL_K)
    path = Path(args.workdir) / f"{dist}-{n}.db"
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    lite = LiteCollection(path, dim, args.metric)
    try:
        insert_s = lite.insert(vectors, args.batch)
        print(f"  inserted {n} rows in {insert_s:.1f} s", file=sys.stderr)

        def row(
            cfg: IndexConfig,
            params: dict[str, Any],
            flushed: bool,
            build_s: float | None,
            lat: np.ndarray,
            floor: np.ndarray,
            recall: float,
        ) -> Row:
            return Row(
                dist=dist,
                n=n,
                dim=dim,
                metric=args.metric,
                engine=engine,
                index=cfg.label,
                search_params=params,
                flushed=flushed,
                p50_ms=ms(lat, 50),
                p95_ms=ms(lat, 95),
                numpy_p50_ms=ms(floor, 50),
                numpy_p95_ms=ms(floor, 95),
                ratio_p50=round(float(np.median(lat) / np.median(floor)), 2),
                min_ms=ms(lat, 0),
                numpy_min_ms=ms(floor, 0),
                ratio_min=round(float(lat.min() / floor.min()), 2),
                recall_at_10=round(recall, 4),
                samples=len(lat),
                build_s=build_s,
                note=note,
                extra={"insert_s": round(insert_s, 1)},
            )

        if args.unflushed:
            lat, floor, recall = measure(lite, vectors, queries, truth, {}, args)
            emit(row(lite.index, {}, False, None, lat, floor, recall))
        flush_s = lite.flush()
        print(f"  flushed in {flush_s:.1f} s", file=sys.stderr)
        for cfg in index_configs(args.indexes, n, lite_major):
            try:
                build_s = round(lite.set_index(cfg), 1)
            except Exception as exc:
                print(f"  {cfg.label}: not available ({str(exc)[:160]})", file=sys.stderr)
                continue
            for params in cfg.searches:
                lat, floor, recall = measure(lite, vectors, queries, truth, params, args)
                emit(row(cfg, params, True, build_s, lat, floor, recall))
    finally:
        lite.close()


# ── output ──────────────────────────────────────────────────────────────────

HEADER = (
    f"{'dist':<10} {'n':>8} {'dim':>4} {'index':<28} {'search':<14} {'flushed':>7} "
    f"{'p50 ms':>8} {'p95 ms':>8} {'numpy p50':>9} {'ratio':>6} {'min ratio':>9} {'recall@10':>9} "
    f"{'build s':>7}"
)


def format_row(r: Row) -> str:
    sp = ",".join(f"{k}={v}" for k, v in r.search_params.items()) or "-"
    build = "-" if r.build_s is None else f"{r.build_s:.1f}"
    return (
        f"{r.dist:<10} {r.n:>8} {r.dim:>4} {r.index:<28} {sp:<14} {str(r.flushed):>7} "
        f"{r.p50_ms:>8.2f} {r.p95_ms:>8.2f} {r.numpy_p50_ms:>9.2f} {r.ratio_p50:>6.2f} "
        f"{r.ratio_min:>9.2f} "
        f"{r.recall_at_10:>9.3f} {build:>7}"
    )


def markdown(paths: list[str]) -> str:
    """The rows of result files as one Markdown table (for the README)."""
    lines = [
        "| engine | dist | n | index | search | flushed | p50 ms | p95 ms | numpy p50 ms "
        "| ratio p50 | ratio min | recall@10 |",
        "|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for path in paths:
        for r in json.loads(Path(path).read_text())["rows"]:
            sp = ",".join(f"{k}={v}" for k, v in r["search_params"].items()) or "-"
            ratio_min = r.get("ratio_min")
            lines.append(
                f"| {r['engine']} | {r['dist']} | {r['n']:,} | {r['index']} | {sp} "
                f"| {'yes' if r['flushed'] else 'no'} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
                f"| {r['numpy_p50_ms']:.1f} | {r['ratio_p50']:.2f} "
                f"| {'-' if ratio_min is None else f'{ratio_min:.2f}'} | {r['recall_at_10']:.3f} |"
            )
    return "\n".join(lines)


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    mult = 1
    if text.endswith("k"):
        mult, text = 1_000, text[:-1]
    elif text.endswith("m"):
        mult, text = 1_000_000, text[:-1]
    return int(float(text) * mult)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="10k,100k", help="comma-separated, e.g. 10k,100k,1m")
    p.add_argument("--dists", default="random,clustered", help="random, clustered, photos")
    p.add_argument(
        "--indexes",
        default="auto",
        help="comma-separated index types, or 'auto': all the installed Milvus Lite offers",
    )
    p.add_argument("--metric", default="IP", choices=["IP", "COSINE", "L2"])
    p.add_argument("--queries", type=int, default=40, help="distinct queries")
    p.add_argument("--reps", type=int, default=2, help="passes over the queries")
    p.add_argument("--recall-queries", type=int, default=40)
    p.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds of timing per configuration at most (>= 10 pairs)",
    )
    p.add_argument("--batch", type=int, default=1000, help="rows per insert call")
    p.add_argument(
        "--no-unflushed",
        dest="unflushed",
        action="store_false",
        help="skip the FLAT measurement before flush()",
    )
    p.add_argument("--dim", type=int, default=DIM)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where Milvus Lite files go (temp dir)")
    p.add_argument("--out", default=None, help="JSON path (default: bench/results/...)")
    p.add_argument(
        "--embed-model",
        default="base_en_v1.5",
        help="photos: Visualized BGE variant or local checkpoint directory",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="photos: use a tiny random-weight checkpoint (plumbing check only)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="photos: say that --embed-model holds random weights",
    )
    p.add_argument("--photo-source", default="all", choices=["skimage", "fashion-mnist", "all"])
    p.add_argument(
        "--markdown",
        nargs="+",
        metavar="JSON",
        help="only print the rows of these result files as a Markdown table",
    )
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return 0
    args.indexes = [x.strip().upper() for x in args.indexes.split(",") if x.strip()]
    if args.indexes == ["AUTO"]:
        args.indexes = ["auto"]
    sizes = sorted(parse_size(s) for s in args.sizes.split(","))
    dists = [d.strip() for d in args.dists.split(",") if d.strip()]

    own_workdir = args.workdir is None
    if own_workdir:
        args.workdir = tempfile.mkdtemp(prefix="mmsearch-bench-")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)

    info = machine_info()
    lite_version = info["milvus_lite"] or "0"
    lite_major = int(lite_version.split(".")[0])
    engine = f"milvus-lite {lite_version} / pymilvus {info['pymilvus']}"
    print(
        f"# {engine}; {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB; "
        f"load {load_average()}"
    )
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    report: dict[str, Any] = {
        "started": started,
        "machine": info,
        "load_start": load_average(),
        "args": {k: v for k, v in vars(args).items()},
        "top_k": TOP_K,
        "rows": [],
        "skipped": [],
    }
    out = (
        Path(args.out)
        if args.out
        else RESULTS_DIR / (f"search_latency-{lite_version}-{started.replace(':', '')}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        report["load_end"] = load_average()
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(out)

    def emit(r: Row) -> None:
        print(format_row(r), flush=True)
        report["rows"].append(asdict(r))
        save()

    photos: PhotoEmbeddings | str | None = None
    print(HEADER)
    try:
        for dist in dists:
            for n in sizes:
                nq = args.queries
                note = ""
                if dist == "random":
                    vectors, queries = random_unit(n, nq, args.dim, args.seed)
                elif dist == "clustered":
                    vectors, queries = clustered(n, nq, args.dim, args.seed)
                elif dist == "photos":
                    if photos is None:
                        photos = photo_embeddings(args, max(sizes) + nq)
                    got = photos
                    if isinstance(got, str):
                        print(f"# {got}", flush=True)
                        report["skipped"].append({"dist": dist, "n": n, "reason": got})
                        save()
                        continue
                    vectors, queries = got.vectors[:n].copy(), got.vectors[-nq:].copy()
                    note = f"{got.model_id}; {got.note}"
                    print(f"# photos: {note}", flush=True)
                else:
                    raise SystemExit(f"unknown distribution {dist!r}")
                run_case(dist, vectors, queries, args, engine, lite_major, note, emit)
                del vectors, queries
    finally:
        save()
        if own_workdir:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print(f"# wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
