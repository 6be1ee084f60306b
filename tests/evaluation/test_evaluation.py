"""COCO evaluation: result conversion, COCOeval wrapper, leakage metric, evaluate(), script."""

import json
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch

from tests.paths import ROOT
from yolact_lite.evaluation.coco_eval import (
    coco_evaluate,
    detections_to_coco,
    evaluate,
    format_per_class_table,
    format_table,
    ground_truth,
    load_coco_gt,
    mask_leakage,
)
from yolact_lite.structures import Detections


def _real_val():
    return ROOT / "data" / "coco_mini" / "val"  # bundled with the repository


def _rect_poly(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _gt_detections(coco, image_id, category_ids, drop_crowd=True):
    """The image's ground truth as Detections (score 1), labels via the sorted-id mapping."""
    label = {c: i for i, c in enumerate(category_ids)}
    info = coco.imgs[image_id]
    anns = [a for a in coco.imgToAnns.get(image_id, []) if not (drop_crowd and a.get("iscrowd", 0))]
    if not anns:
        return Detections.empty(info["height"], info["width"])
    boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                           a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32)
    with warnings.catch_warnings():  # pycocotools vs numpy 2 copy-keyword deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        masks = torch.from_numpy(np.stack([coco.annToMask(a) for a in anns])).bool()
    classes = torch.tensor([label[a["category_id"]] for a in anns], dtype=torch.int64)
    return Detections(boxes, torch.ones(len(anns)), classes, masks)


def _all_results(coco, image_ids, category_ids):
    box, segm = [], []
    for iid in image_ids:
        dets = _gt_detections(coco, iid, category_ids)
        box += detections_to_coco(iid, dets, category_ids, kind="bbox")
        segm += detections_to_coco(iid, dets, category_ids, kind="segm")
    return box, segm


def _synthetic_dict():
    """3 images 128x96, NON-contiguous category ids listed out of order, one crowd."""
    cats = [{"id": 5, "name": "five"}, {"id": 2, "name": "two"}, {"id": 17, "name": "seventeen"}]
    images = [{"id": i, "file_name": f"im{i}.png", "height": 96, "width": 128} for i in (3, 1, 2)]
    specs = [  # image, category, x, y, w, h
        (1, 5, 4, 4, 20, 16), (1, 2, 30, 10, 24, 30), (1, 17, 2, 30, 10, 10),
        (2, 17, 10, 5, 40, 38), (2, 5, 50, 2, 8, 8),
        (3, 2, 0, 0, 128, 96), (3, 5, 20, 20, 6, 12),
    ]
    anns = []
    for k, (iid, cid, x, y, w, h) in enumerate(specs):
        anns.append({"id": k + 1, "image_id": iid, "category_id": cid, "bbox": [x, y, w, h],
                     "area": float(w * h), "segmentation": _rect_poly(x, y, w, h), "iscrowd": 0})
    crowd = np.zeros((96, 128), dtype=np.uint8)
    crowd[30:46, 30:60] = 1
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(crowd))
    anns.append({"id": 100, "image_id": 1, "category_id": 2, "bbox": [30, 30, 30, 16], "area": 480.0,
                 "segmentation": {"size": [96, 128], "counts": rle["counts"].decode()}, "iscrowd": 1})
    return {"images": images, "annotations": anns, "categories": cats}


# --------------------------------------------------------------------------- (1) perfect = 100

def test_ground_truth_scores_100_on_real_data():
    base = _real_val()
    coco = load_coco_gt(base / "annotations.json")
    category_ids = sorted(coco.getCatIds())
    ids = sorted(coco.getImgIds())[:12]  # a subset: restriction to evaluated ids must hold
    assert any(a.get("iscrowd") for a in coco.dataset["annotations"])  # crowds exist in gt
    box, segm = _all_results(coco, ids, category_ids)
    m = coco_evaluate(coco, box, segm, image_ids=ids, per_class=True)
    for kind in ("box", "mask"):
        assert m[kind]["AP"] == pytest.approx(100.0)
        assert m[kind]["AP50"] == pytest.approx(100.0)
        assert m[kind]["AP75"] == pytest.approx(100.0)
    present = {coco.cats[a["category_id"]]["name"] for i in ids for a in coco.imgToAnns[i]
               if not a["iscrowd"]}
    for name, v in m["per_class"].items():
        if name in present:
            assert v["box"] == pytest.approx(100.0) and v["mask"] == pytest.approx(100.0)
    assert "AP_M" in format_table(m) and "person" in format_per_class_table(m)


