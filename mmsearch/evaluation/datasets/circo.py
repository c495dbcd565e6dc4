"""CIRCO (Baldrati et al., ICCV 2023): composed retrieval with several ground truths per query.

Official layout (https://github.com/miccunifi/CIRCO; images: COCO 2017 unlabeled set)::

    <data-dir>/
      annotations/{val,test}.json
      COCO2017_unlabeled/annotations/image_info_unlabeled2017.json
      COCO2017_unlabeled/unlabeled2017/<12-digit id>.jpg

An annotation has ``id``, ``reference_img_id``, ``relative_caption``, ``shared_concept`` and,
in val only, ``target_img_id`` and ``gt_img_ids`` (the target first). The gallery is every
image listed in ``image_info_unlabeled2017.json``, in that order.

Protocol: mAP@{5,10,25,50} over all ground truths (the official ``evaluation.py``), plus
Recall@K against ``target_img_id`` alone, reported by the same script. The query text is the
relative caption (the runner's query template can add ``{shared_concept}``). The reference
image is removed from the candidates: it is a query input, not an answer (no val
annotation lists it among its ground truths). The official
scripts of SEARLE, MagicLens and BGE-VL rank the whole gallery instead; pass
``exclude_reference=False`` to the runner to reproduce them.
"""

from __future__ import annotations

from pathlib import Path

from mmsearch.errors import DatasetError
from mmsearch.evaluation.datasets._images import check_present
from mmsearch.evaluation.datasets.base import Benchmark, Query, field_of, load_json

LAYOUT = """  <data-dir>/
    annotations/{split}.json
    COCO2017_unlabeled/annotations/image_info_unlabeled2017.json
    COCO2017_unlabeled/unlabeled2017/000000xxxxxx.jpg"""


def load_circo(data_dir: Path, split: str = "val") -> Benchmark:
    data_dir = Path(data_dir)
    if split not in ("val", "test"):
        raise DatasetError(f"CIRCO has splits val and test, not {split!r}")
    layout = LAYOUT.replace("{split}", split)
    ann_path = data_dir / "annotations" / f"{split}.json"
    info_path = data_dir / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    annotations = load_json(ann_path, layout)
    info = load_json(info_path, layout)
    if not isinstance(annotations, list):
        raise DatasetError(f"{ann_path} must hold a list of annotations")
    images = info.get("images") if isinstance(info, dict) else None
    if not isinstance(images, list) or not images:
        raise DatasetError(f"{info_path} has no 'images' list")
    image_dir = data_dir / "COCO2017_unlabeled" / "unlabeled2017"
    gallery: dict[str, Path] = {}
    for i, img in enumerate(images):
        gallery[str(field_of(img, "id", info_path, i))] = image_dir / field_of(
            img, "file_name", info_path, i
        )
    check_present(gallery, layout, "COCO 2017 unlabeled")

    has_gt = split == "val"
    queries = []
    for i, ann in enumerate(annotations):
        reference = str(field_of(ann, "reference_img_id", ann_path, i))
        if reference not in gallery:
            raise DatasetError(
                f"{ann_path}: entry {i}: reference image {reference} not in {info_path}"
            )
        targets: tuple[str, ...] = ()
        if has_gt:
            target = str(field_of(ann, "target_img_id", ann_path, i))
            gts = [str(g) for g in field_of(ann, "gt_img_ids", ann_path, i)]
            targets = (target, *[g for g in gts if g != target])
        queries.append(
            Query(
                id=str(field_of(ann, "id", ann_path, i)),
                text=field_of(ann, "relative_caption", ann_path, i),
                reference=reference,
                reference_path=gallery[reference],
                targets=targets,
                extra={
                    "shared_concept": ann.get("shared_concept", ""),
                    "semantic_aspects": ann.get("semantic_aspects", []),
                },
            )
        )
    return Benchmark(
        name="circo",
        split=split,
        task="composed",
        gallery=gallery,
        queries=queries,
        exclude_reference=True,
        has_ground_truth=has_gt,
    )
