"""TIDE breakdown: a case worked out by hand (every error type's dAP as fractions of the
101 recall points), and the base AP against pycocotools' AP50 on random boxes and masks."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tests.paths import ROOT
from yolact_lite.evaluation.coco_eval import coco_evaluate, load_coco_gt
from yolact_lite.evaluation.tide import ERROR_TYPES, format_tide_table, plot_tide, tide_from_coco

A, B = 1, 2  # category ids


def _gt(boxes, crowd=(), image_id=1, start=1):
    return [{"id": start + k, "image_id": image_id, "category_id": cat, "bbox": list(box),
             "area": float(box[2] * box[3]), "iscrowd": int(k in crowd),
             "segmentation": [[box[0], box[1], box[0] + box[2], box[1], box[0] + box[2], box[1] + box[3],
                               box[0], box[1] + box[3]]]}
            for k, (cat, box) in enumerate(boxes)]


def _coco(annotations, image_ids=(1,), size=200):
    return load_coco_gt({"images": [{"id": i, "file_name": f"{i}.jpg", "height": size, "width": size}
                                    for i in image_ids],
                         "categories": [{"id": A, "name": "a"}, {"id": B, "name": "b"}],
                         "annotations": annotations})


def _det(cat, box, score, image_id=1):
    return {"image_id": image_id, "category_id": cat, "bbox": list(box), "score": score}


# GTs: class A g1, g2, g5; class B g4, g3, g6 (boxes 10 x 10 along a row)
G1, G2, G5, G4, G3, G6 = ([x, 0, 10, 10] for x in (0, 20, 80, 60, 40, 120))
HAND_GT = [(A, G1), (A, G2), (A, G5), (B, G4), (B, G3), (B, G6)]
HAND_DETS = [
    _det(A, G1, 0.9),                  # TP on g1
    _det(A, G1, 0.8),                  # dupe of g1
    _det(A, [20, 0, 10, 4], 0.7),      # loc: IoU 0.4 with g2
    _det(A, [150, 150, 10, 10], 0.6),  # bkg
    _det(A, G4, 0.5),                  # cls: on g4, a class B ground truth
    _det(A, G5, 0.4),                  # TP on g5
    _det(B, G6, 0.3),                  # TP on g6; g3 is missed
]


def test_hand_computed_breakdown():
    # AP per class = (sum of interpolated precision at the 101 recall points) / 101; see below
    base_a, base_b = 34 + 33 / 3, 34           # A: P 1 up to recall 1/3, then 1/3 to 2/3; B: 1 to 1/3
    expected = {
        "cls": (34 + 33 * 0.4) + 67,           # d5 -> class B: B reaches 2/3 at P 1; A loses an FP
        "loc": (34 + 33 * 2 / 3 + 34 * 0.5) + base_b,  # d3 takes g2: A reaches recall 1
        "both": base_a + base_b,
        "dupe": (34 + 33 * 0.4) + base_b,      # the FP before the second TP goes
        "bkg": (34 + 33 * 0.4) + base_b,
        "miss": base_a + 51,                   # B has 2 ground truths: recall 1/2 at P 1
        "fp": 67 + base_b,
        "fn": (51 + 50 / 3) + 101,             # A: 2 gts (g1, g5); B: 1 (g6)
    }
    to_ap = lambda total: 100.0 * total / 101 / 2  # noqa: E731 -- mean of 2 classes
    out = tide_from_coco(_coco(_gt(HAND_GT)), HAND_DETS, "bbox", [1])
    assert out["ap"] == pytest.approx(to_ap(base_a + base_b))
    for error in ERROR_TYPES:
        assert out["dap"][error] == pytest.approx(to_ap(expected[error]) - to_ap(base_a + base_b)), error
    assert out["dap_fp"] == pytest.approx(to_ap(expected["fp"]) - to_ap(base_a + base_b))
    assert out["dap_fn"] == pytest.approx(to_ap(expected["fn"]) - to_ap(base_a + base_b))
    assert out["counts"] == {"cls": 1, "loc": 1, "both": 0, "dupe": 1, "bkg": 1, "miss": 1,
                             "tp": 3, "gt": 6, "detections": 7}
    ap50 = coco_evaluate(_coco(_gt(HAND_GT)), HAND_DETS, [], image_ids=[1])["box"]["AP50"]
    assert out["ap"] == pytest.approx(ap50)


def test_both_error_and_a_loc_fix_that_lands_on_a_matched_truth_is_removed():
    gt = _gt([(A, G1), (B, G4)])
    dets = [_det(A, G1, 0.9), _det(A, [0, 0, 10, 4], 0.8),  # loc on g1, which d1 already has
            _det(A, [60, 0, 10, 4], 0.7)]                    # both: IoU 0.4 with g4 (class B) only
    out = tide_from_coco(_coco(gt), dets, "bbox", [1])
    assert out["counts"]["loc"] == 1 and out["counts"]["both"] == 1 and out["counts"]["miss"] == 1
    # A: TP then 2 FPs -> AP_A = 1 (recall 1 at the first detection); removing FPs after it changes nothing
    assert out["ap"] == pytest.approx(50.0)
    assert out["dap"]["loc"] == pytest.approx(0.0) and out["dap"]["both"] == pytest.approx(0.0)
    # without g4 (missed: a both error does not cover it) B has no ground truth: the mean is A's alone
    assert out["dap"]["miss"] == pytest.approx(50.0) and out["dap_fn"] == pytest.approx(50.0)


@pytest.mark.parametrize("seed", range(6))
def test_base_ap_is_pycocotools_ap50_on_random_boxes_with_crowds(seed):
    rng = np.random.default_rng(seed)
    anns, dets, start = [], [], 1
    for image_id in (1, 2, 3):
        n = int(rng.integers(0, 6))
        boxes = [(int(rng.choice([A, B])), [float(v) for v in rng.uniform(0, 120, 2)] +
                  [float(v) for v in rng.uniform(5, 60, 2)]) for _ in range(n)]
        crowd = (n - 1,) if n and rng.random() < 0.4 else ()
        anns += _gt(boxes, crowd=crowd, image_id=image_id, start=start)
        start += n
        for cat, box in boxes:
            for _ in range(int(rng.integers(0, 3))):
                jitter = [box[0] + rng.normal(0, 4), box[1] + rng.normal(0, 4), box[2], box[3]]
                dets.append(_det(int(rng.choice([A, B, cat, cat])), jitter, float(rng.random()), image_id))
        dets += [_det(A, list(rng.uniform(0, 150, 2)) + [20, 20], float(rng.random()), image_id)]
    coco = _coco(anns, image_ids=(1, 2, 3))
    ap50 = coco_evaluate(coco, dets, [], image_ids=[1, 2, 3])["box"]["AP50"]
    out = tide_from_coco(coco, dets, "bbox", [1, 2, 3])
    if ap50 is None:
        assert out["ap"] is None and out["dap"]["loc"] is None
    else:
        assert out["ap"] == pytest.approx(ap50, abs=1e-9)
        assert out["dap_fp"] >= -1e-9 and out["dap_fn"] >= -1e-9  # an oracle never loses AP here
        assert sum(out["counts"][t] for t in ERROR_TYPES[:-1]) + out["counts"]["tp"] <= out["counts"]["detections"]


def test_mask_breakdown_uses_mask_iou():
    masks = np.zeros((2, 50, 50), dtype=np.uint8, order="F")
    masks[0, 0:10, 0:10] = 1
    masks[1, 0:10, 0:4] = 1  # inside gt's box region: mask IoU 0.4
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    for r in rles:
        r["counts"] = r["counts"].decode()
    coco = _coco(_gt([(A, [0, 0, 10, 10])]), size=50)
    dets = [{"image_id": 1, "category_id": A, "segmentation": rles[1], "score": 0.9},
            {"image_id": 1, "category_id": A, "segmentation": rles[0], "score": 0.5}]
    out = tide_from_coco(coco, dets, "segm", [1])
    assert out["counts"]["loc"] == 1 and out["counts"]["tp"] == 1
    # FP at 0.9, TP at 0.5 -> precision 1/2 over all recall points; fixing loc gives a TP first
    assert out["ap"] == pytest.approx(50.0) and out["dap"]["loc"] == pytest.approx(50.0)
    ap50 = coco_evaluate(coco, [], dets, image_ids=[1])["mask"]["AP50"]
    assert out["ap"] == pytest.approx(ap50)


def test_table_and_plot(tmp_path):
    out = tide_from_coco(_coco(_gt(HAND_GT)), HAND_DETS, "bbox", [1])
    table = format_tide_table({"box": out, "mask": out})
    assert "dupe" in table and f"{out['dap']['loc']:8.2f}" in table.splitlines()[2]
    plot_tide({"box": out, "mask": out}, tmp_path / "tide.png")
    assert (tmp_path / "tide.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="iou_type must be bbox or segm"):
        tide_from_coco(_coco(_gt(HAND_GT)), HAND_DETS, "keypoints", [1])


def test_eval_cli_writes_prints_and_plots_the_breakdown(tmp_path, capsys):
    import json

    from yolact_lite.cli.eval import main

    root = ROOT
    val = root / "data" / "coco_mini" / "val"
    assert main(["--weights", str(root / "data" / "models" / "person_effl0.pt"), "--json",
                 str(val / "annotations_person.json"), "--images", str(val / "images"), "--max-images", "6",
                 "--tide", "--out", str(tmp_path), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for kind in ("box", "mask"):
        assert metrics[kind]["AP50"] > 0 and metrics["tide"][kind]["ap"] == pytest.approx(metrics[kind]["AP50"])
        assert set(metrics["tide"][kind]["dap"]) == set(ERROR_TYPES)
    assert (tmp_path / "tide.png").is_file()
    assert "TIDE dAP" in capsys.readouterr().out
    assert "NaN" not in (tmp_path / "metrics.json").read_text()


def test_fixing_every_missed_ground_truth_leaves_nothing_to_score():
    """No detection at all: AP 0; with every ground truth removed no AP exists, so the miss and FN
    gains are None (JSON null), never NaN."""
    out = tide_from_coco(_coco(_gt(HAND_GT)), [], "bbox", [1])
    assert out["ap"] == 0.0
    assert out["dap"]["miss"] is None and out["dap_fn"] is None
    assert out["dap"]["loc"] == 0.0 and out["dap_fp"] == 0.0