def test_ground_truth_scores_100_with_noncontiguous_ids():
    data = _synthetic_dict()
    coco = load_coco_gt(data)
    category_ids = sorted(coco.getCatIds())
    assert category_ids == [2, 5, 17]
    ids = sorted(coco.getImgIds())
    box, segm = _all_results(coco, ids, category_ids)
    # exact id round trip: every result's category matches a gt of that image
    gt_pairs = {(a["image_id"], a["category_id"]) for a in data["annotations"]}
    assert {(r["image_id"], r["category_id"]) for r in box} <= gt_pairs
    assert all("bbox" not in r and isinstance(r["segmentation"]["counts"], str) for r in segm)
    json.dumps(box), json.dumps(segm)
    m = coco_evaluate(coco, box, segm)
    for kind in ("box", "mask"):
        for key in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"):
            assert m[kind][key] == pytest.approx(100.0), (kind, key)
    # a label mapped through the WRONG (json-order) ids must not score 100
    wrong = [5, 2, 17]
    box_w = []
    for iid in ids:
        box_w += detections_to_coco(iid, _gt_detections(coco, iid, category_ids), wrong, kind="bbox")
    assert coco_evaluate(coco, box_w, segm)["box"]["AP"] < 100.0


def test_ground_truth_that_cocoeval_cannot_score_is_left_out_and_counted():
    """A polygon under 3 points crashes COCOeval and a NaN box scores as matched: those are left
    out (counted by reason), short parts are cut from multi-part polygons, the rest is untouched."""
    data = _synthetic_dict()
    anns = data["annotations"]
    anns[0]["segmentation"] = [[1, 2, 3, 4]]  # a 2-point polygon, read by pycocotools as a box
    anns[1]["bbox"] = [float("nan")] * 4
    anns[2]["segmentation"] = [[]]
    good = _rect_poly(10, 5, 40, 38)[0]
    anns[3]["segmentation"] = [good, [5, 5, 6, 6]]  # one usable part, one 2-point part
    anns[4]["segmentation"] = _rect_poly(50, 2, 8, 8)[0]  # a single flat polygon
    del anns[5]["area"]  # the full-image 128 x 96 rectangle
    coco, dropped = ground_truth(data)
    assert dropped == {"polygon_too_few_points": 2, "non_finite_coordinates": 1}
    kept = {a["id"]: a for a in coco.dataset["annotations"]}
    assert sorted(kept) == [4, 5, 6, 7, 100]
    assert kept[4]["segmentation"] == [good] and kept[5]["segmentation"] == [_rect_poly(50, 2, 8, 8)[0]]
    assert kept[6]["area"] == 128 * 96
    assert kept[7] is data["annotations"][6] and kept[100] is data["annotations"][7]  # untouched
    assert data["annotations"][3]["segmentation"][1] == [5, 5, 6, 6]  # the input is not modified
    ids = sorted(coco.getImgIds())
    box, segm = _all_results(coco, ids, sorted(coco.getCatIds()))
    m = coco_evaluate(coco, box, segm)  # no crash, and the kept ground truth is matched exactly
    assert m["box"]["AP"] == pytest.approx(100.0) and m["mask"]["AP"] == pytest.approx(100.0)
    # a clean file passes unchanged, object for object
    real = json.loads((_real_val() / "annotations.json").read_text())
    clean, none = ground_truth(real)
    assert not none and all(a is b for a, b in zip(clean.dataset["annotations"], real["annotations"]))
    assert len(clean.dataset["annotations"]) == len(real["annotations"])


def test_empty_detections_give_zero():
    coco = load_coco_gt(_synthetic_dict())
    m = coco_evaluate(coco, [], [], per_class=True)
    assert m["box"]["AP"] == 0.0 and m["mask"]["AP50"] == 0.0
    empty = Detections.empty(96, 128)
    assert detections_to_coco(1, empty, [2, 5, 17], kind="segm") == []


# --------------------------------------------------------------------------- (2) hand-made AP

def _envelope_ap(tp_flags, num_gt):
    """101-point interpolated AP, written out by hand."""
    tp = np.cumsum(tp_flags)
    fp = np.cumsum([not t for t in tp_flags])
    recall = tp / num_gt
    precision = tp / (tp + fp)
    env = precision.copy()
    for i in range(len(env) - 2, -1, -1):  # monotone from the right
        env[i] = max(env[i], env[i + 1])
    samples = []
    for r in np.linspace(0.0, 1.0, 101):
        idx = np.searchsorted(recall, r, side="left")
        samples.append(env[idx] if idx < len(env) else 0.0)
    return float(np.mean(samples))


