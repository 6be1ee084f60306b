"""The COCO schema is written once (yolact_lite.data.coco_schema): the same bad files go to its
"first error" mode (load_coco_json / CocoDataset) and its "all problems" mode (check_coco_schema,
and check_dataset, the ``data check`` command), which must agree."""

from __future__ import annotations

import json
import re

import pytest

from yolact_lite.cli.data_check import main as data_check_main
from yolact_lite.data import CocoDataset, load_coco_json
from yolact_lite.data.check import CHECKS, check_dataset
from yolact_lite.data.coco_schema import FATAL, MAX_IMAGE_SIDE, NOT_COCO, SCHEMA_CHECKS, Problem, check_coco_schema
from yolact_lite.errors import DataError


def clean_coco() -> dict:
    """Three categories, three 40x60 images, one well-formed annotation per image."""
    cats = [{"id": c, "name": f"class{c}"} for c in (1, 2, 3)]
    images = [{"id": i, "file_name": f"{i}.png", "height": 40, "width": 60} for i in (1, 2, 3)]
    anns = [{"id": 10 + i, "image_id": i, "category_id": i, "bbox": [5, 5, 10, 10], "iscrowd": 0,
             "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]} for i in (1, 2, 3)]
    return {"images": images, "annotations": anns, "categories": cats}


DELETE = object()  # as a value in good_ann: leave the key out


def good_ann(aid, **changes) -> dict:
    ann = {"id": aid, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "iscrowd": 0,
           "segmentation": [[1, 1, 5, 1, 5, 5]]}
    ann.update(changes)
    return {k: v for k, v in ann.items() if v is not DELETE}


def add(data: dict, section: str, entry) -> str:
    """Append ``entry`` to ``data[section]``; the place the schema's messages name for it."""
    data[section].append(entry)
    where = f"{section}[{len(data[section]) - 1}]"
    return f"{where} (id {entry['id']!r})" if isinstance(entry, dict) and "id" in entry else where


# Each planting function appends bad entries to a clean file and returns what it planted:
# (kind, exact message).  They only append, so any of them can be combined in one file.

def _categories(d):
    return [("malformed_category", add(d, "categories", {"id": 4}) + ": 'name' must be a string"),
            ("string_id", add(d, "categories", {"id": "5", "name": "x"})
             + ": 'id' must be an integer, got the string '5'"),
            ("duplicate_id", add(d, "categories", {"id": 1, "name": "again"})
             + ": duplicate category id 1 (first at categories[0])"),
            ("malformed_category", add(d, "categories", "cat") + " must be an object, got str")]


def _images(d):
    img = {"file_name": "x.png", "height": 40, "width": 60}
    return [("malformed_image", add(d, "images", [1, 2]) + " must be an object, got list"),
            ("malformed_image", add(d, "images", dict(img, id=20, width=0))
             + f": 'width' must be a positive integer <= {MAX_IMAGE_SIDE}"),
            ("malformed_image", add(d, "images", dict(img, id=21, height=MAX_IMAGE_SIDE + 1))
             + f": 'height' must be a positive integer <= {MAX_IMAGE_SIDE}"),
            ("malformed_image", add(d, "images", dict(img, id=22, file_name=""))
             + ": 'file_name' must be a non-empty string"),
            ("malformed_image", add(d, "images", dict(img, id=2.0)) + ": 'id' must be an integer, got float"),
            ("duplicate_id", add(d, "images", dict(img, id=2)) + ": duplicate image id 2 (first at images[1])")]


def _references(d):
    return [("malformed_annotation", add(d, "annotations", good_ann(DELETE))
             + ": 'id' must be an integer, it is missing"),
            ("duplicate_id", add(d, "annotations", good_ann(11))
             + ": duplicate annotation id 11 (first at annotations[0])"),
            ("string_id", add(d, "annotations", good_ann(30, image_id="1"))
             + ": 'image_id' must be an integer, got the string '1'"),
            ("malformed_annotation", add(d, "annotations", good_ann(31, category_id=None))
             + ": 'category_id' must be an integer, got NoneType"),
            ("unknown_image_id", add(d, "annotations", good_ann(32, image_id=99)) + ": unknown image id 99"),
            ("unknown_category_id", add(d, "annotations", good_ann(33, category_id=77))
             + ": unknown category id 77")]


def _boxes_and_crowds(d):
    need4 = ": 'bbox' must be a list of 4 numbers [x, y, w, h]"
    return [("malformed_annotation", add(d, "annotations", good_ann(40, bbox=[1, 2, 3])) + need4),
            ("malformed_annotation", add(d, "annotations", good_ann(41, bbox=[1, 2, "3", 4])) + need4),
            ("malformed_annotation", add(d, "annotations", good_ann(42, bbox=DELETE)) + need4),
            ("malformed_annotation", add(d, "annotations", good_ann(43, iscrowd=2)) + ": 'iscrowd' must be 0 or 1"),
            ("malformed_annotation", add(d, "annotations", good_ann(44, iscrowd=1.0)) + ": 'iscrowd' must be 0 or 1")]


def _segmentations(d):
    polygons = ": polygon segmentation must be a list of lists of numbers"
    return [("malformed_annotation", add(d, "annotations", good_ann(50, segmentation=DELETE))
             + ": missing 'segmentation'"),
            ("malformed_annotation", add(d, "annotations", good_ann(51, segmentation=[[1, 2, "x", 4, 5, 6]]))
             + polygons),
            ("malformed_annotation", add(d, "annotations", good_ann(52, segmentation=[[[1, 2], [3, 4]]]))
             + polygons),
            ("malformed_annotation", add(d, "annotations", good_ann(53, segmentation=5))
             + ": 'segmentation' must be a polygon list or an RLE dict, got int")]


def _rles(d):
    return [("malformed_annotation", add(d, "annotations", good_ann(60, segmentation={"size": [40], "counts": []}))
             + ": RLE segmentation needs 'size' = [height, width]"),
            ("malformed_annotation", add(d, "annotations", good_ann(61, segmentation={"size": [40, 60], "counts": "o"}))
             + ": RLE 'counts' is not a valid COCO compressed RLE string"),
            ("malformed_annotation", add(d, "annotations", good_ann(62, segmentation={"size": [40, 60],
                                                                                   "counts": [5, -1]}))
             + ": RLE 'counts' must be a string or a list of non-negative integers")]


PLANTERS = [_categories, _images, _references, _boxes_and_crowds, _segmentations, _rles]


def write(tmp_path, data, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def assert_modes_agree(tmp_path, data: dict, planted) -> None:
    path = write(tmp_path, data)
    problems, _ = check_coco_schema(json.loads(path.read_text()))
    # all problems: exactly what was planted, nothing else, one line each
    assert sorted((p.kind, p.message) for p in problems) == sorted(planted)
    assert all(p.level == SCHEMA_CHECKS[p.kind][0] == "break" and "\n" not in p.message for p in problems)
    # first error: the first of them, word for word, whichever way the file is loaded
    with pytest.raises(DataError, match=re.escape(problems[0].message)) as info:
        load_coco_json(path)
    assert str(info.value) == f"{path}: {problems[0].message}"
    with pytest.raises(DataError, match=re.escape(problems[0].message)):
        CocoDataset(path, tmp_path)
    # the data check report lists every one of them under its kind, and exits 1
    report = check_dataset(path, max_examples=100, check_masks=False)
    for kind, message in planted:
        assert message in next(f.examples for f in report.findings if f.kind == kind)
        assert report.count(kind) == sum(1 for k, _ in planted if k == kind)
    assert report.exit_code == 1 and data_check_main([str(path), "--no-mask-check"]) == 1


def test_clean_file_has_no_problem_in_either_mode(tmp_path):
    data = clean_coco()
    assert check_coco_schema(data) == ([], data)
    assert load_coco_json(write(tmp_path, data)) == data
    assert check_dataset(data).findings == []


@pytest.mark.parametrize("plant", PLANTERS, ids=lambda f: f.__name__.strip("_"))
def test_both_modes_report_the_same_planted_problems(tmp_path, plant):
    data = clean_coco()
    planted = plant(data)
    assert_modes_agree(tmp_path, data, planted)


def test_every_planted_problem_is_found_in_one_file_and_the_first_is_raised(tmp_path):
    data = clean_coco()
    planted = [p for plant in PLANTERS for p in plant(data)]
    assert {kind for kind, _ in planted} == set(SCHEMA_CHECKS)  # every entry-level rule is exercised
    assert_modes_agree(tmp_path, data, planted)
    problems, _ = check_coco_schema(data)
    assert problems[0].message == "categories[3] (id 4): 'name' must be a string"  # file order
    assert [p.message.split("[")[0] for p in problems] == sorted(
        (m.split("[")[0] for _, m in planted), key=["categories", "images", "annotations"].index)


def test_well_formed_part_leaves_out_bad_entries_and_what_points_at_them():
    data = clean_coco()
    data["images"][1]["width"] = 0  # image 2: malformed, so annotation 12 is not usable either
    data["annotations"].append(good_ann(70, bbox=[1, 2]))
    problems, kept = check_coco_schema(data)
    assert [p.message for p in problems] == [
        f"images[1] (id 2): 'width' must be a positive integer <= {MAX_IMAGE_SIDE}",
        "annotations[3] (id 70): 'bbox' must be a list of 4 numbers [x, y, w, h]"]
    assert [img["id"] for img in kept["images"]] == [1, 3]
    assert [ann["id"] for ann in kept["annotations"]] == [11, 13]
    assert kept["categories"] == data["categories"]


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "the top level must be a JSON object, got list"),
    ('{"annotations": [], "categories": []}', "missing required key 'images'"),
    ('{"images": [], "categories": [{"id": 1, "name": "a"}]}', "missing required key 'annotations'"),
    ('{"images": [], "annotations": []}', "missing required key 'categories'"),
    ('{"images": [], "annotations": {}, "categories": []}', "'annotations' must be a list, got dict"),
    ('{"images": [], "annotations": [], "categories": []}', "'categories' is empty"),
])
def test_a_file_that_is_not_coco_is_one_fatal_problem_in_both_modes(tmp_path, capsys, text, message):
    path = write(tmp_path, json.loads(text))
    assert check_coco_schema(json.loads(text)) == ([Problem(NOT_COCO, FATAL, message)],
                                                   {"images": [], "annotations": [], "categories": []})
    with pytest.raises(DataError, match=re.escape(message)) as first:
        load_coco_json(path)
    with pytest.raises(DataError, match=re.escape(message)) as everything:
        check_dataset(path)
    assert str(first.value) == str(everything.value) == f"{path}: {message}"
    assert data_check_main([str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {path}: {message}"


def test_what_the_dataset_drops_is_not_a_schema_problem(tmp_path):
    """A polygon part of two points is well formed: loading keeps the file (the dataset drops the
    part), and data check reports it as a content problem, not a structural one."""
    data = clean_coco()
    data["annotations"][0]["segmentation"].append([30, 30, 32, 32])
    assert check_coco_schema(data)[0] == []
    assert load_coco_json(write(tmp_path, data)) == data
    report = check_dataset(data)
    assert [(f.kind, f.count) for f in report.findings] == [("degenerate_polygon", 1)]
    assert CHECKS["degenerate_polygon"][0] == "hurt"
