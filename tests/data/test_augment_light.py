"""The light augmentation chain (flip + zoom + brightness/contrast), the augment setting's
migration from true/false, and the in-memory sample cache."""

from __future__ import annotations

import numpy as np
import pytest

from tests.paths import ROOT
from yolact_lite.config import config_from_dict
from yolact_lite.data import CocoDataset, build_train_transform
from yolact_lite.data.transforms import RandomBrightnessContrast, RandomZoom

TRAIN = ROOT / "data" / "coco_mini" / "train"


def _rect_sample(h=120, w=160, box=(40, 30, 100, 90)):
    image = np.full((h, w, 3), 50.0, dtype=np.float32)
    masks = np.zeros((1, h, w), dtype=np.uint8)
    x1, y1, x2, y2 = box
    masks[0, y1:y2, x1:x2] = 1
    image[y1:y2, x1:x2] = 200.0
    return {"image": image, "masks": masks, "boxes": np.array([box], dtype=np.float32),
            "labels": np.array([0]), "is_crowd": np.array([False])}


def _mask_box(mask, thr=0.5):
    ys, xs = np.nonzero(mask > thr)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


@pytest.mark.parametrize("zoom", [0.5, 0.8, 1.5, 2.0])
def test_zoom_in_crops_zoom_out_shrinks_and_boxes_follow_masks(zoom):
    sample = _rect_sample()
    size = (120, 160) if zoom < 1 else (round(120 / zoom), round(160 / zoom))
    for seed in range(5):
        out = RandomZoom(zoom, zoom)(sample, np.random.default_rng(seed))
        assert out["image"].shape[:2] == size and out["masks"].shape[1:] == size
        assert len(out["boxes"]) == 1  # the one gt's centre is always inside at these zooms
        np.testing.assert_allclose(out["boxes"][0], _mask_box(out["masks"][0]), atol=1.01)
        area = (out["boxes"][0, 2] - out["boxes"][0, 0]) * (out["boxes"][0, 3] - out["boxes"][0, 1])
        if zoom < 1:
            assert area == pytest.approx(60 * 60 * zoom * zoom, rel=0.05)
            assert out["image"][0, 0, 0] == 0.0 or out["image"][-1, -1, 0] == 0.0  # the fill shows
        assert sample["masks"].sum() == 3600  # the input is not modified


def test_zoom_in_without_a_visible_gt_leaves_the_image_whole():
    sample = _rect_sample(box=(0, 0, 4, 4))  # its centre can rarely be inside a half-size window
    sample["is_crowd"] = np.array([True])  # ... and a crowd alone never justifies a crop
    out = RandomZoom(2.0, 2.0)(sample, np.random.default_rng(0))
    assert out["image"].shape == sample["image"].shape and np.array_equal(out["masks"], sample["masks"])


def test_light_chain_is_deterministic_and_differs_from_none():
    ds = CocoDataset(TRAIN / "annotations.json", TRAIN / "images", skip_empty=True)
    raw = ds.raw_sample(0)
    light = build_train_transform(128, [123.68, 116.78, 103.94], [58.4, 57.12, 57.38], augment="light")
    none = build_train_transform(128, [123.68, 116.78, 103.94], [58.4, 57.12, 57.38], augment="none")
    a, b = light(raw, np.random.default_rng(3)), light(raw, np.random.default_rng(3))
    assert a["image"].shape == (3, 128, 128)
    assert np.array_equal(a["image"].numpy(), b["image"].numpy()) and np.array_equal(a["boxes"], b["boxes"])
    outs = [light(raw, np.random.default_rng(s))["image"].numpy() for s in range(4)]
    plain = none(raw, None)["image"].numpy()
    assert any(not np.allclose(o, plain) for o in outs)
    with pytest.raises(ValueError, match="augment must be one of"):
        build_train_transform(128, [0, 0, 0], [1, 1, 1], augment="strong")


def test_brightness_contrast_values():
    sample = _rect_sample()
    out = RandomBrightnessContrast(delta=10.0, contrast=(2.0, 2.0), p=1.0)(sample, np.random.default_rng(0))
    b = out["image"][0, 0, 0] - 2.0 * 50.0
    assert -10.0 <= b <= 10.0 and out["image"][35, 45, 0] == pytest.approx(2.0 * 200.0 + b)


def test_augment_true_false_migrate_with_a_note(capsys):
    assert config_from_dict({"train": {"augment": True}}).train.augment.chain == "ssd"
    assert config_from_dict({"train": {"augment": False}}).train.augment.chain == "none"
    assert "train.augment=false is now train.augment=none" in capsys.readouterr().err


def test_sample_cache_returns_the_decoded_sample():
    ds = CocoDataset(TRAIN / "annotations.json", TRAIN / "images", skip_empty=True)
    first = ds.raw_sample(1)
    nbytes = ds.cache_samples()
    assert nbytes > first["image"].nbytes
    cached = ds.raw_sample(1)
    assert cached is ds.raw_sample(1)
    assert np.array_equal(cached["image"], first["image"]) and np.array_equal(cached["masks"], first["masks"])
