"""CIRR (Liu et al., ICCV 2021): composed image retrieval on NLVR2 images.

Official layout (https://github.com/Cuberick-Orion/CIRR, branch ``cirr_dataset``)::

    <data-dir>/
      captions/cap.rc2.{val,test1}.json
      image_splits/split.rc2.{val,test1}.json
      img_raw/dev/<name>.png          # NLVR2 images; test1/ for the test split
      img_raw/test1/<name>.png

``img_raw/`` may be left out (``dev/`` and ``test1/`` directly in ``<data-dir>``). Each
caption entry has ``pairid``, ``reference``, ``target_hard`` (absent in test1), ``caption``
and ``img_set.members``; the split file maps every image name to ``./dev/<name>.png``.

Protocol (the paper and its evaluation server): the gallery is every image of the split; the
reference image is removed from its query's candidates; Recall@{1,5,10,50} over the
gallery, Recall_subset@{1,2,3} over ``img_set.members`` minus the reference.
"""

from __future__ import annotations

from pathlib import Path

from mmsearch.errors import DatasetError
from mmsearch.evaluation.datasets._images import check_present, pick_root
from mmsearch.evaluation.datasets.base import Benchmark, Query, field_of, load_json

LAYOUT = """  <data-dir>/
    captions/cap.rc2.{split}.json
    image_splits/split.rc2.{split}.json
    img_raw/dev/*.png   (val)    img_raw/test1/*.png   (test1)"""

SPLITS = {"val": "val", "dev": "val", "test": "test1", "test1": "test1"}


def load_cirr(data_dir: Path, split: str = "val") -> Benchmark:
    data_dir = Path(data_dir)
    if split not in SPLITS:
        raise DatasetError(f"CIRR has splits val and test1, not {split!r}")
    split = SPLITS[split]
    if not (data_dir / "captions").is_dir() and (data_dir / "cirr" / "captions").is_dir():
        data_dir = data_dir / "cirr"
    layout = LAYOUT.replace("{split}", split)
    cap_path = data_dir / "captions" / f"cap.rc2.{split}.json"
    split_path = data_dir / "image_splits" / f"split.rc2.{split}.json"
    captions = load_json(cap_path, layout)
    names = load_json(split_path, layout)
    if not isinstance(captions, list) or not isinstance(names, dict):
        raise DatasetError(f"{cap_path} must hold a list and {split_path} an object")
    if not names:
        raise DatasetError(f"{split_path} lists no images")

    first = next(iter(names.values()))
    root = pick_root([data_dir / "img_raw", data_dir, data_dir.parent], first)
    if root is None:
        raise DatasetError(
            f"cannot find the image {first!r} (from {split_path}) under "
            f"{data_dir / 'img_raw'} or {data_dir}\nexpected layout:\n{layout}"
        )
    gallery = {name: (root / rel).resolve() for name, rel in names.items()}
    check_present(gallery, layout, "CIRR")

    has_gt = split != "test1"
    queries = []
    for i, entry in enumerate(captions):
        reference = field_of(entry, "reference", cap_path, i)
        img_set = field_of(entry, "img_set", cap_path, i)
        members = field_of(img_set, "members", cap_path, i)
        target = field_of(entry, "target_hard", cap_path, i) if has_gt else None
        if reference not in gallery:
            raise DatasetError(
                f"{cap_path}: entry {i} references {reference!r}, absent from {split_path}"
            )
        queries.append(
            Query(
                id=str(field_of(entry, "pairid", cap_path, i)),
                text=field_of(entry, "caption", cap_path, i),
                reference=reference,
                reference_path=gallery[reference],
                targets=(target,) if target is not None else (),
                subset=tuple(m for m in members if m != reference),
            )
        )
    return Benchmark(
        name="cirr",
        split=split,
        task="composed",
        gallery=gallery,
        queries=queries,
        exclude_reference=True,
        has_ground_truth=has_gt,
    )
