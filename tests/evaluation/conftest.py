"""Tiny benchmark folders in each benchmark's official on-disk layout, with small generated images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _image(path: Path, seed: int, size: tuple[int, int] = (24, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    pixels = np.clip(base + rng.integers(-30, 30, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def _json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


CIRR_IMAGES = ["a", "b", "c", "d", "e", "f", "g", "h"]
# Three queries: (pairid, reference, target, members)
CIRR_QUERIES = [
    (11, "a", "b", ["a", "b", "c", "d", "e", "f"]),
    (12, "b", "c", ["b", "c", "d", "e", "f", "g"]),
    (13, "c", "a", ["c", "a", "d", "e", "f", "g"]),
]


def build_cirr(root: Path) -> Path:
    """CIRR root with `cirr/captions`, `cirr/image_splits`, and `dev/`, `test1/` images (8 each)."""
    for split, folder in (("val", "dev"), ("test1", "test1")):
        relpaths = {}
        for index, name in enumerate(CIRR_IMAGES):
            relpaths[f"{folder}-{name}"] = f"./{folder}/{folder}-{name}.png"
            _image(root / folder / f"{folder}-{name}.png", seed=index + (100 if split == "test1" else 0))
        _json(root / "cirr" / "image_splits" / f"split.rc2.{split}.json", relpaths)
        captions = []
        for pairid, reference, target, members in CIRR_QUERIES:
            entry = {
                "pairid": pairid,
                "reference": f"{folder}-{reference}",
                "caption": f"change {reference} into {target}",
                "img_set": {"id": pairid, "members": [f"{folder}-{m}" for m in members]},
            }
            if split == "val":
                entry["target_hard"] = f"{folder}-{target}"
                entry["target_soft"] = {f"{folder}-{target}": 1.0}
            captions.append(entry)
        _json(root / "cirr" / "captions" / f"cap.rc2.{split}.json", captions)
    return root


CIRCO_IDS = [101, 102, 103, 104, 105, 106, 107, 108]


def build_circo(root: Path) -> Path:
    """CIRCO root: `annotations/{val,test}.json` and 8 COCO-2017 unlabeled images."""
    images = [{"id": image_id, "file_name": f"{image_id:012d}.jpg"} for image_id in CIRCO_IDS]
    _json(root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json", {"images": images})
    for index, image_id in enumerate(CIRCO_IDS):
        _image(root / "COCO2017_unlabeled" / "unlabeled2017" / f"{image_id:012d}.jpg", seed=200 + index)
    val = [
        {
            "id": 0,
            "reference_img_id": 101,
            "target_img_id": 102,
            "relative_caption": "has two dogs",
            "shared_concept": "dog",
            "gt_img_ids": [102, 104, 107],
        },
        {
            "id": 1,
            "reference_img_id": 103,
            "target_img_id": 105,
            "relative_caption": "is at night",
            "shared_concept": "street",
            "gt_img_ids": [105],
        },
    ]
    _json(root / "annotations" / "val.json", val)
    test = [{k: v for k, v in entry.items() if k not in ("target_img_id", "gt_img_ids")} for entry in val]
    _json(root / "annotations" / "test.json", test)
    return root


def build_fashioniq(root: Path) -> Path:
    """FashionIQ root: dress and shirt (6 images each), toptee (3 images), one or two pairs per category."""
    galleries = {
        "dress": [f"D{i}" for i in range(12)],
        "shirt": [f"S{i}" for i in range(12)],
        "toptee": ["T0", "T1", "T2"],
    }
    captions = {
        "dress": [
            {"candidate": "D0", "target": "D1", "captions": ["is red.", "has long sleeves?"]},
            {"candidate": "D2", "target": "D3", "captions": [" is shorter", "is blue"]},
        ],
        "shirt": [{"candidate": "S0", "target": "S1", "captions": ["has a logo", "is white,"]}],
        "toptee": [{"candidate": "T0", "target": "T1", "captions": ["is green", "has stripes"]}],
    }
    seed = 300
    for category, names in galleries.items():
        _json(root / "image_splits" / f"split.{category}.val.json", names)
        _json(root / "captions" / f"cap.{category}.val.json", captions[category])
        for name in names:
            _image(root / "images" / f"{name}.jpg", seed=seed)
            seed += 1
    return root


def build_genecis(root: Path) -> Path:
    """GeneCIS root: the four task files (two queries each), COCO val2017 and VG_100K_all images."""
    for index, image_id in enumerate(range(1, 9)):
        _image(root / "val2017" / f"{image_id:012d}.jpg", seed=400 + index)
    for index, image_id in enumerate(range(2001, 2009)):
        _image(root / "VG_100K_all" / f"{image_id}.jpg", seed=500 + index, size=(40, 30))

    def coco(image_id):
        return {"val_image_id": image_id}

    def vg(image_id, box=(5, 5, 10, 8)):
        return {"image_id": image_id, "instance_bbox": list(box)}

    for task in ("focus_object", "change_object"):
        _json(
            root / "genecis" / f"{task}.json",
            [
                {"reference": coco(1), "target": coco(2), "gallery": [coco(3), coco(4)], "condition": "dog"},
                {"reference": coco(5), "target": coco(6), "gallery": [coco(3), coco(7), coco(8)], "condition": "car"},
            ],
        )
    for task in ("focus_attribute", "change_attribute"):
        _json(
            root / "genecis" / f"{task}.json",
            [
                {"reference": vg(2001), "target": vg(2002), "gallery": [vg(2003), vg(2004)], "condition": "red"},
                {
                    "reference": vg(2005),
                    "target": vg(2006),
                    "gallery": [vg(2003), vg(2007, (0, 0, 40, 30))],
                    "condition": "wooden",
                },
            ],
        )
    return root


@pytest.fixture
def cirr_dir(tmp_path) -> Path:
    return build_cirr(tmp_path / "CIRR")


@pytest.fixture
def circo_dir(tmp_path) -> Path:
    return build_circo(tmp_path / "CIRCO")


@pytest.fixture
def fashioniq_dir(tmp_path) -> Path:
    return build_fashioniq(tmp_path / "FashionIQ")


@pytest.fixture
def genecis_dir(tmp_path) -> Path:
    return build_genecis(tmp_path / "GeneCIS")


# Tiny LinCIR / CompoDiff folders built from the fixture CLIP (shared with the retrieval tests).
from retrieval.conftest import compodiff_dir, lincir_dir  # noqa: E402, F401
