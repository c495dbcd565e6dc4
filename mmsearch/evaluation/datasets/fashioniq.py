"""FashionIQ (Wu et al., CVPR 2021): composed retrieval of dresses, shirts and tops.

Official layout (https://github.com/XiaoxiaoGuo/fashion-iq; images from
https://github.com/hongwang600/fashion-iq-metadata)::

    <data-dir>/
      captions/cap.{dress,shirt,toptee}.{val,test,train}.json
      image_splits/split.{dress,shirt,toptee}.{val,test,train}.json
      images/<asin>.jpg        (or .png)

A caption entry is ``{"candidate": <reference asin>, "target": <asin>, "captions": [c1, c2]}``;
a split file is the list of the category's image names.

Protocol (as in the evaluations of CLIP4Cir, SEARLE, MagicLens, BGE-VL): one gallery per
category, the images of ``split.<category>.<split>.json``; the reference stays a candidate;
the two captions form one query text; Recall@10 and Recall@50 per category and their mean.
The two captions are joined as ``"<c1> and <c2>"`` after stripping surrounding spaces and
``.?,`` (SEARLE's form; MagicLens joins unstripped with " and ", BGE-VL with ", and ").
"""

from __future__ import annotations

from pathlib import Path

from mmsearch.errors import DatasetError
from mmsearch.evaluation.datasets._images import check_present
from mmsearch.evaluation.datasets.base import Benchmark, Query, field_of, load_json, require_dir

CATEGORIES = ("dress", "shirt", "toptee")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

LAYOUT = """  <data-dir>/
    captions/cap.{category}.{split}.json
    image_splits/split.{category}.{split}.json
    images/<asin>.jpg   (or .png)"""


def join_captions(captions: list[str], joiner: str = " and ") -> str:
    """One query text from a pair of relative captions (see the module docstring)."""
    parts = [c.strip().strip(".?,").strip() for c in captions]
    return joiner.join(p for p in parts if p)


def _image_index(images_dir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            index.setdefault(path.stem, path.resolve())
    return index


def load_fashioniq(
    data_dir: Path, category: str, split: str = "val", *, joiner: str = " and "
) -> Benchmark:
    data_dir = Path(data_dir)
    if category not in CATEGORIES:
        raise DatasetError(f"FashionIQ categories are {', '.join(CATEGORIES)}, not {category!r}")
    layout = LAYOUT.replace("{category}", category).replace("{split}", split)
    cap_path = data_dir / "captions" / f"cap.{category}.{split}.json"
    split_path = data_dir / "image_splits" / f"split.{category}.{split}.json"
    captions = load_json(cap_path, layout)
    names = load_json(split_path, layout)
    if not isinstance(captions, list) or not isinstance(names, list):
        raise DatasetError(f"{cap_path} and {split_path} must each hold a list")
    images = _image_index(require_dir(data_dir / "images", layout))
    gallery = {name: images.get(name, data_dir / "images" / f"{name}.jpg") for name in names}
    check_present(gallery, layout, f"FashionIQ {category}")

    has_gt = bool(captions) and all(isinstance(e, dict) and "target" in e for e in captions)
    queries = []
    for i, entry in enumerate(captions):
        reference = field_of(entry, "candidate", cap_path, i)
        texts = field_of(entry, "captions", cap_path, i)
        if not isinstance(texts, list) or not texts:
            raise DatasetError(f"{cap_path}: entry {i} has no captions")
        ref_path = gallery.get(reference) or images.get(reference)
        if ref_path is None:
            raise DatasetError(
                f"{cap_path}: entry {i}: no image {reference}.jpg/.png in {data_dir / 'images'}"
            )
        queries.append(
            Query(
                id=f"{category}-{i}",
                text=join_captions(texts, joiner),
                reference=reference,
                reference_path=ref_path,
                targets=(entry["target"],) if has_gt else (),
                extra={"captions": list(texts)},
            )
        )
    return Benchmark(
        name="fashioniq",
        split=split,
        task="composed",
        gallery=gallery,
        queries=queries,
        exclude_reference=False,
        has_ground_truth=has_gt,
        category=category,
    )
