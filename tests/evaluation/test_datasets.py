"""The readers parse each benchmark's official file layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmsearch.errors import DatasetError
from mmsearch.evaluation.datasets import (
    load_benchmark,
    load_circo,
    load_cirr,
    load_fashioniq,
    load_karpathy,
)
from mmsearch.evaluation.datasets.fashioniq import join_captions


def test_cirr_val_reads_queries_targets_and_gallery(cirr_dir: Path) -> None:
    bench = load_cirr(cirr_dir, "val")
    assert bench.task == "composed" and bench.has_ground_truth and bench.exclude_reference
    assert len(bench.gallery) == 7
    assert (
        bench.gallery["dev-2-1-img1"]
        == (cirr_dir / "img_raw" / "dev" / "dev-2-1-img1.png").resolve()
    )
    q = bench.queries[0]
    assert (q.id, q.text, q.reference, q.targets) == (
        "100",
        "a rocket",
        "dev-1-0-img0",
        ("dev-2-1-img1",),
    )
    assert q.reference_path == bench.gallery["dev-1-0-img0"]


def test_cirr_subset_is_the_set_members_minus_the_reference(cirr_dir: Path) -> None:
    q = load_cirr(cirr_dir, "val").queries[0]
    assert q.subset == (
        "dev-1-0-img1",
        "dev-2-1-img0",
        "dev-2-1-img1",
        "dev-3-2-img0",
        "dev-3-2-img1",
    )


def test_cirr_test_split_has_no_ground_truth(cirr_dir: Path) -> None:
    bench = load_cirr(cirr_dir, "test")
    assert bench.split == "test1" and not bench.has_ground_truth
    assert all(q.targets == () for q in bench.queries)


def test_cirr_accepts_the_parent_directory_and_images_without_img_raw(cirr_dir: Path) -> None:
    (cirr_dir / "img_raw" / "dev").rename(cirr_dir / "dev")
    bench = load_cirr(cirr_dir.parent, "val")
    assert bench.gallery["dev-1-0-img0"] == (cirr_dir / "dev" / "dev-1-0-img0.png").resolve()


def test_a_missing_annotation_file_is_named_with_the_expected_layout(cirr_dir: Path) -> None:
    (cirr_dir / "captions" / "cap.rc2.val.json").unlink()
    with pytest.raises(DatasetError) as err:
        load_cirr(cirr_dir, "val")
    assert "cap.rc2.val.json" in str(err.value)
    assert "image_splits/split.rc2.val.json" in str(err.value)


def test_missing_gallery_images_are_reported(cirr_dir: Path) -> None:
    (cirr_dir / "img_raw" / "dev" / "dev-3-2-img1.png").unlink()
    with pytest.raises(
        DatasetError, match=r"1 of 7 CIRR images are missing[\s\S]*dev-3-2-img1.png"
    ):
        load_cirr(cirr_dir, "val")


def test_an_annotation_without_a_required_field_is_reported(cirr_dir: Path) -> None:
    path = cirr_dir / "captions" / "cap.rc2.val.json"
    entries = json.loads(path.read_text())
    del entries[1]["caption"]
    path.write_text(json.dumps(entries))
    with pytest.raises(DatasetError, match="entry 1 has no field 'caption'"):
        load_cirr(cirr_dir, "val")


def test_fashioniq_joins_the_two_captions() -> None:
    assert join_captions(["is a coffee.", " has more color "]) == "is a coffee and has more color"


def test_fashioniq_reads_one_category(fashioniq_dir: Path) -> None:
    bench = load_fashioniq(fashioniq_dir, "shirt", "val")
    assert bench.category == "shirt" and not bench.exclude_reference
    assert list(bench.gallery) == ["B00SHIRT0", "B00SHIRT1", "B00SHIRT2"]
    assert bench.gallery["B00SHIRT0"].suffix == ".png"  # .png and .jpg both found
    q = bench.queries[0]
    assert (q.reference, q.targets, q.text) == (
        "B00SHIRT0",
        ("B00SHIRT1",),
        "is a camera and has more color",
    )
    assert q.extra["captions"] == ["is a camera.", "has more color "]


def test_fashioniq_loads_all_three_categories_by_default(fashioniq_dir: Path) -> None:
    assert [b.category for b in load_benchmark("fashioniq", fashioniq_dir)] == [
        "dress",
        "shirt",
        "toptee",
    ]


def test_fashioniq_rejects_an_unknown_category(fashioniq_dir: Path) -> None:
    with pytest.raises(DatasetError, match="dress, shirt, toptee"):
        load_fashioniq(fashioniq_dir, "shoes")


def test_circo_gallery_follows_the_coco_image_info_order(circo_dir: Path) -> None:
    bench = load_circo(circo_dir, "val")
    assert list(bench.gallery)[:3] == ["9761", "489535", "57541"]
    assert bench.gallery["9761"].name == "000000009761.jpg"


def test_circo_targets_start_with_the_annotated_target(circo_dir: Path) -> None:
    q = load_circo(circo_dir, "val").queries[0]
    assert q.targets == ("375057", "9761", "57541")
    assert (q.reference, q.text, q.extra["shared_concept"]) == ("85932", "is a rocket", "a thing")


def test_circo_test_split_has_no_ground_truth(circo_dir: Path) -> None:
    bench = load_circo(circo_dir, "test")
    assert not bench.has_ground_truth and all(q.targets == () for q in bench.queries)


def test_flickr30k_uses_the_test_split_and_five_captions_per_image(flickr_dir: Path) -> None:
    bench = load_karpathy("flickr30k", flickr_dir)
    assert bench.task == "text_to_image"
    assert len(bench.gallery) == 4 and len(bench.queries) == 20
    assert all(p.parent.name == "flickr30k-images" for p in bench.gallery.values())
    assert bench.queries[0].text == "a photo of a astronaut number 0 ."
    assert bench.queries[0].targets == (list(bench.gallery)[0],)


def test_coco_keeps_five_captions_of_images_that_have_more(coco_dir: Path) -> None:
    bench = load_karpathy("coco", coco_dir)
    assert len(bench.gallery) == 3 and len(bench.queries) == 15
    assert not any("extra" in q.text for q in bench.queries)
    assert all(p.parent.name == "val2014" for p in bench.gallery.values())


def test_unknown_benchmark_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown benchmark"):
        load_benchmark("imagenet", tmp_path)