def test_hand_made_precision_recall():
    H, W = 100, 200
    gt_boxes = [(10, 10, 30, 30), (60, 10, 30, 30), (110, 10, 30, 30), (10, 60, 30, 30)]
    anns = [{"id": i + 1, "image_id": 7, "category_id": 3, "bbox": list(b), "area": 900.0,
             "segmentation": _rect_poly(*b), "iscrowd": 0} for i, b in enumerate(gt_boxes)]
    coco = load_coco_gt({"images": [{"id": 7, "file_name": "x.png", "height": H, "width": W}],
                         "annotations": anns, "categories": [{"id": 3, "name": "thing"}]})
    # scores 0.9, 0.8, 0.7, 0.6: 1st, 2nd, 4th hit gt 0, 1, 3 exactly; the 3rd is far away
    det_xywh = [gt_boxes[0], gt_boxes[1], (160, 60, 30, 30), gt_boxes[3]]
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in det_xywh], dtype=torch.float32)
    masks = torch.zeros(4, H, W, dtype=torch.bool)
    for k, (x, y, w, h) in enumerate(det_xywh):
        masks[k, y:y + h, x:x + w] = True
    dets = Detections(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.zeros(4, dtype=torch.int64), masks)
    box = detections_to_coco(7, dets, [3], kind="bbox")
    segm = detections_to_coco(7, dets, [3], kind="segm")
    expected = 100.0 * _envelope_ap([True, True, False, True], num_gt=4)
    assert expected == pytest.approx(100.0 * (51 + 25 * 0.75) / 101)
    m = coco_evaluate(coco, box, segm)
    for kind in ("box", "mask"):
        assert m[kind]["AP50"] == pytest.approx(expected, abs=1e-6)
        assert m[kind]["AP"] == pytest.approx(expected, abs=1e-6)  # TPs have IoU 1.0


def test_mask_scores_used_for_segm_results():
    dets = Detections(torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([0.9]),
                      torch.tensor([1]), torch.ones(1, 8, 8, dtype=torch.bool),
                      mask_scores=torch.tensor([0.3]))
    (b,) = detections_to_coco(4, dets, [10, 20], kind="bbox")
    (s,) = detections_to_coco(4, dets, [10, 20], kind="segm")
    assert b["score"] == pytest.approx(0.9) and s["score"] == pytest.approx(0.3)
    assert b["category_id"] == 20 and b["bbox"] == [0.0, 0.0, 4.0, 4.0]


def test_rle_round_trip():
    from pycocotools import mask as mask_utils
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 7, 11, generator=g) > 0.5
    dets = Detections(torch.zeros(3, 4), torch.ones(3), torch.zeros(3, dtype=torch.int64), masks)
    segm = json.loads(json.dumps(detections_to_coco(1, dets, [9], kind="segm")))
    for k, r in enumerate(segm):
        assert r["segmentation"]["size"] == [7, 11]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = mask_utils.decode(r["segmentation"]).astype(bool)
        assert np.array_equal(decoded, masks[k].numpy())


# --------------------------------------------------------------------------- (3) end to end

class FakePredictor:
    """Returns the perfect detections for the image whose pixel value is its id."""

    def __init__(self, coco, category_ids, expose_ids=False):
        self.coco, self.ids = coco, category_ids
        if expose_ids:  # like a checkpoint's mapping: then evaluate() must use it
            self.category_ids = list(category_ids)
        self.class_names = ["c"] * len(category_ids)
        self.timings = {}

    def predict(self, image_bgr):
        image_id = int(image_bgr[0, 0, 0])
        self.timings = {"preprocess": 1.0, "network": 2.0, "detect": 0.5, "masks": 0.5}
        return _gt_detections(self.coco, image_id, self.ids)


