"""yolact_lite.data.stats on synthetic COCO dicts with known answers, its report
(yolact_lite.data.stats_report), plus scripts/data_stats.py."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import cv2
import pytest

from tests.paths import ROOT
from yolact_lite import load_config
from yolact_lite.data.stats import (
    ANOMALY_KINDS,
    ClassCount,
    anchor_geometry,
    annotation_anomalies,
    class_balanced_weights,
    class_counts,
    crowd_only_images,
    dataset_stats,
    imbalance_summary,
    instances_per_image,
    mask_formats,
    size_histogram,
    split_category_differences,
)
from yolact_lite.data.stats_report import to_markdown, write_stats_report

SCRIPT = ROOT / "scripts" / "data_stats.py"
BUNDLED_TRAIN = ROOT / "data" / "coco_mini" / "train" / "annotations.json"


def square(x, y, s):
    """A polygon for the axis-aligned square [x, x+s] x [y, y+s]."""
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


def make_coco(images, annotations, categories=None):
    anns = []
    for i, a in enumerate(annotations):
        ann = {"id": i + 1, "iscrowd": 0, "category_id": 1}
        ann.update(a)
        if "segmentation" not in ann:
            x, y, w, h = ann["bbox"]
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        anns.append(ann)
    imgs = [{"id": i, "file_name": f"{i}.jpg", "height": h, "width": w} for i, (h, w) in images.items()]
    cats = categories or [{"id": 1, "name": "thing"}]
    return {"images": imgs, "annotations": anns, "categories": cats}


# --------------------------------------------------------------------------- classes


def test_class_counts_sorted_by_id_non_crowd_only():
    cats = [{"id": 5, "name": "a"}, {"id": 2, "name": "b"}, {"id": 9, "name": "c"}]
    coco = make_coco({1: (100, 100), 2: (100, 100)}, [
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10]},
        {"image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10]},
        {"image_id": 2, "category_id": 2, "bbox": [0, 0, 10, 10]},
        {"image_id": 2, "category_id": 5, "bbox": [0, 0, 10, 10]},
        {"image_id": 2, "category_id": 9, "bbox": [0, 0, 10, 10], "iscrowd": 1},
    ], cats)
    counts = class_counts(coco)
    assert counts == [(2, "b", 3, 2), (5, "a", 1, 1), (9, "c", 0, 0)]
    assert isinstance(counts[0], ClassCount) and counts[0].instances == 3

    imb = imbalance_summary(counts)
    assert imb["max_min_ratio"] == pytest.approx(3.0)
    assert imb["top_share"] == pytest.approx(0.75)
    assert imb["top_class"] == "b"
    assert imb["empty_classes"] == 1 and imb["total_instances"] == 4
    # exp(entropy) of (3/4, 1/4)
    p = [0.75, 0.25]
    assert imb["effective_classes"] == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)))


def test_class_balanced_weights_by_hand():
    # beta = 0.5: raw (1-b)/(1-b^n) = 0.5/0.5 = 1 (n=1), 0.5/0.75 = 2/3 (n=2); mean 5/6
    assert class_balanced_weights([1, 2, 0], beta=0.5) == pytest.approx([6 / 5, 4 / 5, 0.0])
    # beta = 0: no re-weighting; beta = 1: inverse frequency (1, 1/2 -> mean 3/4)
    assert class_balanced_weights([7, 3], beta=0.0) == pytest.approx([1.0, 1.0])
    assert class_balanced_weights([1, 2], beta=1.0) == pytest.approx([4 / 3, 2 / 3])
    # the default beta on real-looking counts: 1 and 1000 instances
    raw = [(1 - 0.999) / (1 - 0.999 ** n) for n in (1, 1000)]
    mean = sum(raw) / 2
    assert class_balanced_weights([1, 1000]) == pytest.approx([r / mean for r in raw], rel=1e-9)
    # ClassCount tuples work as input; all-empty gives zeros
    counts = [ClassCount(1, "a", 4, 1), ClassCount(3, "b", 4, 2)]
    assert class_balanced_weights(counts) == pytest.approx([1.0, 1.0])
    assert class_balanced_weights([0, 0]) == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]; got 1.5"):
        class_balanced_weights([1], beta=1.5)
    with pytest.raises(ValueError, match="instance counts must be >= 0, got -1"):
        class_balanced_weights([-1])


# --------------------------------------------------------------------------- sizes


def test_coco_size_bins_at_boundaries():
    coco = make_coco({1: (200, 200)}, [
        {"image_id": 1, "bbox": [0, 0, 32, 32], "area": 1023.99},   # small
        {"image_id": 1, "bbox": [0, 0, 32, 32], "area": 1024.0},    # medium (32^2 is not small)
        {"image_id": 1, "bbox": [0, 0, 96, 96], "area": 9215.9},    # medium
        {"image_id": 1, "bbox": [0, 0, 96, 96], "area": 9216.0},    # large (96^2)
        {"image_id": 1, "bbox": [0, 0, 10, 10], "area": 100.0, "iscrowd": 1},  # ignored
        {"image_id": 1, "bbox": [0, 0, 20, 10]},                    # no area: bbox 200 -> small
    ])
    c = size_histogram(coco)["coco"]
    assert (c["small"], c["medium"], c["large"], c["total"]) == (2, 2, 1, 5)
    assert c["area_from_bbox"] == 1
    assert "prior" not in size_histogram(coco)


def test_prior_bins_after_resize():
    scales = [[24], [48], [96], [192], [384]]
    # 1100 x 1100 image -> 550: every side halves
    coco = make_coco({1: (1100, 1100)}, [
        {"image_id": 1, "bbox": [0, 0, 47, 47]},      # 23.5 px: below the smallest anchor
        {"image_id": 1, "bbox": [0, 0, 48, 48]},      # 24 px exactly: first level's bin
        {"image_id": 1, "bbox": [0, 0, 200, 200]},    # 100 px: 96-192
        {"image_id": 1, "bbox": [0, 0, 1000, 1000]},  # 500 px: >= 384
        {"image_id": 1, "bbox": [1090, 0, 50, 20]},   # clipped to 10 x 20 -> 7.07 px: below
    ])
    p = size_histogram(coco, 550, scales)["prior"]
    assert p["edges"] == [24, 48, 96, 192, 384]
    assert p["labels"][0] == "< 24" and p["labels"][-1] == ">= 384"
    assert p["counts"] == [2, 1, 0, 1, 0, 1]
    assert p["below_smallest"] == 2 and p["share_below_smallest"] == pytest.approx(0.4)
    assert sum(p["fine"]["counts"]) == 5

    # wide image 1100 x 550: stretch scales x by 0.5 and y by 1, letterbox both by 0.5
    wide = make_coco({1: (550, 1100)}, [{"image_id": 1, "bbox": [0, 0, 40, 40]}])
    stretch = size_histogram(wide, 550, scales, preserve_aspect_ratio=False)["prior"]
    letter = size_histogram(wide, 550, scales, preserve_aspect_ratio=True)["prior"]
    assert stretch["median_size"] == pytest.approx(math.sqrt(20 * 40))
    assert stretch["counts"][0] == 0 and stretch["counts"][1] == 1
    assert letter["median_size"] == pytest.approx(20.0) and letter["below_smallest"] == 1

    # multi-scale levels: the bins use each level's smallest scale
    multi = size_histogram(coco, 550, [[24, 30], [48, 60], [96], [192], [384]])["prior"]
    assert multi["edges"] == [24, 48, 96, 192, 384]


def test_anchor_geometry_from_configs():
    base = anchor_geometry(load_config("yolact_base"))
    assert base["input_size"] == 550 and base["anchor_scales"][0] == [24.0]
    assert base["preserve_aspect_ratio"] is False
    effl0 = anchor_geometry(load_config("yolact_effl0", ["model.preserve_aspect_ratio=true"]))
    assert effl0["input_size"] == 448 and effl0["anchor_scales"][0] == [19.0]
    assert effl0["preserve_aspect_ratio"] is True


# --------------------------------------------------------------------------- crowding


def test_instances_per_image_and_masks_to_train():
    anns = [{"image_id": 1, "bbox": [i, 0, 5, 5]} for i in range(5)]
    anns += [{"image_id": 2, "bbox": [i, 0, 5, 5]} for i in range(3)]
    anns += [{"image_id": 2, "bbox": [0, 0, 50, 50], "iscrowd": 1}]
    coco = make_coco({1: (100, 100), 2: (100, 100), 3: (100, 100)}, anns)
    r = instances_per_image(coco, masks_to_train=3)
    assert r["num_images"] == 3 and r["total_instances"] == 8 and r["crowd_annotations"] == 1
    assert r["images_over_limit"] == 1  # 5 > 3; exactly 3 is not over
    assert r["instances_dropped"] == 2 and r["share_instances_dropped"] == pytest.approx(2 / 8)
    assert r["images_without_instances"] == 1 and r["max"] == 5 and r["median"] == 3
    assert r["busiest_images"][0] == {"image_id": 1, "instances": 5}
    assert "approximated" in r["note"]
    with pytest.raises(ValueError, match="masks_to_train must be >= 1; got 0"):
        instances_per_image(coco, masks_to_train=0)


# --------------------------------------------------------------------------- anomalies


def anomaly_case():
    """One clean annotation and one annotation per anomaly kind, each in its own category
    (so only the intended pair can be a duplicate)."""
    cats = [{"id": i, "name": f"c{i}"} for i in range(1, 12)]
    anns = [
        {"category_id": 1, "bbox": [10, 10, 20, 20], "segmentation": square(10, 10, 20)},        # 1 clean
        {"category_id": 2, "bbox": [float("nan"), 0, 10, 10], "segmentation": square(0, 0, 10)},  # 2
        {"category_id": 3, "bbox": [10, 10, 0, 5], "segmentation": square(10, 10, 5)},           # 3
        {"category_id": 4, "bbox": [80, 80, 22, 22], "segmentation": square(80, 80, 20)},        # 4 outside
        {"category_id": 5, "bbox": [10, 10, 10, 10], "segmentation": [[10, 10, 20, 20]]},        # 5
        {"category_id": 6, "bbox": [10, 10, 10, 10], "segmentation": {"size": [100, 100], "counts": [10000]}},
        {"category_id": 7, "bbox": [10, 10, 10, 10], "segmentation": {"size": [50, 50], "counts": [2500]}},
        {"category_id": 8, "bbox": [10, 10, 20, 20], "segmentation": [[10, 10, 20, 20, 30, 30]]},  # 8 empty
        {"category_id": 9, "bbox": [0, 0, 50, 50], "segmentation": square(60, 60, 30)},          # 9 mismatch
        {"category_id": 1, "bbox": [10, 10, 20, 20.2], "segmentation": square(10, 10, 20)},      # 10 dup of 1
        {"category_id": 10, "bbox": [0, 0, 100.5, 100], "segmentation": square(0, 0, 99),
         "iscrowd": 1},                                                                          # 11 clean
    ]
    for a in anns:
        a["image_id"] = 7
    return make_coco({7: (100, 100)}, anns, cats)


def test_each_anomaly_kind_detected_exactly_once():
    anomalies, counts = annotation_anomalies(anomaly_case())
    assert counts == {k: 1 for k in ANOMALY_KINDS}
    by_id = {a.annotation_id: a.problem for a in anomalies}
    assert by_id == {2: "non_finite_coordinates", 3: "nonpositive_box", 4: "box_outside_image",
                     5: "degenerate_polygon", 6: "empty_rle", 7: "rle_size_mismatch",
                     8: "empty_mask", 9: "box_mask_mismatch", 10: "duplicate"}
    assert all(a.image_id == 7 for a in anomalies)
    assert anomalies[0] == (2, 7, "non_finite_coordinates")  # plain 3-tuples


def test_anomalies_without_mask_check():
    anomalies, counts = annotation_anomalies(anomaly_case(), check_masks=False)
    assert counts["empty_mask"] == 0 and counts["box_mask_mismatch"] == 0
    assert sum(counts.values()) == len(anomalies) == len(ANOMALY_KINDS) - 2


def test_duplicates_reported_on_later_annotations_only():
    box = [10, 10, 40, 40]
    coco = make_coco({1: (100, 100), 2: (100, 100)}, [
        {"image_id": 1, "bbox": box},
        {"image_id": 1, "bbox": box},
        {"image_id": 1, "bbox": [10, 10, 40, 41]},  # IoU 40/41 > 0.95 with both
        {"image_id": 1, "bbox": [10, 10, 40, 44]},  # IoU 40/44 < 0.95: not a duplicate
        {"image_id": 1, "bbox": box, "category_id": 2},  # other category
        {"image_id": 2, "bbox": box},                    # other image
    ], [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    anomalies, counts = annotation_anomalies(coco)
    assert [(a.annotation_id, a.problem) for a in anomalies] == [(2, "duplicate"), (3, "duplicate")]
    assert counts["duplicate"] == 2 and sum(counts.values()) == 2


def test_compressed_rle_is_checked():
    import numpy as np
    from pycocotools import mask as mask_utils

    m = np.zeros((60, 80), np.uint8, order="F")
    m[10:30, 20:60] = 1
    rle = mask_utils.encode(m)
    rle["counts"] = rle["counts"].decode("ascii")
    empty = mask_utils.encode(np.zeros((60, 80), np.uint8, order="F"))
    empty["counts"] = empty["counts"].decode("ascii")
    coco = make_coco({1: (60, 80)}, [
        {"image_id": 1, "bbox": [20, 10, 40, 20], "segmentation": rle},
        {"image_id": 1, "bbox": [0, 0, 10, 10], "segmentation": empty, "category_id": 2},
        {"image_id": 1, "bbox": [0, 40, 20, 20], "segmentation": rle, "category_id": 3},
        # uncompressed (column-major) RLE: columns 1-2 of the image, full height
        {"image_id": 1, "bbox": [1, 0, 2, 60], "segmentation": {"size": [60, 80], "counts": [60, 120, 4620]},
         "category_id": 4},
        {"image_id": 1, "bbox": [50, 0, 2, 60], "segmentation": {"size": [60, 80], "counts": [60, 120, 4620]},
         "category_id": 5},
    ], [{"id": i, "name": str(i)} for i in (1, 2, 3, 4, 5)])
    anomalies, _ = annotation_anomalies(coco)
    assert [(a.annotation_id, a.problem) for a in anomalies] == [
        (2, "empty_rle"), (3, "box_mask_mismatch"), (5, "box_mask_mismatch")]


def test_dataset_stats_is_json_ready():
    report = dataset_stats(anomaly_case(), load_config("yolact_base"),
                           compare_configs=[("yolact_effl0", load_config("yolact_effl0"))])
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text)["anomalies"]["total"] == len(ANOMALY_KINDS)
    assert report["prior_compare"]["yolact_effl0"]["smallest_anchor"] == 19.0
    assert [c["category_id"] for c in report["classes"]] == list(range(1, 12))


def test_stats_report_markdown_and_files(tmp_path):
    report = dataset_stats(anomaly_case(), load_config("yolact_base"))
    markdown, paths = write_stats_report(report, tmp_path / "out", "case.json")
    assert [p.name for p in paths] == ["data_stats.md", "data_stats.json", "data_stats.png"]
    assert paths[0].read_text(encoding="utf-8") == markdown == to_markdown(report, "case.json")
    assert markdown.startswith("# Dataset statistics: `case.json`\n")
    assert [line for line in markdown.splitlines() if line.startswith("## ")] == [
        "## Class counts", "## Object sizes", "## Instances per image", "## Annotation anomalies"]
    assert all(f"| {kind} | 1 |" in markdown for kind in ANOMALY_KINDS)
    assert "First 9 examples:" in markdown and "| 10 | 7 | duplicate |" in markdown
    assert "model.num_classes = 80 but the file has 11 categories" in markdown
    assert json.loads(paths[1].read_text())["anomalies"]["total"] == len(ANOMALY_KINDS)
    img = cv2.imread(str(paths[2]))
    # panel heights: 40 + 20 px per class (11) + 20, then 330 and 280
    assert img is not None and img.shape == (40 + 20 * 11 + 20 + 330 + 280, 1200, 3)


# --------------------------------------------------------------------------- the script


def _load_script():
    spec = importlib.util.spec_from_file_location("data_stats_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("content", ["{not json", json.dumps({"images": []})])
def test_script_bad_json_one_line_error(tmp_path, capsys, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    mod = _load_script()
    with pytest.raises(SystemExit, match="^2$") as exc:
        mod.run_cli(mod.main, [str(bad), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "bad.json" in err
    assert not (tmp_path / "out").exists()


def test_script_on_bundled_train(tmp_path):
    out = tmp_path / "stats"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(BUNDLED_TRAIN), "--config", "yolact_effl0",
                           "--out", str(out), "--compare", "yolact_base"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "## Class counts" in proc.stdout and "Prior-scale bins for `yolact_effl0`" in proc.stdout
    for name in ("data_stats.md", "data_stats.json", "data_stats.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    report = json.loads((out / "data_stats.json").read_text())
    assert report["num_images"] == 102 and report["config"]["input_size"] == 448
    assert sum(report["sizes"]["coco"][k] for k in ("small", "medium", "large")) == \
        report["imbalance"]["total_instances"]
    assert "yolact_base" in report["prior_compare"]
    img = cv2.imread(str(out / "data_stats.png"))
    assert img is not None and img.ndim == 3 and img.shape[0] > 400 and img.shape[1] == 1200


# --------------------------------------------------------------------------- image / file / split level


def test_crowd_only_images():
    coco = make_coco({1: (50, 50), 2: (50, 50), 3: (50, 50), 4: (50, 50)}, [
        {"image_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 1},
        {"image_id": 1, "bbox": [20, 20, 10, 10], "iscrowd": 1},
        {"image_id": 2, "bbox": [0, 0, 10, 10], "iscrowd": 1},
        {"image_id": 2, "bbox": [20, 20, 10, 10]},
        {"image_id": 3, "bbox": [0, 0, 10, 10]},
    ])
    assert crowd_only_images(coco) == [1]  # image 4 has no annotation at all: not crowd-only


def test_mask_formats_ignore_crowds():
    rle = {"size": [50, 50], "counts": [100, 20, 2380]}
    coco = make_coco({1: (50, 50)}, [
        {"image_id": 1, "bbox": [0, 0, 10, 10]},
        {"image_id": 1, "bbox": [0, 0, 10, 10], "segmentation": rle, "iscrowd": 1},
        {"image_id": 1, "bbox": [0, 0, 10, 10], "segmentation": rle},
    ])
    assert mask_formats(coco) == {"polygon": [1], "rle": [3]}


def test_split_category_differences():
    a = make_coco({1: (50, 50)}, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]},
                                  {"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5]},
                                  {"image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1}],
                  [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}])
    b = make_coco({1: (50, 50)}, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]},
                                  {"image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5]}],
                  [{"id": 1, "name": "a"}, {"id": 2, "name": "B"}, {"id": 3, "name": "c"}, {"id": 4, "name": "d"}])
    diff = split_category_differences(a, b)
    assert diff == {"definitions": [(2, "b", "B"), (4, None, "d")], "only_here": [2], "only_in_other": [3]}
