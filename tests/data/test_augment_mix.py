"""Copy-paste, mosaic and large-scale jitter: pixel-exact cases worked out by hand, property
tests over random parameters, resume determinism, and the train.augment migration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.paths import ROOT
from yolact_lite.config import AugmentConfig, config_from_dict, load_config
from yolact_lite.data import CocoDataset, build_train_transform
from yolact_lite.data.mixing import SampleMixer, mosaic4, paste, rescale, tight_boxes
from yolact_lite.data.sampling import TrainSamples
from yolact_lite.data.transforms import RandomZoom
from yolact_lite.engine.data import StepBatchSampler
from yolact_lite.errors import ConfigError

TRAIN = ROOT / "data" / "coco_mini" / "train"


def _sample(h, w, rects, crowd=(), value=0):
    """uint8 image filled with ``value``; one binary rectangle mask (x1, y1, x2, y2) per rect,
    its box the rect; the rects listed in ``crowd`` are crowds (give them last)."""
    masks = np.zeros((len(rects), h, w), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(rects):
        masks[k, y1:y2, x1:x2] = 1
    return {"image": np.full((h, w, 3), value, dtype=np.uint8), "masks": masks,
            "boxes": np.array(rects, dtype=np.float32).reshape(-1, 4),
            "labels": np.arange(len(rects), dtype=np.int64),
            "is_crowd": np.array([k in crowd for k in range(len(rects))], dtype=bool),
            "image_id": 7, "orig_size": (h, w)}


def _check_invariants(out):
    masks, boxes = out["masks"], out["boxes"]
    n = len(out["labels"])
    assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    assert masks.shape == (n,) + out["image"].shape[:2] and boxes.shape == (n, 4)
    assert len(out["is_crowd"]) == n
    assert masks.any(axis=(1, 2)).all(), "an empty instance was kept"
    np.testing.assert_array_equal(boxes, tight_boxes(masks))
    crowd = np.asarray(out["is_crowd"])
    assert not np.any(crowd[:-1] & ~crowd[1:]), "crowds must stay last"


# --------------------------------------------------------------------------- exact cases


def test_tight_boxes_by_hand():
    masks = np.zeros((3, 5, 6), dtype=np.uint8)
    masks[0, 1:4, 2:5] = 1
    masks[1, 4, 0] = 1
    boxes = tight_boxes(masks)
    np.testing.assert_array_equal(boxes, [[2, 1, 5, 4], [0, 4, 1, 5], [0, 0, 0, 0]])


def test_paste_occludes_drops_and_refits_by_hand():
    # target 6 x 8: A rows 1-3 cols 1-4, B rows 4-5 cols 5-6 (fully under the paste), crowd C
    target = _sample(6, 8, [(1, 1, 5, 4), (5, 4, 7, 6), (0, 0, 2, 2)], crowd=(2,))
    # source 6 x 4 of value 200: one instance, cols 0-1 rows 0-5 (a 2-wide column)
    source = _sample(6, 4, [(0, 0, 2, 6)], value=200)
    source["labels"] = np.array([9])
    # pasted at top 0, left 3 (its instance covers columns 3-4); then a second, at left 5
    out = paste(target, source, 0, 3)
    out = paste(out, source, 0, 5)
    _check_invariants(out)
    # A keeps columns 1-2 (box re-fitted), B is gone, the 2 pasted columns follow, C stays last
    assert list(out["labels"]) == [0, 9, 9, 2] and list(out["is_crowd"]) == [False, False, False, True]
    np.testing.assert_array_equal(out["boxes"], [[1, 1, 3, 4], [3, 0, 5, 6], [5, 0, 7, 6], [0, 0, 2, 2]])
    expected_a = np.zeros((6, 8), dtype=np.uint8)
    expected_a[1:4, 1:3] = 1
    np.testing.assert_array_equal(out["masks"][0], expected_a)
    pasted = np.zeros((6, 8), dtype=bool)
    pasted[:, 3:7] = True
    assert np.all(out["image"][pasted] == 200) and np.all(out["image"][~pasted] == 0)
    assert target["masks"][1].sum() == 4 and np.all(target["image"] == 0)  # inputs untouched


def test_paste_cuts_what_falls_off_the_target():
    target = _sample(4, 4, [(0, 0, 1, 1)])
    source = _sample(3, 3, [(0, 0, 3, 3)], value=9)
    out = paste(target, source, 2, -1)  # rows 2-3, columns 0-1 remain visible
    _check_invariants(out)
    np.testing.assert_array_equal(out["boxes"], [[0, 0, 1, 1], [0, 2, 2, 4]])
    assert out["image"][2:, :2].min() == 9 and out["image"].sum() == 9 * 4 * 3


def test_rescale_halves_an_aligned_block_exactly():
    s = _sample(8, 8, [(2, 4, 6, 8), (1, 1, 2, 2)])  # the 1-pixel one vanishes at half size
    out = rescale(s, 4, 4)
    _check_invariants(out)
    assert list(out["labels"]) == [0]
    np.testing.assert_array_equal(out["boxes"], [[1, 2, 3, 4]])


def test_mosaic_quadrants_by_hand():
    # four 4 x 4 images (values 10, 20, 30, 40), side 8: no rescale
    parts = [_sample(4, 4, [(1, 1, 3, 3)], value=10 * (k + 1)) for k in range(4)]
    out = mosaic4(parts, 8, 4, 4, fill_bgr=(5, 5, 5))
    _check_invariants(out)
    assert out["image"].shape == (8, 8, 3) and out["image_id"] == 7
    for k, (y, x) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        assert np.all(out["image"][y:y + 4, x:x + 4] == 10 * (k + 1))
    np.testing.assert_array_equal(out["boxes"], [[1, 1, 3, 3], [5, 1, 7, 3], [1, 5, 3, 7], [5, 5, 7, 7]])


def test_mosaic_off_centre_cuts_fills_and_drops():
    # centre (2, 5): each 4 x 4 image hangs off the canvas's left or bottom edge
    parts = [_sample(4, 4, [(0, 0, 2, 2), (2, 2, 4, 4)], value=10 * (k + 1)) for k in range(4)]
    out = mosaic4(parts, 8, 2, 5, fill_bgr=(5, 5, 5))
    _check_invariants(out)
    image = out["image"][:, :, 0]
    assert np.all(image[0] == 5) and np.all(image[:, 6:] == 5)
    assert np.all(image[1:5, :2] == 10) and np.all(image[1:5, 2:6] == 20)
    assert np.all(image[5:, :2] == 30) and np.all(image[5:, 2:6] == 40)
    # image 0 (top 1, left -2) and image 2 (top 5, left -2) lose their first instance
    assert list(out["labels"]) == [1, 0, 1, 1, 0, 1]
    np.testing.assert_array_equal(out["boxes"], [[0, 3, 2, 5], [2, 1, 4, 3], [4, 3, 6, 5],
                                                 [0, 7, 2, 8], [2, 5, 4, 7], [4, 7, 6, 8]])


def test_mosaic_rescales_each_image_to_half_the_side():
    parts = [_sample(8, 4, [(0, 0, 4, 8)], value=1)] + [_sample(4, 4, [(0, 0, 2, 2)]) for _ in range(3)]
    out = mosaic4(parts, 8, 4, 4)
    _check_invariants(out)
    np.testing.assert_array_equal(out["boxes"][0], [2, 0, 4, 4])  # 8 x 4 -> 4 x 2, bottom-right at (4, 4)


def test_large_scale_jitter_zoom_out_is_exact_on_aligned_blocks():
    s = _sample(40, 40, [(10, 20, 30, 40)], value=0)
    s["image"][20:40, 10:30] = 100
    out = RandomZoom(0.1, 0.1)({**s, "image": s["image"].astype(np.float32)}, np.random.default_rng(0))
    ys, xs = np.nonzero(out["masks"][0] >= 0.5)
    box = out["boxes"][0]
    assert box[2] - box[0] == pytest.approx(2.0) and box[3] - box[1] == pytest.approx(2.0)
    np.testing.assert_array_equal([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box)


# --------------------------------------------------------------------------- properties

rect = st.tuples(st.integers(0, 23), st.integers(0, 17), st.integers(1, 12), st.integers(1, 12))


def _random_sample(data, h=18, w=24, value=0):
    rects = data.draw(st.lists(rect, min_size=0, max_size=4))
    rects = [(min(x, w - 1), min(y, h - 1), min(x + dw, w), min(y + dh, h)) for x, y, dw, dh in rects]
    n_crowd = data.draw(st.integers(0, len(rects)))
    return _sample(h, w, rects, crowd=tuple(range(len(rects) - n_crowd, len(rects))), value=value)


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(-20, 20), st.integers(-20, 20), st.integers(4, 30), st.integers(4, 30))
def test_paste_properties(data, top, left, sh, sw):
    target = _random_sample(data)
    source = _random_sample(data, sh, sw, value=255)
    source["labels"] = source["labels"] + 100
    out = paste(target, source, top, left)
    _check_invariants(out)
    alone = paste(_sample(18, 24, []), source, top, left)  # the source's instances, placed
    union = alone["masks"].any(axis=0)
    assert np.all(out["image"][union] == 255) and np.all(out["image"][~union] == 0)
    for k, label in enumerate(out["labels"]):
        if label < 100:  # a target instance keeps exactly its unoccluded pixels
            expected = target["masks"][label].astype(bool) & ~union
            np.testing.assert_array_equal(out["masks"][k], expected)
        else:
            np.testing.assert_array_equal(out["masks"][k], alone["masks"][list(alone["labels"]).index(label)])
    lost = [k for k in range(len(target["labels"])) if not (target["masks"][k].astype(bool) & ~union).any()]
    assert sorted(set(range(len(target["labels"]))) - set(out["labels"].tolist())) == lost


@settings(max_examples=40, deadline=None)
@given(st.data(), st.integers(0, 16), st.integers(0, 16), st.sampled_from([8, 12, 16, 17]))
def test_mosaic_properties(data, cx, cy, side):
    parts = [_random_sample(data, *data.draw(st.tuples(st.integers(3, 20), st.integers(3, 20))))
             for _ in range(4)]
    out = mosaic4(parts, side, min(cx, side), min(cy, side))
    _check_invariants(out)
    assert out["image"].shape == (side, side, 3)


@settings(max_examples=25, deadline=None)
@given(st.data(), st.integers(0, 2**32 - 1), st.floats(0.1, 2.0), st.booleans())
def test_mixer_properties_and_determinism(data, seed, scale_hi, mosaic_open):
    pool = [_random_sample(data, *data.draw(st.tuples(st.integers(6, 20), st.integers(6, 20))), value=k)
            for k in range(3)]

    class Source:
        def __len__(self):
            return len(pool)

        def raw_sample(self, i):
            return pool[i]

    mixer = SampleMixer(copy_paste=1.0, paste_scale=(0.1, scale_hi), mosaic=0.5)
    a = mixer(pool[0], np.random.default_rng(seed), Source(), mosaic_open)
    b = mixer(pool[0], np.random.default_rng(seed), Source(), mosaic_open)
    _check_invariants(a)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["masks"], b["masks"])
    if not mosaic_open:
        assert a["image"].shape == pool[0]["image"].shape


# --------------------------------------------------------------------------- the data path


def _mixed_dataset():
    ds = CocoDataset(TRAIN / "annotations_person.json", TRAIN / "images", skip_empty=True, seed=3)
    ds.transform = build_train_transform(96, [123.68, 116.78, 103.94], [58.4, 57.12, 57.38],
                                         augment=AugmentConfig(chain="light", scale_range=[0.1, 2.0]))
    ds.mixer = SampleMixer(copy_paste=1.0, paste_scale=(0.1, 1.0), mosaic=1.0)
    return ds


def test_same_index_epoch_and_flag_give_the_same_sample_in_a_fresh_dataset():
    first = TrainSamples(_mixed_dataset())[(4, 2, 1)]
    again = _mixed_dataset()
    second = TrainSamples(again)[(4, 2, 1)]
    for key in ("image", "masks", "boxes", "labels"):
        assert np.array_equal(np.asarray(first[key]), np.asarray(second[key]))
    other_epoch = TrainSamples(again)[(4, 3, 1)]
    closed = TrainSamples(again)[(4, 2, 0)]
    assert not np.array_equal(first["image"].numpy(), other_epoch["image"].numpy())
    assert not np.array_equal(first["image"].numpy(), closed["image"].numpy())


def test_sampler_marks_the_mosaic_closed_steps():
    sampler = StepBatchSampler(10, 2, 0, 1, seed=0, start=0, end=6)
    assert all(len(k) == 2 for batch in sampler for k in batch)  # no mosaic: the old keys
    sampler.mosaic_until = 4
    flags = [{k[2] for k in batch} for batch in sampler]
    assert flags == [{1}, {1}, {1}, {1}, {0}, {0}]
    indices = [[k[:2] for k in batch] for batch in sampler]
    sampler.mosaic_until = None
    assert indices == [[tuple(k) for k in batch] for batch in sampler]  # same order either way


# --------------------------------------------------------------------------- config


def test_old_augment_strings_and_bools_migrate(capsys):
    assert config_from_dict({"train": {"augment": "light"}}).train.augment == AugmentConfig(chain="light")
    assert config_from_dict({"train": {"augment": False}}).train.augment.chain == "none"
    err = capsys.readouterr().err
    assert "train.augment=light is now train.augment.chain=light" in err
    cfg = load_config("yolact_effl0_finetune", ["train.augment.mosaic=0.5", "train.augment.scale_range=[0.1,2]"])
    assert cfg.train.augment.chain == "light" and cfg.train.augment.mosaic == 0.5
    assert cfg.train.augment.scale_range == [0.1, 2.0]


@pytest.mark.parametrize("override, message", [
    ("train.augment.chain=strong", "train.augment.chain must be one of"),
    ("train.augment.scale_range=[2, 1]", r"train.augment.scale_range must be \[low, high\]"),
    ("train.augment.paste_scale=[0.5]", r"train.augment.paste_scale must be \[low, high\]"),
    ("train.augment.mosaic=1.5", r"train.augment.mosaic must be in \[0, 1\]"),
    ("train.augment.copy_paste=-0.1", r"train.augment.copy_paste must be in \[0, 1\]"),
])
def test_bad_augment_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("yolact_effl0_finetune", [override])


def test_scale_range_needs_the_light_chain():
    with pytest.raises(ConfigError, match="scale_range is the zoom of chain=light; chain is 'ssd'"):
        load_config(None, ["train.augment.scale_range=[0.1,2]"])


def test_scale_range_reaches_the_light_chain():
    mean, std = [123.68, 116.78, 103.94], [58.4, 57.12, 57.38]
    lsj = build_train_transform(96, mean, std, augment=AugmentConfig(chain="light", scale_range=[0.1, 2.0]))
    assert "RandomZoom(0.1, 2.0)" in repr(lsj)
    assert "RandomZoom(0.6, 2.0)" in repr(build_train_transform(96, mean, std, augment="light"))