def test_evaluate_end_to_end(tmp_path):
    data = _synthetic_dict()
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    for im in data["images"]:
        cv2.imwrite(str(img_dir / im["file_name"]), np.full((96, 128, 3), im["id"], np.uint8))
    ann_path = tmp_path / "ann.json"
    ann_path.write_text(json.dumps(data))
    coco = load_coco_gt(data)
    out = tmp_path / "results"
    m = evaluate(FakePredictor(coco, [2, 5, 17]), ann_path, img_dir, per_class=True,
                 progress=False, results_dir=out)
    assert m["num_images"] == 3 and m["num_detections"] == 7
    assert m["box"]["AP"] == pytest.approx(100.0) and m["mask"]["AP"] == pytest.approx(100.0)
    assert m["per_class"]["seventeen"]["mask"] == pytest.approx(100.0)
    assert m["timing"]["stages_ms"]["network"] == pytest.approx(2.0)
    assert m["timing"]["fps"] > 0
    bbox = json.loads((out / "bbox_detections.json").read_text())
    segm = json.loads((out / "mask_detections.json").read_text())
    saved = json.loads((out / "metrics.json").read_text())
    assert len(bbox) == len(segm) == 7 and {r["category_id"] for r in bbox} == {2, 5, 17}
    assert saved["mask"]["AP"] == pytest.approx(100.0)
    # re-evaluating the written files gives the same numbers
    assert coco_evaluate(coco, bbox, segm)["box"] == m["box"]
    # a subset: only the first sorted id is evaluated, still perfect
    m1 = evaluate(FakePredictor(coco, [2, 5, 17]), ann_path, img_dir, max_images=1, progress=False)
    assert m1["num_images"] == 1 and m1["num_detections"] == 3
    assert m1["box"]["AP"] == pytest.approx(100.0)
    # the predictor's own label -> id mapping (a permutation of the json's ids) is honoured
    m2 = evaluate(FakePredictor(coco, [17, 5, 2], expose_ids=True), ann_path, img_dir,
                  progress=False, leakage=False)
    assert m2["mask"]["AP"] == pytest.approx(100.0) and "leakage" not in m2


# --------------------------------------------------------------------------- (4) leakage

def test_mask_leakage_known_answer():
    H, W = 64, 64
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400.0,
         "segmentation": _rect_poly(10, 10, 20, 20), "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 40, 60, 20], "area": 1200.0,
         "segmentation": _rect_poly(0, 40, 60, 20), "iscrowd": 0},
    ]
    coco = load_coco_gt({"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
                         "annotations": anns,
                         "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]})
    masks = torch.zeros(4, H, W, dtype=torch.bool)
    masks[0, 10:25, 10:30] = True   # 300 px inside the box
    masks[0, 30:35, 10:30] = True   # 100 px below it -> 25 % outside, IoU 300/500 = 0.6
    masks[1, 40:60, 0:60] = True    # perfect medium match -> 0 %
    masks[2, 0:5, 40:64] = True     # class 1 but IoU 0 -> ignored
    masks[3, 10:30, 10:30] = True   # perfect shape but class 2 (no such gt there) -> ignored
    dets = Detections(torch.zeros(4, 4), torch.tensor([0.9, 0.8, 0.7, 0.6]),
                      torch.tensor([0, 1, 0, 1]), masks)
    segm = detections_to_coco(1, dets, [1, 2], kind="segm")
    leak = mask_leakage(coco, segm)
    assert leak["small"] == {"leakage": pytest.approx(0.25), "count": 1}
    assert leak["medium"] == {"leakage": pytest.approx(0.0), "count": 1}
    assert leak["large"] == {"leakage": None, "count": 0}
    assert leak["all"]["leakage"] == pytest.approx(0.125) and leak["all"]["count"] == 2


# --------------------------------------------------------------------------- (5) script

def test_eval_command_missing_json(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "yolact_lite", "eval", "--config", "yolact_resnet50",
         "--json", str(tmp_path / "missing.json"), "--images", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert proc.returncode == 2, proc.stderr
    err_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len([line for line in err_lines if line.startswith("error:")]) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "missing.json" in proc.stderr


def test_eval_takes_the_config_from_the_checkpoint(tmp_path, capsys):
    """The bundled 1-class model evaluates without --config (it carries its config), and the
    numbers are those of a Predictor built from the same file."""
    from yolact_lite.checkpoint.files import carried_config, read_state_file
    from yolact_lite.cli.eval import main
    from yolact_lite.evaluation.coco_eval import evaluate
    from yolact_lite.inference.predictor import Predictor

    weights = ROOT / "data" / "models" / "person_effl0.pt"
    val = ROOT / "data" / "coco_mini" / "val"
    args = ["--json", str(val / "annotations_person.json"), "--images", str(val / "images"), "--max-images", "4"]
    assert main(["--weights", str(weights), *args, "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    written = json.loads((tmp_path / "e" / "metrics.json").read_text())
    data = read_state_file(weights)
    direct = evaluate(Predictor(carried_config(data), weights=data), val / "annotations_person.json",
                      val / "images", max_images=4, progress=False)
    assert written["mask"]["AP"] == pytest.approx(direct["mask"]["AP"]) and direct["box"]["AP50"] > 0
    with pytest.raises(Exception, match="--config is needed"):
        main(args)
