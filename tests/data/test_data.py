"""Tests for yolact_lite.data: image reading, COCO loading, transforms, preprocessing."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.paths import ROOT
from yolact_lite.data import (
    CocoDataset,
    Expand,
    Letterbox,
    MinBoxFilter,
    PhotometricDistort,
    RandomMirror,
    RandomSampleCrop,
    Resize,
    build_eval_transform,
    build_train_transform,
    coco_subset,
    collate,
    preprocess_batch,
    preprocess_image,
    read_image,
)
from yolact_lite.errors import DataError
from yolact_lite.structures import InputGeometry

BUNDLED = ROOT / "data" / "coco_mini"
MEAN = [123.68, 116.78, 103.94]
STD = [58.40, 57.12, 57.38]
MEAN_BGR = tuple(reversed(MEAN))


def _json(split):
    return json.loads((BUNDLED / split / "annotations.json").read_text())


@pytest.fixture(scope="module")
def train_ds():
    return CocoDataset(BUNDLED / "train" / "annotations.json", BUNDLED / "train" / "images")


@pytest.fixture(scope="module")
def val_ds():
    return CocoDataset(BUNDLED / "val" / "annotations.json", BUNDLED / "val" / "images")


def _support_excess(mask: np.ndarray, box) -> float:
    """How far (pixels) the nonzero support of ``mask`` sticks out of ``box``."""
    ys, xs = np.nonzero(mask > 0)
    if len(xs) == 0:
        return 0.0
    x1, y1, x2, y2 = (float(v) for v in box)
    return max(x1 - xs.min(), y1 - ys.min(), xs.max() + 1 - x2, ys.max() + 1 - y2, 0.0)


# =========================================================================== bundled subset

def test_bundled_subset_files_and_size():
    files = [p for p in BUNDLED.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 34 * 2 ** 20  # data/ as a whole stays <= 48 MiB
    notice = (BUNDLED / "NOTICE.md").read_text()
    assert "Keep this notice with any copy" in notice and "This copy" in notice
    for split in ("train", "val"):
        data = _json(split)
        assert set(data) >= {"info", "licenses", "images", "annotations", "categories"}
        assert len(data["categories"]) == 80
        names = {p.name for p in (BUNDLED / split / "images").iterdir()}
        assert names == {img["file_name"] for img in data["images"]}
        person = json.loads((BUNDLED / split / "annotations_person.json").read_text())
        assert {k: v for k, v in person.items() if k not in ("categories", "annotations")} == \
            {k: v for k, v in data.items() if k not in ("categories", "annotations")}
        assert person["categories"] == [c for c in data["categories"] if c["id"] == 1]
        assert person["categories"][0]["name"] == "person"
        assert person["annotations"] == [a for a in data["annotations"] if a["category_id"] == 1]
    train, val = _json("train"), _json("val")
    with_person = {a["image_id"] for a in train["annotations"] if a["category_id"] == 1 and not a["iscrowd"]}
    assert {img["id"] for img in train["images"]} == with_person | {483330}
    assert len(train["images"]) == 102 and len(val["images"]) == 90


def test_bundled_images_are_byte_identical_to_the_source(shared_data):
    SHARED = shared_data / "coco_mini"
    for split in ("train", "val"):
        src = json.loads((SHARED / split / "annotations.json").read_text())
        src_anns = {a["id"]: a for a in src["annotations"]}
        for img in _json(split)["images"]:
            name = img["file_name"]
            assert (BUNDLED / split / "images" / name).read_bytes() == \
                (SHARED / split / "images" / name).read_bytes()
        for ann in _json(split)["annotations"]:
            assert ann == src_anns[ann["id"]]
        src_person = {a["image_id"] for a in src["annotations"] if a["category_id"] == 1 and not a["iscrowd"]}
        assert src_person <= {img["id"] for img in _json(split)["images"]}  # every person image ships


def test_coco_subset_keeps_only_the_chosen_images_and_every_other_key():
    data = {"info": {"v": 1}, "categories": [{"id": 9, "name": "x"}],
            "images": [{"id": i} for i in (1, 2, 3)],
            "annotations": [{"id": 10 + i, "image_id": i} for i in (1, 2, 2, 3)]}
    sub = coco_subset(data, [2, 3, 7])
    assert [im["id"] for im in sub["images"]] == [2, 3]
    assert [a["id"] for a in sub["annotations"]] == [12, 12, 13]
    assert sub["info"] == data["info"] and sub["categories"] is data["categories"]
    assert len(data["images"]) == 3 and len(data["annotations"]) == 4  # the input is not modified


def test_dataset_counts_and_class_names(train_ds, val_ds):
    for ds, split in ((train_ds, "train"), (val_ds, "val")):
        data = _json(split)
        assert len(ds) == len(data["images"])
        assert ds.num_classes == 80
        cats = sorted(data["categories"], key=lambda c: c["id"])
        assert ds.class_names == [c["name"] for c in cats]
        assert ds.category_ids == [c["id"] for c in cats]
        total = sum(ds.num_instances(i) for i in range(len(ds)))
        assert total == len(data["annotations"]) - sum(ds.dropped.values())
        assert ds.image_ids == [img["id"] for img in data["images"]]


def test_label_mapping_round_trip(val_ds):
    for label in range(val_ds.num_classes):
        cid = val_ds.label_to_category_id(label)
        assert val_ds.category_id_to_label(cid) == label
    assert val_ds.category_ids[0] == 1 and val_ds.category_ids[-1] == 90  # COCO id space
    data = _json("val")
    for i in range(3):
        sample = val_ds.raw_sample(i)
        expected = Counter(a["category_id"] for a in data["annotations"]
                           if a["image_id"] == sample["image_id"])
        got = Counter(val_ds.label_to_category_id(int(lab)) for lab in sample["labels"])
        assert got == expected
    with pytest.raises(DataError, match="unknown category id 91"):
        val_ds.category_id_to_label(91)


def test_raw_samples_crowds_last_and_masks_inside_boxes(val_ds):
    crowds = 0
    for i in range(len(val_ds)):
        s = val_ds.raw_sample(i)
        h, w = s["orig_size"]
        n = len(s["labels"])
        assert s["image"].shape == (h, w, 3) and s["image"].dtype == np.uint8
        assert s["masks"].shape == (n, h, w) and s["masks"].dtype == np.uint8
        assert s["boxes"].shape == (n, 4) and s["boxes"].dtype == np.float32
        assert s["labels"].dtype == np.int64 and s["is_crowd"].dtype == bool
        c = s["is_crowd"]
        crowds += int(c.sum())
        if c.any():
            assert c[int(np.argmax(c)):].all(), "crowd annotations must be the last rows"
        assert np.all(s["boxes"][:, 2] > s["boxes"][:, 0]) and np.all(s["boxes"][:, 3] > s["boxes"][:, 1])
        assert np.all(s["boxes"] >= 0) and np.all(s["boxes"][:, 2] <= w) and np.all(s["boxes"][:, 3] <= h)
        for m, b in zip(s["masks"], s["boxes"]):
            assert m.any()
            assert _support_excess(m, b) <= 1.0
    assert crowds >= 1


def test_dataset_transform_is_seeded_per_index_and_epoch(train_ds):
    ds = CocoDataset(train_ds.annotation_file, train_ds.image_dir,
                     transform=build_train_transform(96, MEAN, STD), seed=3)
    a, b = ds[(2, 5)], ds[(2, 5)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
    ds.set_epoch(5)
    assert torch.equal(ds[2]["image"], a["image"])
    differs = any(not torch.equal(ds[(2, e)]["image"], a["image"]) for e in range(6, 10))
    assert differs
    images, targets = collate([ds[0], ds[1]])
    assert images.shape == (2, 3, 96, 96) and images.dtype == torch.float32
    assert len(targets) == 2
    for t in targets:
        assert set(t) == {"boxes", "labels", "masks", "is_crowd", "image_id", "orig_size", "geometry"}
        n = t["boxes"].shape[0]
        assert t["masks"].shape == (n, 96, 96) and t["labels"].shape == (n,)


# =========================================================================== synthetic COCO

def _write_png(path: Path, h: int, w: int):
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


def _synthetic(tmp_path: Path, **changes):
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    for name in ("a.png", "b.png", "c.png"):
        _write_png(img_dir / name, 40, 60)
    poly = [10, 10, 30, 10, 30, 25, 10, 25]
    crowd_rle = {"size": [40, 60], "counts": [40 * 2 + 5, 20, 40 * 60 - 40 * 2 - 5 - 20]}
    data = {
        "info": {}, "licenses": [],
        "images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60},
                   {"id": 2, "file_name": "b.png", "height": 40, "width": 60},
                   {"id": 3, "file_name": "c.png", "height": 40, "width": 60}],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"},
                       {"id": 42, "name": "forty-two"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 42, "iscrowd": 1, "bbox": [2, 5, 1, 20],
             "segmentation": crowd_rle},
            {"id": 11, "image_id": 1, "category_id": 7, "iscrowd": 0, "bbox": [10, 10, 20, 15],
             "segmentation": [poly]},
            {"id": 12, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": [40, 20, 30, 30],
             "segmentation": [[40, 20, 75, 20, 75, 55, 40, 55]]},  # sticks out: clipped
            {"id": 13, "image_id": 2, "category_id": 7, "iscrowd": 0, "bbox": [1, 1, 5, 5],
             "segmentation": [[1, 1, 6, 6]]},  # 2 points
            {"id": 14, "image_id": 2, "category_id": 7, "iscrowd": 0, "bbox": [5, 5, 0, 8],
             "segmentation": [poly]},  # zero-area box
            {"id": 15, "image_id": 2, "category_id": 3, "iscrowd": 0, "bbox": [1, 1, 5, float("nan")],
             "segmentation": [poly]},
            {"id": 16, "image_id": 2, "category_id": 3, "iscrowd": 0, "bbox": [-20, -20, 5, 5],
             "segmentation": [[-20, -20, -15, -20, -15, -15]]},  # outside the image
        ],
    }
    for key, value in changes.items():
        data[key] = value
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    return ann, img_dir, data


def test_synthetic_noncontiguous_ids_and_drops(tmp_path):
    ann, img_dir, _ = _synthetic(tmp_path)
    ds = CocoDataset(ann, img_dir)
    assert ds.num_classes == 3
    assert ds.category_ids == [3, 7, 42]
    assert ds.class_names == ["three", "seven", "forty-two"]
    assert [ds.category_id_to_label(c) for c in (3, 7, 42)] == [0, 1, 2]
    assert ds.dropped == Counter({"polygon_too_few_points": 1, "zero_area_box": 2,
                                  "non_finite_coordinates": 1})
    assert len(ds) == 3  # images without (valid) annotations are kept

    s = ds.raw_sample(0)
    assert s["labels"].tolist() == [1, 0, 2]  # crowd (id 42) moved to the end
    assert s["is_crowd"].tolist() == [False, False, True]
    np.testing.assert_allclose(s["boxes"][1], [40, 20, 60, 40])  # clipped to the image
    assert s["masks"][1][20:40, 40:60].all() and s["masks"][1].sum() == 400
    assert s["masks"][2].sum() == 20 and s["masks"][2][5:25, 2].all()
    for i in (1, 2):
        e = ds.raw_sample(i)
        assert e["masks"].shape == (0, 40, 60) and e["boxes"].shape == (0, 4)

    assert len(CocoDataset(ann, img_dir, skip_empty=True)) == 1
    assert CocoDataset(ann, img_dir, skip_empty=True).num_empty_images == 2


@pytest.mark.parametrize("change, pattern", [
    ({"categories": [{"id": 7, "name": "seven"}]}, r"unknown category id (42|3)"),
    ({"annotations": [{"id": 1, "image_id": 9, "category_id": 7, "bbox": [0, 0, 1, 1],
                       "segmentation": []}]}, "unknown image id 9"),
    ({"images": {"id": 1}}, "'images' must be a list"),
    ({"categories": [{"id": 7, "name": "a"}, {"id": 7, "name": "b"}]}, "duplicate category id 7"),
    ({"images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}] * 2},
     "duplicate image id 1"),
    ({"annotations": [{"id": 5, "image_id": 1, "category_id": 7, "bbox": [0, 0, 4, 4],
                       "segmentation": [[0, 0, 4, 0, 4, 4]]}] * 2}, "duplicate annotation id 5"),
    ({"annotations": [{"id": 5, "image_id": 1, "category_id": 7, "bbox": [0, 0, 4],
                       "segmentation": []}]}, "'bbox' must be a list of 4 numbers"),
    ({"images": [{"id": 1, "file_name": "zzz.png", "height": 40, "width": 60}],
      "annotations": []}, "missing.*zzz.png"),
])
def test_malformed_annotation_files_raise_data_error(tmp_path, change, pattern):
    ann, img_dir, _ = _synthetic(tmp_path, **change)
    with pytest.raises(DataError, match=pattern) as info:
        CocoDataset(ann, img_dir)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(tmp_path, key):
    ann, img_dir, data = _synthetic(tmp_path)
    del data[key]
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match=f"missing required key '{key}'") as info:
        CocoDataset(ann, img_dir)
    assert str(ann) in str(info.value)


def test_not_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ this is not json")
    with pytest.raises(DataError, match="not valid JSON") as info:
        CocoDataset(bad, tmp_path)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataError, match="no such annotation file"):
        CocoDataset(tmp_path / "nope.json", tmp_path)
    with pytest.raises(DataError, match="is a folder, not an annotation file"):
        CocoDataset(tmp_path, tmp_path)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match="top level must be a JSON object"):
        CocoDataset(tmp_path / "list.json", tmp_path)


def test_image_size_mismatch_is_reported(tmp_path):
    ann, img_dir, _ = _synthetic(tmp_path)
    _write_png(img_dir / "a.png", 41, 60)
    ds = CocoDataset(ann, img_dir)
    with pytest.raises(DataError, match="a.png: image is 60x41 but"):
        ds.raw_sample(0)


# =========================================================================== image_io

def test_read_image_variants(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = read_image(tmp_path / "g.png")
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert all(np.array_equal(out[:, :, c], gray) for c in range(3))

    bgra = np.zeros((5, 6, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 0
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    out = read_image(tmp_path / "a.png")
    assert out.shape == (5, 6, 3) and np.all(out == [10, 20, 30])  # alpha dropped, not composited

    deep = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out[0, :, 0].tolist() == [0, 100, 255]

    cv2.imwrite(str(tmp_path / "one.png"), np.array([[[1, 2, 3]]], np.uint8))
    assert read_image(str(tmp_path / "one.png")).tolist() == [[[1, 2, 3]]]

    jpg = next((BUNDLED / "val" / "images").iterdir())
    img = read_image(jpg)
    assert img.ndim == 3 and img.shape[2] == 3 and img.flags["C_CONTIGUOUS"]


def test_read_image_errors(tmp_path):
    cases = {}
    (tmp_path / "empty.jpg").write_bytes(b"")
    cases["empty.jpg"] = "empty file"
    (tmp_path / "text.jpg").write_text("definitely not an image\n")
    cases["text.jpg"] = "not a readable image"
    data = next((BUNDLED / "val" / "images").iterdir()).read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    cases["half.jpg"] = "truncated"
    (tmp_path / "noeoi.jpg").write_bytes(data[:-2])
    cases["noeoi.jpg"] = "truncated"
    cases["missing.png"] = "no such file"
    for name, pattern in cases.items():
        with pytest.raises(DataError, match=pattern) as info:
            read_image(tmp_path / name)
        msg = str(info.value)
        assert str(tmp_path / name) in msg and "\n" not in msg
    with pytest.raises(DataError, match="is a directory"):
        read_image(tmp_path)


# =========================================================================== transforms

def _toy_sample(h=80, w=100):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    boxes = np.array([[10, 12, 50, 40], [60, 30, 95, 78], [5, 50, 30, 75]], np.float32)
    masks = np.zeros((3, h, w), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        masks[k, y1:y2, x1:x2] = 1
    return {"image": image, "masks": masks, "boxes": boxes,
            "labels": np.array([0, 4, 2], np.int64), "is_crowd": np.array([False, False, True]),
            "image_id": 1, "orig_size": (h, w)}


def test_train_transform_is_deterministic_given_the_generator():
    t = build_train_transform(64, MEAN, STD)
    sample = _toy_sample()
    a = t(sample, np.random.default_rng(123))
    b = t(sample, np.random.default_rng(123))
    for key in ("image", "boxes", "masks", "labels", "is_crowd"):
        assert torch.equal(a[key], b[key])
    outs = [t(sample, np.random.default_rng(s))["image"] for s in range(5)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    assert np.array_equal(sample["boxes"][0], [10, 12, 50, 40])  # input untouched


def test_random_transforms_require_an_explicit_generator():
    for t in (PhotometricDistort(), Expand(), RandomSampleCrop(), RandomMirror()):
        with pytest.raises(ValueError, match="Generator"):
            t(_toy_sample(), None)


def test_mirror_twice_is_identity():
    s = _toy_sample()
    m = RandomMirror(p=1.0)
    once = m(s, None)
    assert np.array_equal(once["image"], s["image"][:, ::-1])
    np.testing.assert_allclose(once["boxes"][0], [100 - 50, 12, 100 - 10, 40])
    twice = m(once, None)
    for key in ("image", "masks", "boxes"):
        assert np.array_equal(twice[key], s[key])


def test_photometric_distort_changes_only_the_image_and_does_not_clip():
    s = _toy_sample()
    seen_out_of_range = False
    for seed in range(20):
        out = PhotometricDistort()(s, np.random.default_rng(seed))
        assert out["image"].dtype == np.float32 and out["image"].shape == s["image"].shape
        assert out["boxes"] is s["boxes"] and out["masks"] is s["masks"]
        seen_out_of_range |= bool(out["image"].min() < 0 or out["image"].max() > 255)
    assert seen_out_of_range


def test_expand_pads_with_mean_and_moves_boxes():
    s = _toy_sample()
    for seed in range(10):
        out = Expand(MEAN_BGR, p=1.0)(s, np.random.default_rng(seed))
        h, w = out["image"].shape[:2]
        assert h >= 80 and w >= 100
        for m, b in zip(out["masks"], out["boxes"]):
            assert _support_excess(m, b) == 0
        dx, dy = out["boxes"][0, :2] - s["boxes"][0, :2]
        assert np.array_equal(out["masks"][:, int(dy):int(dy) + 80, int(dx):int(dx) + 100], s["masks"])
        if (h, w) != (80, 100):
            corners = [out["image"][0, 0], out["image"][-1, -1], out["image"][0, -1], out["image"][-1, 0]]
            assert any(np.allclose(c, MEAN_BGR) for c in corners)


def test_random_sample_crop_keeps_centres_and_needs_a_non_crowd():
    s = _toy_sample()
    for seed in range(30):
        out = RandomSampleCrop()(s, np.random.default_rng(seed))
        h, w = out["image"].shape[:2]
        assert out["masks"].shape[1:] == (h, w)
        assert (~out["is_crowd"]).any()
        assert np.all(out["boxes"][:, 0::2] <= w) and np.all(out["boxes"][:, 1::2] <= h)
        for m, b in zip(out["masks"], out["boxes"]):
            assert _support_excess(m, b) == 0
    crowd_only = dict(s, is_crowd=np.array([True, True, True]))
    out = RandomSampleCrop()(crowd_only, np.random.default_rng(0))
    assert out["image"] is s["image"]


def test_letterbox_keeps_aspect_ratio():
    s = _toy_sample(h=50, w=100)
    out = Letterbox(64, MEAN_BGR)(s, None)
    g = out["geometry"]
    assert (g.content_h, g.content_w) == (32, 64) and out["image"].shape == (64, 64, 3)
    assert abs(g.scale_x - g.scale_y) < 1e-9
    np.testing.assert_allclose(out["boxes"][0], np.array([10, 12, 50, 40]) * 0.64, rtol=1e-6)
    assert np.allclose(out["image"][40:, :], MEAN_BGR)  # bottom padding
    assert out["masks"][:, 32:, :].max() == 0
    t = build_eval_transform(64, MEAN, STD, preserve_aspect_ratio=True)(s, None)
    assert torch.allclose(t["image"][:, 32:, :], torch.zeros(3, 32, 64), atol=1e-5)


def test_min_box_filter_uses_input_pixels():
    s = {"image": np.zeros((200, 200, 3), np.uint8),
         "masks": np.ones((2, 200, 200), np.uint8),
         "boxes": np.array([[10, 10, 14, 100], [50, 50, 62, 150]], np.float32),
         "labels": np.array([3, 5]), "is_crowd": np.array([False, False]),
         "image_id": 0, "orig_size": (200, 200)}
    resized = Resize(100)(s, None)  # widths become 2 px and 6 px
    np.testing.assert_allclose(resized["boxes"][:, 2] - resized["boxes"][:, 0], [2, 6])
    kept = MinBoxFilter(4)(resized, None)
    assert kept["labels"].tolist() == [5] and kept["masks"].shape[0] == 1
    assert MinBoxFilter(0)(resized, None)["labels"].tolist() == [3, 5]
    full = build_train_transform(100, MEAN, STD, augment="none", min_box_pixels=4)(s, None)
    assert full["labels"].tolist() == [5]


@st.composite
def _random_samples(draw):
    h = draw(st.integers(8, 90))
    w = draw(st.integers(8, 90))
    n = draw(st.integers(0, 5))
    n_crowd = draw(st.integers(0, n))
    boxes, masks = [], np.zeros((n, h, w), np.uint8)
    for k in range(n):
        x1 = draw(st.floats(0, w - 1.0))
        y1 = draw(st.floats(0, h - 1.0))
        x2 = draw(st.floats(x1 + 1.0, float(w)))
        y2 = draw(st.floats(y1 + 1.0, float(h)))
        boxes.append([x1, y1, x2, y2])
        c1, r1 = math.ceil(x1), math.ceil(y1)
        c2, r2 = max(c1 + 1, math.floor(x2)), max(r1 + 1, math.floor(y2))
        if c2 <= x2 + 1e-9 and r2 <= y2 + 1e-9:
            masks[k, r1:r2, c1:c2] = 1
    seed = draw(st.integers(0, 2 ** 31))
    return {"image": np.full((h, w, 3), 128, np.uint8), "masks": masks,
            "boxes": np.array(boxes, np.float32).reshape(-1, 4),
            "labels": np.arange(n, dtype=np.int64),
            "is_crowd": np.array([False] * (n - n_crowd) + [True] * n_crowd),
            "image_id": 0, "orig_size": (h, w)}, seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_random_samples(), st.booleans())
def test_property_full_training_transform_keeps_targets_consistent(case, letterbox):
    sample, seed = case
    S = 48
    t = build_train_transform(S, MEAN, STD, preserve_aspect_ratio=letterbox, min_box_pixels=1.0)
    out = t(sample, np.random.default_rng(seed))
    n = out["boxes"].shape[0]
    assert out["image"].shape == (3, S, S) and out["image"].dtype == torch.float32
    assert out["masks"].shape == (n, S, S) and out["labels"].shape == (n,)
    assert out["is_crowd"].shape == (n,) and out["is_crowd"].dtype == torch.bool
    assert out["boxes"].dtype == torch.float32 and out["labels"].dtype == torch.int64
    assert torch.all(out["boxes"] >= 0) and torch.all(out["boxes"] <= 1)
    crowd = out["is_crowd"].numpy()
    if crowd.any():
        assert crowd[int(np.argmax(crowd)):].all()
    # labels encode the original row, so order is preserved
    assert np.all(np.diff(out["labels"].numpy()) > 0)
    # Bilinear resizing spreads a mask by at most half an input pixel: <= 2 px at S when
    # shrinking, scale/2 px when enlarging; the binarised mask (> 0.5, what the loss uses)
    # stays inside its box up to 1 px.
    g = out["geometry"]
    spread = max(2.0, 0.5 * max(g.scale_x, g.scale_y) + 1.0)
    for m, b in zip(out["masks"].numpy(), out["boxes"].numpy() * S):
        assert _support_excess(m, b) <= spread
        assert _support_excess(m > 0.5, b) <= 1.0


# =========================================================================== preprocess

def _real_image():
    return read_image(sorted((BUNDLED / "val" / "images").iterdir())[0])


@pytest.mark.parametrize("letterbox", [False, True])
def test_preprocess_matches_the_cv2_eval_transform(letterbox):
    image = _real_image()
    h, w = image.shape[:2]
    tensor, geometry = preprocess_image(image, 550, MEAN, STD, preserve_aspect_ratio=letterbox)
    assert tensor.shape == (3, 550, 550) and tensor.dtype == torch.float32
    sample = {"image": image, "masks": np.zeros((0, h, w), np.uint8),
              "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
              "is_crowd": np.zeros(0, bool), "image_id": 0, "orig_size": (h, w)}
    ref = build_eval_transform(550, MEAN, STD, preserve_aspect_ratio=letterbox)(sample, None)
    assert ref["geometry"] == geometry
    assert (tensor - ref["image"]).abs().max().item() < 1e-3
    if letterbox:
        assert max(geometry.content_h, geometry.content_w) == 550
        assert abs(geometry.content_w / geometry.content_h - w / h) < 0.01
    else:
        assert (geometry.content_h, geometry.content_w) == (550, 550)


def test_preprocess_batch_and_bad_input():
    images = [np.zeros((30, 40, 3), np.uint8), np.full((70, 20, 3), 255, np.uint8)]
    batch, geoms = preprocess_batch(images, 64, MEAN, STD, preserve_aspect_ratio=True)
    assert batch.shape == (2, 3, 64, 64)
    assert [(g.content_h, g.content_w) for g in geoms] == [(48, 64), (64, 18)]
    assert torch.all(batch[1, :, :, 18:] == 0)
    expected_white = (255 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(batch[1, :, 10, 5], expected_white, atol=1e-5)  # RGB order
    with pytest.raises(DataError, match=r"expected a BGR image of shape \[H, W, 3\], got \(10, 10\)"):
        preprocess_image(np.zeros((10, 10), np.uint8), 64, MEAN, STD)


def test_letterbox_geometry_round_trip_and_proto_crop():
    g = InputGeometry.for_image(480, 640, 550, preserve_aspect_ratio=True)
    assert (g.content_h, g.content_w) == (413, 550)
    boxes = torch.tensor([[0.0, 0.0, 640.0, 480.0], [12.5, 33.25, 100.0, 479.0]])
    back = g.boxes_to_image(g.boxes_to_input(boxes))
    assert torch.allclose(back, boxes, atol=1e-4, rtol=0)
    assert g.proto_crop(138, 138) == (math.ceil(413 * 138 / 550), 138)
    sq = InputGeometry.for_image(480, 640, 550)
    assert sq.proto_crop(138, 138) == (138, 138)
    rel = torch.tensor([[0.5, 0.5, 1.0, 1.0], [-0.1, 0.0, 1.2, 0.5]])
    np.testing.assert_allclose(sq.boxes_to_image(rel).numpy(),
                               [[320, 240, 640, 480], [0, 0, 640, 240]], atol=1e-4)
    # a box in the padding maps outside the image and is clamped
    outside = g.boxes_to_image(torch.tensor([[0.0, 0.9, 1.0, 1.0]]))
    assert outside[0, 1].item() == 480.0 and outside[0, 3].item() == 480.0
