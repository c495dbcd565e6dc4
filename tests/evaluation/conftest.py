"""Benchmark fixtures written in each official annotation format, from real photographs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "clock", "page")


def _photo(name: str) -> Image.Image:
    import skimage.data

    array = getattr(skimage.data, name)()
    image = Image.fromarray(array)
    return image.convert("RGB").resize((48, 48))


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    return {name: _photo(name) for name in PHOTOS}


def _save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _dump(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


class WordEmbedder:
    """A deterministic stand-in for the image-text model, whose rankings are known in advance.

    Each photo gets its own axis: an image embeds to the one-hot vector of the photo it
    shows (recognised from its 4x4 thumbnail). A text embeds to the photos it names, the
    first with weight 1, the next 1/2, then 1/4...; a photo it does not name scores 0, so
    those tie and fall back to gallery order. An (image, text) pair adds 1/100 of the
    image's axis, so the reference image comes right after the named photos.
    """

    model_id = "test/word-embedder"
    dim = 16

    def __init__(self, photos: dict[str, Image.Image]) -> None:
        self.names = list(photos)
        self.thumbs = torch.stack([self._pixels(img) for img in photos.values()])
        self.images_encoded = 0
        self.calls = 0
        self.fail_after_calls: int | None = None

    @staticmethod
    def _pixels(image: Image.Image) -> torch.Tensor:
        small = np.asarray(image.convert("RGB").resize((4, 4), Image.BILINEAR), dtype=np.float32)
        return torch.from_numpy(small).permute(2, 0, 1).contiguous()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self._pixels(image)

    def _axis(self, i: int) -> np.ndarray:
        v = np.zeros(self.dim)
        v[i] = 1.0
        return v

    def _image_vector(self, pixels: torch.Tensor) -> np.ndarray:
        distance = ((self.thumbs - pixels) ** 2).flatten(1).sum(1)
        return self._axis(int(distance.argmin()))

    def _text_vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim)
        weight = 1.0
        for word in text.lower().replace(",", " ").replace(".", " ").split():
            if word in self.names:
                v[self.names.index(word)] += weight
                weight /= 2
        return v

    def encode(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[Image.Image | torch.Tensor] | None = None,
        *,
        batch_size: int | None = None,
    ) -> np.ndarray:
        self.calls += 1
        if self.fail_after_calls is not None and self.calls > self.fail_after_calls:
            raise RuntimeError("simulated crash")
        image_vecs = [
            self._image_vector(im if isinstance(im, torch.Tensor) else self._pixels(im))
            for im in images or []
        ]
        if images and not texts:
            self.images_encoded += len(image_vecs)
            out = np.stack(image_vecs)
        elif texts and not images:
            out = np.stack([self._text_vector(t) for t in texts])
        else:
            assert texts is not None and len(texts) == len(image_vecs)
            out = np.stack(
                [self._text_vector(t) + 0.01 * v for t, v in zip(texts, image_vecs, strict=True)]
            )
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norms == 0, 1, norms)).astype(np.float32)


@pytest.fixture
def embedder(photos: dict[str, Image.Image]) -> WordEmbedder:
    return WordEmbedder(photos)


# --- CIRR -------------------------------------------------------------------------------

CIRR_NAMES = {  # NLVR2-style image names -> photo
    "dev-1-0-img0": "astronaut",
    "dev-1-0-img1": "coffee",
    "dev-2-1-img0": "chelsea",
    "dev-2-1-img1": "rocket",
    "dev-3-2-img0": "camera",
    "dev-3-2-img1": "coins",
    "dev-4-0-img0": "moon",
}


def _cirr_entry(
    pairid: int, reference: str, target: str | None, caption: str, members: list[str]
) -> dict:
    entry = {
        "pairid": pairid,
        "reference": reference,
        "caption": caption,
        "img_set": {"id": pairid, "members": members, "reference_rank": 0, "target_rank": 1},
    }
    if target is not None:
        entry["target_hard"] = target
        entry["target_soft"] = {target: 1.0}
    return entry


@pytest.fixture
def cirr_dir(tmp_path: Path, photos: dict[str, Image.Image]) -> Path:
    """A CIRR val + test1 split in the official layout (``img_raw/dev/...``)."""
    root = tmp_path / "cirr"
    for split, folder in (("val", "dev"), ("test1", "test1")):
        names = {n.replace("dev", folder): p for n, p in CIRR_NAMES.items()}
        for name, photo in names.items():
            _save(photos[photo], root / "img_raw" / folder / f"{name}.png")
        _dump(
            {n: f"./{folder}/{n}.png" for n in names},
            root / "image_splits" / f"split.rc2.{split}.json",
        )
        members = [
            n.replace("dev", folder)
            for n in (
                "dev-1-0-img0",
                "dev-1-0-img1",
                "dev-2-1-img0",
                "dev-2-1-img1",
                "dev-3-2-img0",
                "dev-3-2-img1",
            )
        ]
        ref, tgt = members[0], members[3]
        other = members[2]
        val = split == "val"
        entries = [
            # names the target: rank 1 overall and in the subset
            _cirr_entry(100, ref, tgt if val else None, "a rocket", members),
            # names the reference first; it is no candidate, so moon (outside the set) then
            # the target: overall rank 2, subset rank 1
            _cirr_entry(101, ref, tgt if val else None, "astronaut moon rocket", members),
            # names two wrong images; the rest tie at 0 and keep gallery order (astronaut
            # before rocket; the reference chelsea is removed): overall and subset rank 4
            _cirr_entry(102, other, tgt if val else None, "coffee camera", members),
        ]
        _dump(entries, root / "captions" / f"cap.rc2.{split}.json")
    return root


# --- FashionIQ --------------------------------------------------------------------------


@pytest.fixture
def fashioniq_dir(tmp_path: Path, photos: dict[str, Image.Image]) -> Path:
    root = tmp_path / "fashion-iq"
    layout = {
        "dress": ["astronaut", "coffee", "chelsea"],
        "shirt": ["rocket", "camera", "coins"],
        "toptee": ["moon", "clock", "page"],
    }
    for cat, items in layout.items():
        names = [f"B00{cat.upper()}{i}" for i in range(len(items))]
        for i, (name, photo) in enumerate(zip(names, items, strict=True)):
            suffix = ".png" if (cat == "shirt" and i == 0) else ".jpg"
            _save(photos[photo], root / "images" / f"{name}{suffix}")
        _dump(names, root / "image_splits" / f"split.{cat}.val.json")
        captions = [
            {
                "candidate": names[0],
                "target": names[1],
                "captions": [f"is a {items[1]}.", "has more color "],
            },
            # a target missing from the gallery can never be found: a miss
            {
                "candidate": names[1],
                "target": "B00MISSING",
                "captions": ["is darker", f"shows {items[0]}?"],
            },
        ]
        _dump(captions, root / "captions" / f"cap.{cat}.val.json")
    return root


# --- CIRCO ------------------------------------------------------------------------------

CIRCO_IDS = {
    9761: "astronaut",
    489535: "coffee",
    57541: "chelsea",
    375057: "rocket",
    85932: "camera",
    119881: "coins",
    2097: "moon",
}


@pytest.fixture
def circo_dir(tmp_path: Path, photos: dict[str, Image.Image]) -> Path:
    root = tmp_path / "CIRCO"
    images = []
    for image_id, photo in CIRCO_IDS.items():
        file_name = f"{image_id:012d}.jpg"
        _save(photos[photo], root / "COCO2017_unlabeled" / "unlabeled2017" / file_name)
        images.append({"file_name": file_name, "id": image_id, "height": 48, "width": 48})
    _dump(
        {"images": images},
        root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json",
    )
    val = [
        {
            "reference_img_id": 85932,
            "target_img_id": 375057,
            "relative_caption": "is a rocket",
            "shared_concept": "a thing",
            "gt_img_ids": [375057, 9761, 57541],
            "id": 0,
            "semantic_aspects": ["addition"],
        },
        {
            "reference_img_id": 85932,
            "target_img_id": 489535,
            "relative_caption": "shows camera",
            "shared_concept": "coffee",
            "gt_img_ids": [489535],
            "id": 1,
            "semantic_aspects": [],
        },
    ]
    _dump(val, root / "annotations" / "val.json")
    test = [{k: v for k, v in e.items() if k not in ("target_img_id", "gt_img_ids")} for e in val]
    _dump(test, root / "annotations" / "test.json")
    return root


# --- Karpathy splits --------------------------------------------------------------------


def _karpathy_images(photos_by_split: dict[str, list[str]], coco: bool) -> list[dict]:
    images = []
    imgid = 0
    sentid = 0
    for split, names in photos_by_split.items():
        for photo in names:
            n_captions = 6 if (coco and photo == "rocket") else 5
            sentences = []
            for j in range(n_captions):
                words = (
                    f"a photo of a {photo} number {j}" if j < 5 else "an extra astronaut caption"
                )
                sentences.append(
                    {"tokens": words.split(), "raw": words + " .", "imgid": imgid, "sentid": sentid}
                )
                sentid += 1
            entry = {
                "filename": f"COCO_val2014_{imgid:012d}.jpg" if coco else f"{1000 + imgid}.jpg",
                "imgid": imgid,
                "split": split,
                "sentences": sentences,
                "sentids": [s["sentid"] for s in sentences],
            }
            if coco:
                entry["filepath"] = "val2014"
                entry["cocoid"] = 500000 + imgid
            images.append(entry)
            imgid += 1
    return images


@pytest.fixture
def flickr_dir(tmp_path: Path, photos: dict[str, Image.Image]) -> Path:
    root = tmp_path / "flickr30k"
    images = _karpathy_images(
        {"train": ["page"], "test": ["astronaut", "coffee", "rocket", "clock"]}, coco=False
    )
    for img, photo in zip(images, ["page", "astronaut", "coffee", "rocket", "clock"], strict=True):
        _save(photos[photo], root / "flickr30k-images" / img["filename"])
    _dump({"images": images, "dataset": "flickr30k"}, root / "dataset_flickr30k.json")
    return root


@pytest.fixture
def coco_dir(tmp_path: Path, photos: dict[str, Image.Image]) -> Path:
    root = tmp_path / "coco"
    images = _karpathy_images(
        {"restval": ["page"], "test": ["chelsea", "rocket", "moon"]}, coco=True
    )
    for img, photo in zip(images, ["page", "chelsea", "rocket", "moon"], strict=True):
        _save(photos[photo], root / img["filepath"] / img["filename"])
    _dump({"images": images, "dataset": "coco"}, root / "dataset_coco.json")
    return root
