"""COCO json files, fuzzed: every mutation loads, is dropped and counted in
``dataset.dropped``, or raises one DataError line.

The hypothesis tests are derandomized (the same examples every run) and small."""

from __future__ import annotations

import copy
import json
import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from tests.fuzzing import FUZZ, one_line
from yolact_lite.data.coco import DROP_REASONS, CocoDataset
from yolact_lite.errors import DataError

H, W = 24, 32


def _rle_string(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def _valid_coco() -> dict:
    blob = np.zeros((H, W), np.uint8)
    blob[6:18, 14:26] = 1
    column = np.zeros((H, W), np.uint8)
    column[:, 3:5] = 1
    flat = column.flatten(order="F")  # uncompressed RLE: runs over the column-major pixels
    runs, value, count = [], 0, 0
    for v in flat:
        if v == value:
            count += 1
        else:
            runs.append(count)
            value, count = v, 1
    runs.append(count)
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                   {"id": 2, "file_name": "b.png", "height": H, "width": W}],
        "categories": [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 2, 10, 8], "iscrowd": 0,
             "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [14, 6, 12, 12], "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": _rle_string(blob)}},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [3, 0, 2, 24], "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": runs}},
            {"id": 4, "image_id": 2, "category_id": 3, "bbox": [10, 10, 20, 12], "iscrowd": 0,
             "segmentation": [[10, 10, 20, 10, 20, 20], [22, 12, 30, 12, 30, 22, 22, 22]]},
        ],
    }


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco_fuzz")
    (folder / "img").mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(folder / "img" / name), np.full((H, W, 3), 90, np.uint8))
    return folder


_numbers = st.one_of(st.integers(-60, 80), st.floats(-100, 100, allow_nan=False),
                     st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(10**40), 1e308]))
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), _numbers,
                     st.text(max_size=6))
_weird = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5),
    st.dictionaries(st.sampled_from(["id", "size", "counts", "x"]), inner, max_size=3)), max_leaves=10)
_polygon = st.lists(_numbers, max_size=10)
_rle = st.fixed_dictionaries({
    "size": st.one_of(st.just([H, W]), st.just([W, H]), st.lists(st.integers(-2, 40), max_size=3), _weird),
    "counts": st.one_of(st.text(alphabet=[chr(c) for c in range(40, 116)] + ["\u00e9", " "], max_size=16),
                        st.lists(st.integers(-5, 800), max_size=6), _weird),
})
_values = st.one_of(_weird, _polygon, st.lists(_polygon, max_size=3), _rle)
_sections = st.sampled_from(["images", "annotations", "categories"])
_fields = st.sampled_from(["id", "image_id", "category_id", "bbox", "segmentation", "iscrowd",
                           "file_name", "height", "width", "name", "area", "extra"])
_mutation = st.one_of(
    st.tuples(st.just("set"), _sections, st.integers(0, 3), _fields, _values),
    st.tuples(st.just("del"), _sections, st.integers(0, 3), _fields),
    st.tuples(st.just("dup"), _sections, st.integers(0, 3)),
    st.tuples(st.just("replace"), _sections, _weird),
    st.tuples(st.just("drop"), _sections),
)


def _mutate(data: dict, mutation: tuple) -> None:
    kind, section = mutation[0], mutation[1]
    items = data.get(section)
    if kind == "drop":
        data.pop(section, None)
    elif kind == "replace":
        data[section] = mutation[2]
    elif not isinstance(items, list) or not items:
        return
    elif kind == "dup":
        items.append(copy.deepcopy(items[mutation[2] % len(items)]))
    elif isinstance(items[mutation[2] % len(items)], dict):
        item = items[mutation[2] % len(items)]
        if kind == "set":
            item[mutation[3]] = mutation[4]
        else:
            item.pop(mutation[3], None)


def test_valid_fuzz_base_loads_every_annotation(coco_dir):
    path = coco_dir / "base.json"
    path.write_text(json.dumps(_valid_coco()))
    ds = CocoDataset(path, coco_dir / "img")
    assert not ds.dropped and [ds.num_instances(i) for i in range(len(ds))] == [2, 2]
    masks = ds.raw_sample(0)["masks"]
    assert masks[1].sum() == 144 and masks[0].sum() > 0  # the compressed RLE blob, decoded


@settings(max_examples=100, **FUZZ)
@given(mutations=st.lists(_mutation, min_size=1, max_size=3))
def test_fuzz_coco_json(coco_dir, mutations):
    data = _valid_coco()
    for m in mutations:
        _mutate(data, m)
    path = coco_dir / "ann.json"
    path.write_text(json.dumps(data))
    try:
        ds = CocoDataset(path, coco_dir / "img")
        samples = [ds.raw_sample(i) for i in range(len(ds))]
    except DataError as exc:
        one_line(exc)
        return
    # recovered: every annotation is either kept or dropped with a documented reason
    assert set(ds.dropped) <= set(DROP_REASONS)
    kept = sum(ds.num_instances(i) for i in range(len(ds)))
    assert kept + sum(ds.dropped.values()) == len(data["annotations"])
    for s in samples:
        n = len(s["labels"])
        h, w = s["orig_size"]
        assert s["masks"].shape == (n, h, w) and s["boxes"].shape == (n, 4)
        assert np.isfinite(s["boxes"]).all() and (s["boxes"][:, 2:] > s["boxes"][:, :2]).all()
        assert (s["boxes"] >= 0).all() and (s["boxes"][:, [0, 2]] <= w).all() and (s["boxes"][:, [1, 3]] <= h).all()
        assert all(m.any() for m in s["masks"])


@settings(max_examples=60, **FUZZ)
@given(counts=st.one_of(st.text(alphabet=[chr(c) for c in range(44, 116)], max_size=24),
                        st.text(max_size=8)))
def test_fuzz_compressed_rle_strings(coco_dir, counts):
    """pycocotools reads past the end of some malformed strings: they are refused or dropped
    before it ever sees them."""
    data = _valid_coco()
    data["annotations"][1]["segmentation"]["counts"] = counts
    path = coco_dir / "rle.json"
    path.write_text(json.dumps(data))
    try:
        ds = CocoDataset(path, coco_dir / "img")
    except DataError as exc:
        assert "compressed RLE" in one_line(exc)
        return
    if ds.num_instances(0) == 2:  # accepted: decodes to exactly the image size
        assert ds.raw_sample(0)["masks"].shape == (2, H, W)
    else:
        assert sum(ds.dropped.values()) == 1 and set(ds.dropped) <= {"rle_size_mismatch", "empty_mask"}


@pytest.mark.parametrize("text, words", [
    ("[" * 50000 + "]" * 50000, "cannot parse JSON"),                   # nesting too deep
    ('{"images": ' + "7" * 5000 + "}", "cannot parse JSON"),             # over Python's digit limit
    (json.dumps({**_valid_coco(), "images": [{"id": 1, "file_name": "a.png", "height": 10**30,
                                              "width": W}]}), "'height' must be a positive integer"),
])
def test_json_parser_limits_are_data_errors(coco_dir, text, words):
    path = coco_dir / "limits.json"
    path.write_text(text)
    with pytest.raises(DataError, match=words) as info:
        CocoDataset(path, coco_dir / "img")
    assert str(path) in one_line(info.value)
