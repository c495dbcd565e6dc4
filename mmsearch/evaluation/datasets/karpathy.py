"""Flickr30k and MS-COCO text-to-image retrieval on the Karpathy splits (Karpathy & Fei-Fei, 2015).

Annotations: ``dataset_flickr30k.json`` / ``dataset_coco.json`` from Karpathy's
``caption_datasets.zip`` (https://cs.stanford.edu/people/karpathy/deepimagesent/). Each
``images[]`` entry has ``split`` (``train``/``restval``/``val``/``test``), ``filename``
(COCO also ``filepath``: ``val2014``/``train2014``), ``imgid`` and ``sentences[].raw``.

Layouts::

    <data-dir>/dataset_flickr30k.json          <data-dir>/dataset_coco.json
    <data-dir>/flickr30k-images/<filename>     <data-dir>/val2014/<filename>

(``images/`` is also accepted for either). Protocol: the test split (Flickr30k 1k images,
COCO 5k images) is the gallery; each of an image's first five captions is a query whose
single correct answer is that image; Recall@{1,5,10} over the 5k (resp. 25k) captions.
A few COCO images carry six or seven captions; the papers' 25,000-query protocol keeps five.
"""

from __future__ import annotations

from pathlib import Path

from mmsearch.errors import DatasetError
from mmsearch.evaluation.datasets._images import check_present, pick_root
from mmsearch.evaluation.datasets.base import Benchmark, Query, field_of, load_json

ANNOTATIONS = {"flickr30k": "dataset_flickr30k.json", "coco": "dataset_coco.json"}
IMAGE_DIRS = {"flickr30k": ("flickr30k-images", "images", "."), "coco": (".", "images")}

LAYOUTS = {
    "flickr30k": """  <data-dir>/
    dataset_flickr30k.json
    flickr30k-images/<filename>.jpg""",
    "coco": """  <data-dir>/
    dataset_coco.json
    val2014/COCO_val2014_<id>.jpg   (the 5k test images are all from val2014)""",
}


def load_karpathy(
    name: str, data_dir: Path, split: str = "test", *, captions_per_image: int = 5
) -> Benchmark:
    if name not in ANNOTATIONS:
        raise DatasetError(
            f"unknown Karpathy-split dataset {name!r}; known: {', '.join(ANNOTATIONS)}"
        )
    if split not in ("test", "val", "train", "restval"):
        raise DatasetError(f"Karpathy splits are test, val, train and restval, not {split!r}")
    data_dir = Path(data_dir)
    layout = LAYOUTS[name]
    ann_path = data_dir / ANNOTATIONS[name]
    data = load_json(ann_path, layout)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DatasetError(f"{ann_path} has no 'images' list")
    chosen = [
        (i, img)
        for i, img in enumerate(images)
        if isinstance(img, dict) and img.get("split") == split
    ]
    if not chosen:
        raise DatasetError(f"{ann_path} has no images in split {split!r}")

    def rel(i: int, img: dict) -> str:
        filename = field_of(img, "filename", ann_path, i)
        return f"{img['filepath']}/{filename}" if img.get("filepath") else filename

    probe = rel(*chosen[0])
    root = pick_root([data_dir / d for d in IMAGE_DIRS[name]], probe)
    if root is None:
        raise DatasetError(
            f"cannot find the image {probe!r} under {data_dir}\nexpected layout:\n{layout}"
        )

    gallery: dict[str, Path] = {}
    queries: list[Query] = []
    for i, img in chosen:
        image_id = str(img.get("imgid", i))
        gallery[image_id] = (root / rel(i, img)).resolve()
        sentences = field_of(img, "sentences", ann_path, i)
        if len(sentences) < captions_per_image:
            raise DatasetError(
                f"{ann_path}: image {img['filename']} has {len(sentences)} captions, "
                f"fewer than {captions_per_image}"
            )
        for j, sentence in enumerate(sentences[:captions_per_image]):
            queries.append(
                Query(
                    id=str(sentence.get("sentid", f"{image_id}-{j}")),
                    text=field_of(sentence, "raw", ann_path, i).strip(),
                    targets=(image_id,),
                )
            )
    check_present(gallery, layout, name)
    return Benchmark(name=name, split=split, task="text_to_image", gallery=gallery, queries=queries)
