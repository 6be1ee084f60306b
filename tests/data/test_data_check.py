"""yolact_lite.data.check and ``yolact-lite data check`` (yolact_lite.cli.data_check) on small crafted
COCO files: one test per problem kind, exit codes, and the bundled data."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tests.paths import ROOT
from yolact_lite.cli.data_check import main
from yolact_lite.data.check import CHECKS, LEVELS, check_dataset
from yolact_lite.data.stats import ANOMALY_KINDS

BUNDLED = ROOT / "data" / "coco_mini"

H, W = 64, 80


def square(x, y, s):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


def ann(aid, image_id, category_id, x, y, s, **extra):
    a = {"id": aid, "image_id": image_id, "category_id": category_id, "bbox": [x, y, s, s],
         "segmentation": square(x, y, s), "area": float(s * s), "iscrowd": 0}
    a.update(extra)
    return a


def clean_coco():
    """Three 64x80 images, two categories, two well-formed annotations per image."""
    images = [{"id": i, "file_name": f"img{i}.png", "height": H, "width": W} for i in (1, 2, 3)]
    anns = []
    for i in (1, 2, 3):
        anns.append(ann(2 * i - 1, i, 1, 10, 10, 20))
        anns.append(ann(2 * i, i, 2, 40, 30, 15))
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    return {"images": images, "annotations": anns, "categories": cats}


def write(tmp_path: Path, coco: dict, name: str = "ann.json", images: bool = True):
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    if images:
        rng = np.random.default_rng(0)
        for img in clean_coco()["images"]:
            cv2.imwrite(str(folder / img["file_name"]), rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    path = tmp_path / name
    path.write_text(json.dumps(coco))
    return path, folder


def find(coco, aid):
    return next(a for a in coco["annotations"] if a["id"] == aid)


def rle_string(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


# --------------------------------------------------------------------------- clean


def test_clean_dataset_has_no_finding(tmp_path):
    path, folder = write(tmp_path, clean_coco())
    report = check_dataset(path, folder)
    assert report.findings == []
    assert report.exit_code == 0
    assert (report.num_images, report.num_annotations, report.num_categories) == (3, 6, 2)
    assert report.images_read and report.masks_checked
    assert main([str(path), "--images", str(folder)]) == 0


def test_every_anomaly_kind_of_stats_has_a_level():
    assert set(ANOMALY_KINDS) <= set(CHECKS)
    assert all(level in LEVELS for level, _ in CHECKS.values())


# --------------------------------------------------------------------------- one problem each


def _string_ids(c, folder):
    c["images"][0]["id"] = "1"
    for a in c["annotations"]:
        if a["image_id"] == 1:
            a["image_id"] = "1"


def _duplicate_ids(c, folder):
    c["annotations"][3]["id"] = c["annotations"][2]["id"]


def _malformed_image(c, folder):
    del c["images"][2]["height"]


def _malformed_category(c, folder):
    c["categories"].append({"id": 3})  # no name


def _malformed_annotation(c, folder):
    c["annotations"][0]["bbox"] = [1, 2, 3]


def _unknown_image(c, folder):
    c["annotations"][0]["image_id"] = 99


def _unknown_category(c, folder):
    c["annotations"][0]["category_id"] = 99


def _missing_image(c, folder):
    (folder / "img2.png").unlink()


def _unreadable_image(c, folder):
    (folder / "img2.png").write_bytes(b"this is not an image")


def _size_mismatch(c, folder):
    c["images"][1]["height"] = H + 16  # annotations still fit: only the size is wrong


def _duplicate_file(c, folder):
    c["images"][1]["file_name"] = c["images"][0]["file_name"]


def _non_finite(c, folder):
    find(c, 1)["bbox"][0] = float("nan")


def _nonpositive_box(c, folder):
    find(c, 1)["bbox"][2] = 0


def _box_outside(c, folder):
    a = find(c, 1)
    a["bbox"] = [-5.0, 10, 25, 20]
    a["segmentation"] = [[-5.0, 10, 20, 10, 20, 30, -5.0, 30]]


def _degenerate_polygon(c, folder):
    find(c, 1)["segmentation"].append([50, 50, 52, 52])


def _empty_rle(c, folder):
    # a crowd, as COCO stores them (a non-crowd RLE would also be an rle_polygon_mix)
    find(c, 1).update(segmentation={"size": [H, W], "counts": [H * W]}, iscrowd=1)


def _rle_size(c, folder):
    find(c, 1).update(segmentation={"size": [H, W + 1], "counts": [H * (W + 1)]}, iscrowd=1)


def _empty_mask(c, folder):
    find(c, 1)["segmentation"] = [[10, 10, 20, 10, 30, 10]]  # collinear: no area


def _box_mask_mismatch(c, folder):
    find(c, 1)["bbox"] = [50, 40, 20, 20]  # mask stays at (10, 10, 20, 20)


def _duplicate(c, folder):
    c["annotations"].append(dict(find(c, 1), id=100))


def _crowd_only(c, folder):
    for a in c["annotations"]:
        if a["image_id"] == 2:
            a["iscrowd"] = 1


def _rle_mix(c, folder):
    mask = np.zeros((H, W), np.uint8)
    mask[30:45, 40:55] = 1
    find(c, 2)["segmentation"] = rle_string(mask)


def _no_annotations(c, folder):
    c["annotations"] = [a for a in c["annotations"] if a["image_id"] != 3]


def _empty_category(c, folder):
    c["categories"].append({"id": 7, "name": "bird"})


# kind -> (mutation, count, text that the first example contains)
CASES = {
    "string_id": (_string_ids, 3, "images[0] (id '1')"),
    "duplicate_id": (_duplicate_ids, 1, "annotations[3] (id 3): duplicate annotation id 3"),
    "malformed_image": (_malformed_image, 1, "images[2] (id 3): 'height'"),
    "malformed_category": (_malformed_category, 1, "categories[2] (id 3): 'name'"),
    "malformed_annotation": (_malformed_annotation, 1, "annotations[0] (id 1): 'bbox'"),
    "unknown_image_id": (_unknown_image, 1, "annotations[0] (id 1): unknown image id 99"),
    "unknown_category_id": (_unknown_category, 1, "annotations[0] (id 1): unknown category id 99"),
    "missing_image": (_missing_image, 1, "img2.png"),
    "unreadable_image": (_unreadable_image, 1, "img2.png"),
    "image_size_mismatch": (_size_mismatch, 1, "file is 80x64, json says 80x80"),
    "duplicate_file_name": (_duplicate_file, 1, "img1.png: images 1, 2"),
    "non_finite_coordinates": (_non_finite, 1, "annotation 1 (image 1)"),
    "nonpositive_box": (_nonpositive_box, 1, "annotation 1 (image 1)"),
    "box_outside_image": (_box_outside, 1, "annotation 1 (image 1)"),
    "degenerate_polygon": (_degenerate_polygon, 1, "annotation 1 (image 1)"),
    "empty_rle": (_empty_rle, 1, "annotation 1 (image 1)"),
    "rle_size_mismatch": (_rle_size, 1, "annotation 1 (image 1)"),
    "empty_mask": (_empty_mask, 1, "annotation 1 (image 1)"),
    "box_mask_mismatch": (_box_mask_mismatch, 1, "annotation 1 (image 1)"),
    "duplicate": (_duplicate, 1, "annotation 100 (image 1)"),
    "crowd_only_image": (_crowd_only, 1, "image 2 img2.png"),
    "rle_polygon_mix": (_rle_mix, 1, "5 polygon and 1 RLE"),
    "image_without_annotations": (_no_annotations, 1, "image 3 img3.png"),
    "category_without_instances": (_empty_category, 1, "category 7 'bird'"),
}
SPLIT_KINDS = {"category_list_mismatch", "categories_missing_in_other_split", "categories_missing_here"}


def test_every_kind_has_a_case():
    assert set(CASES) | SPLIT_KINDS == set(CHECKS)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_problem_is_found_alone_with_count_and_example(tmp_path, kind):
    mutate, count, example = CASES[kind]
    coco = clean_coco()
    path, folder = write(tmp_path, coco)
    mutate(coco, folder)
    path.write_text(json.dumps(coco))

    report = check_dataset(path, folder, max_examples=3)
    found = {f.kind: f for f in report.findings}
    assert set(found) == {kind}, report.to_text()
    finding = found[kind]
    assert finding.count == count
    assert finding.level == CHECKS[kind][0]
    assert example in finding.examples[0]
    assert report.exit_code == (0 if finding.level == "note" else 1)
    assert main([str(path), "--images", str(folder)]) == report.exit_code


def test_levels_of_what_the_dataset_refuses_and_what_it_drops():
    assert CHECKS["missing_image"][0] == CHECKS["string_id"][0] == "break"
    assert CHECKS["empty_mask"][0] == CHECKS["crowd_only_image"][0] == "hurt"
    assert CHECKS["image_without_annotations"][0] == "note"


def test_examples_are_capped_but_counts_are_complete(tmp_path):
    coco = clean_coco()
    for a in coco["annotations"]:
        a["bbox"][2] = 0
    path, folder = write(tmp_path, coco)
    report = check_dataset(path, folder, max_examples=2)
    (finding,) = report.findings
    assert finding.kind == "nonpositive_box"
    assert finding.count == 6 and len(finding.examples) == 2


def test_several_problems_in_one_file(tmp_path):
    coco = clean_coco()
    path, folder = write(tmp_path, coco)
    _missing_image(coco, folder)
    _crowd_only(coco, folder)
    _box_mask_mismatch(coco, folder)
    coco["annotations"][5]["image_id"] = "3"
    path.write_text(json.dumps(coco))
    report = check_dataset(path, folder)
    assert {f.kind: f.count for f in report.findings} == {
        "string_id": 1, "missing_image": 1, "crowd_only_image": 1, "box_mask_mismatch": 1}
    assert report.exit_code == 1


def test_no_image_read_only_checks_existence(tmp_path):
    coco = clean_coco()
    path, folder = write(tmp_path, coco)
    _unreadable_image(coco, folder)
    (folder / "img3.png").unlink()
    report = check_dataset(path, folder, read_images=False)
    assert {f.kind for f in report.findings} == {"missing_image"}
    assert not report.images_read


def test_without_images_dir_only_the_json_is_checked(tmp_path):
    coco = clean_coco()
    _box_mask_mismatch(coco, None)
    path, _ = write(tmp_path, coco, images=False)
    report = check_dataset(path)
    assert [f.kind for f in report.findings] == ["box_mask_mismatch"]
    assert check_dataset(path, check_masks=False).findings == []


# --------------------------------------------------------------------------- two splits


def test_splits_category_differences(tmp_path):
    here = clean_coco()
    other = clean_coco()
    other["annotations"] = [a for a in other["annotations"] if a["category_id"] == 1]
    other["categories"].append({"id": 5, "name": "horse"})
    other["annotations"].append(ann(50, 1, 5, 50, 5, 10))
    path, folder = write(tmp_path, here)
    other_path, _ = write(tmp_path, other, "other.json", images=False)

    report = check_dataset(path, folder, other_split=other_path)
    found = {f.kind: f for f in report.findings}
    assert set(found) == SPLIT_KINDS
    assert found["category_list_mismatch"].examples == [f"category 5: None here, 'horse' in {other_path}"]
    assert found["categories_missing_in_other_split"].count == 1
    assert "category 2 'dog'" in found["categories_missing_in_other_split"].examples[0]
    assert found["categories_missing_here"].count == 1
    assert "category 5 'horse'" in found["categories_missing_here"].examples[0]
    assert main([str(path), "--images", str(folder), "--other-split", str(other_path)]) == 1


def test_same_categories_in_both_splits_is_clean(tmp_path):
    path, folder = write(tmp_path, clean_coco())
    other_path, _ = write(tmp_path, clean_coco(), "other.json", images=False)
    assert check_dataset(path, folder, other_split=other_path).findings == []


def test_renamed_category_is_a_mismatch(tmp_path):
    other = clean_coco()
    other["categories"][1]["name"] = "wolf"
    path, folder = write(tmp_path, clean_coco())
    other_path, _ = write(tmp_path, other, "other.json", images=False)
    report = check_dataset(path, folder, other_split=other_path)
    assert [(f.kind, f.count) for f in report.findings] == [("category_list_mismatch", 1)]
    assert "'dog' here, 'wolf'" in report.findings[0].examples[0]


# --------------------------------------------------------------------------- unreadable input: exit 2


@pytest.mark.parametrize("text, words", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "top level must be a JSON object"),
    ('{"images": [], "annotations": []}', "missing required key 'categories'"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' must be a list"),
    ('{"images": [], "annotations": [], "categories": []}', "'categories' is empty"),
])
def test_unreadable_json_exits_2_with_one_line(tmp_path, capsys, text, words):
    path = tmp_path / "bad.json"
    path.write_text(text)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err


def test_missing_inputs_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope.json")]) == 2
    assert "no such annotation file" in capsys.readouterr().err
    path, _ = write(tmp_path, clean_coco(), images=False)
    assert main([str(path), "--images", str(tmp_path / "nowhere")]) == 2
    assert "image directory does not exist" in capsys.readouterr().err
    assert main([str(path), "--other-split", str(tmp_path / "nope.json")]) == 2


# --------------------------------------------------------------------------- output


def test_text_and_json_report(tmp_path, capsys):
    coco = clean_coco()
    path, folder = write(tmp_path, coco)
    _crowd_only(coco, folder)
    _no_annotations(coco, folder)
    path.write_text(json.dumps(coco))
    out_json = tmp_path / "report.json"
    assert main([str(path), "--images", str(folder), "--json", str(out_json)]) == 1
    text = capsys.readouterr().out
    assert "hurt   crowd_only_image: 1" in text
    assert "note   image_without_annotations: 1" in text
    assert text.index("crowd_only_image") < text.index("image_without_annotations")  # by level
    data = json.loads(out_json.read_text())
    assert data["exit_code"] == 1
    assert {f["kind"]: f["count"] for f in data["findings"]} == {"crowd_only_image": 1,
                                                                 "image_without_annotations": 1}


def test_module_entry_point(tmp_path):
    coco = clean_coco()
    path, folder = write(tmp_path, coco)
    _missing_image(coco, folder)
    out = subprocess.run([sys.executable, "-m", "yolact_lite.cli.data_check", str(path), "--images", str(folder)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "break  missing_image: 1" in out.stdout
    help_text = subprocess.run([sys.executable, "-m", "yolact_lite.cli.data_check", "--help"],
                               capture_output=True, text=True, timeout=120).stdout
    assert "--other-split" in help_text and "exit status" in help_text


def test_dict_input_is_not_modified(tmp_path):
    coco = clean_coco()
    _box_mask_mismatch(coco, None)
    before = copy.deepcopy(coco)
    assert check_dataset(coco).count("box_mask_mismatch") == 1
    assert coco == before


# --------------------------------------------------------------------------- bundled data


@pytest.mark.skipif(not (BUNDLED / "train" / "annotations.json").is_file(), reason="bundled data/coco_mini absent")
@pytest.mark.parametrize("split", ["train", "val"])
def test_bundled_coco_mini_is_clean_apart_from_documented_notes(split):
    report = check_dataset(BUNDLED / split / "annotations.json", BUNDLED / split / "images")
    # The subset keeps COCO's 80 categories; those without an instance in it are notes. The one
    # real defect: val annotation 1590, a 2.3x3.0 px boat whose polygon rasterises to 1x3 px.
    expected = {"train": {"category_without_instances": 8},
                "val": {"box_mask_mismatch": 1, "category_without_instances": 10}}[split]
    assert {f.kind: f.count for f in report.findings} == expected
    assert report.exit_code == (1 if "box_mask_mismatch" in expected else 0)
    if split == "val":
        assert report.findings[0].examples == ["annotation 1590 (image 522713)"]


@pytest.mark.skipif(not (BUNDLED / "train" / "annotations.json").is_file(), reason="bundled data/coco_mini absent")
@pytest.mark.parametrize("split", ["train", "val"])
def test_bundled_person_annotations_are_clean_apart_from_person_free_images(split):
    report = check_dataset(BUNDLED / split / "annotations_person.json", BUNDLED / split / "images")
    assert report.exit_code == 0
    assert [f.kind for f in report.findings] == ["image_without_annotations"]
    assert report.count("image_without_annotations") == {"train": 1, "val": 45}[split]


@pytest.mark.skipif(not (BUNDLED / "train" / "annotations.json").is_file(), reason="bundled data/coco_mini absent")
def test_bundled_val_has_categories_that_train_lacks():
    report = check_dataset(BUNDLED / "val" / "annotations.json", BUNDLED / "val" / "images",
                           other_split=BUNDLED / "train" / "annotations.json")
    assert report.exit_code == 1
    assert report.count("categories_missing_in_other_split") == 6  # val-only: never learned
    assert report.count("categories_missing_here") == 8
    assert report.count("category_list_mismatch") == 0


# --------------------------------------------------------------------------- image variants


def test_gray_rgba_and_16_bit_images_are_readable(tmp_path):
    path, folder = write(tmp_path, clean_coco())
    rng = np.random.default_rng(2)
    cv2.imwrite(str(folder / "img1.png"), rng.integers(0, 256, (H, W), dtype=np.uint8))  # gray
    cv2.imwrite(str(folder / "img2.png"), rng.integers(0, 256, (H, W, 4), dtype=np.uint8))  # BGRA
    cv2.imwrite(str(folder / "img3.png"), rng.integers(0, 65536, (H, W, 3), dtype=np.uint16))  # 16-bit
    assert check_dataset(path, folder).findings == []


@pytest.mark.parametrize("content", ["empty", "truncated_jpeg"])
def test_empty_and_truncated_files_are_unreadable(tmp_path, content):
    path, folder = write(tmp_path, clean_coco())
    target = folder / "img2.png"
    if content == "empty":
        target.write_bytes(b"")
    else:
        ok, data = cv2.imencode(".jpg", np.full((H, W, 3), 127, np.uint8))
        target.write_bytes(data.tobytes()[: len(data) // 2])
    report = check_dataset(path, folder)
    assert [(f.kind, f.count) for f in report.findings] == [("unreadable_image", 1)]
    assert "img2.png" in report.findings[0].examples[0]
