"""yolact_lite.formats: polygons with holes, RLE, COCO results and JSON-lines frame records,
checked against independent references (connected components, shoelace areas, COCOeval)."""

from __future__ import annotations

import contextlib
import io
import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolact_lite.formats import (
    detections_to_coco,
    frame_record,
    mask_to_polygons,
    masks_to_polygons,
    masks_to_rle,
    polygons_to_mask,
    rle_to_mask,
    write_json_line,
)
from yolact_lite.structures import Detections

H, W = 200, 240


def shapes_mask() -> np.ndarray:
    """A ring with an island in its hole, a square with two holes, and a tilted ellipse."""
    m = np.zeros((H, W), np.uint8)
    cv2.circle(m, (60, 60), 45, 1, -1)
    cv2.circle(m, (60, 60), 20, 0, -1)
    cv2.circle(m, (60, 60), 8, 1, -1)  # island inside the ring's hole
    cv2.rectangle(m, (130, 20), (220, 110), 1, -1)
    cv2.rectangle(m, (150, 40), (170, 60), 0, -1)
    cv2.rectangle(m, (180, 70), (200, 95), 0, -1)
    cv2.ellipse(m, (120, 160), (60, 25), 20, 0, 360, 1, -1)
    return m.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def shoelace(poly) -> float:
    xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def reference_counts(mask: np.ndarray):
    """(8-connected foreground components, enclosed 4-connected background components)."""
    n_fg = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1
    padded = np.pad(~mask, 1, constant_values=True).astype(np.uint8)  # outside = one component
    n_bg = cv2.connectedComponents(padded, connectivity=4)[0] - 1
    return n_fg, n_bg - 1


# --------------------------------------------------------------------------- polygons


@pytest.mark.parametrize("seed", range(6))
def test_exact_outline_round_trips_pixel_for_pixel(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((37, 53)) < [0.3, 0.5, 0.7][seed % 3]  # many parts, holes, diagonal touches
    parts = mask_to_polygons(mask, tolerance_px=0)
    assert np.array_equal(polygons_to_mask(parts, 37, 53), mask)
    # shoelace areas of the outlines (pixel edges): exteriors minus holes = pixel count
    area = sum(shoelace(p["exterior"]) - sum(shoelace(h) for h in p["holes"]) for p in parts)
    assert area == pytest.approx(mask.sum())


def test_parts_and_holes_match_connected_components():
    mask = shapes_mask()
    parts = mask_to_polygons(mask, tolerance_px=0.5)
    n_fg, n_holes = reference_counts(mask)
    assert (n_fg, n_holes) == (4, 3)
    assert len(parts) == n_fg
    assert sum(len(p["holes"]) for p in parts) == n_holes
    assert sorted(len(p["holes"]) for p in parts) == [0, 0, 1, 2]


@pytest.mark.parametrize("tolerance", [0.0, 0.5])
def test_round_trip_keeps_holes_and_parts(tolerance):
    mask = shapes_mask()
    back = polygons_to_mask(mask_to_polygons(mask, tolerance_px=tolerance), H, W)
    assert iou(back, mask) >= (1.0 if tolerance == 0 else 0.98)
    # the holes stay holes, the island stays filled
    assert not back[60, 60 - 14] and back[60, 60] and not back[50, 160] and back[30, 140]
    assert reference_counts(back) == reference_counts(mask)


def test_tolerance_trades_points_for_accuracy():
    mask = shapes_mask()
    points, ious = [], []
    for tolerance in (0.0, 0.5, 1.0, 2.0):
        parts = mask_to_polygons(mask, tolerance_px=tolerance)
        points.append(sum(len(p["exterior"]) + sum(len(h) for h in p["holes"]) for p in parts))
        ious.append(iou(polygons_to_mask(parts, H, W), mask))
    assert points[0] > points[1] > points[2] > points[3]
    assert points[2] < points[0] / 4  # 1 px removes the staircase of the exact outline
    assert ious[0] == 1.0 and ious[1] >= 0.98 and ious[2] >= 0.98
    assert ious == sorted(ious, reverse=True) and ious[-1] < 1.0


def test_single_pixel_outline_in_coco_coordinates():
    mask = np.zeros((10, 12), bool)
    mask[3, 5] = True  # row 3, column 5 covers [5, 6] x [3, 4]
    (part,) = mask_to_polygons(mask, tolerance_px=0.5)
    assert part["holes"] == []
    corners = {tuple(p) for p in np.asarray(part["exterior"]).reshape(-1, 2)}
    assert corners == {(5.0, 3.0), (6.0, 3.0), (6.0, 4.0), (5.0, 4.0)}
    # the same convention as pycocotools: the square [5, 6] x [3, 4] is exactly that pixel
    rle = mask_utils.frPyObjects([part["exterior"]], 10, 12)
    assert np.array_equal(mask_utils.decode(mask_utils.merge(rle)).astype(bool), mask)


def test_holes_false_fills_the_holes():
    mask = shapes_mask()
    parts = mask_to_polygons(mask, tolerance_px=0, holes=False)
    assert all(p["holes"] == [] for p in parts)
    filled = mask.astype(np.uint8).copy()
    flood = np.zeros((H + 2, W + 2), np.uint8)
    cv2.floodFill(filled, flood, (0, 0), 2)  # outside -> 2; holes stay 0
    assert np.array_equal(polygons_to_mask(parts, H, W), filled != 2)


def test_touching_the_image_border_and_torch_input():
    mask = torch.zeros(3, 20, 30, dtype=torch.bool)
    mask[0] = True  # the whole image
    mask[1, :5, 25:] = True  # a corner
    per_instance = masks_to_polygons(mask, tolerance_px=0)
    assert [len(p) for p in per_instance] == [1, 1, 0]  # an empty mask has no part
    assert shoelace(per_instance[0][0]["exterior"]) == 600
    for parts, m in zip(per_instance, mask.numpy()):
        assert np.array_equal(polygons_to_mask(parts, 20, 30), m)


def test_polygon_input_errors():
    with pytest.raises(ValueError, match="H, W"):
        mask_to_polygons(np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError, match="N, H, W"):
        masks_to_polygons(np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="tolerance_px"):
        mask_to_polygons(np.ones((3, 4), bool), tolerance_px=-1)
    with pytest.raises(ValueError, match="threshold probabilities"):
        masks_to_rle(torch.full((1, 3, 4), 0.3))
    (part,) = mask_to_polygons(np.full((3, 4), 255, np.uint8), 0)  # 0/255 integers are fine
    assert {tuple(p) for p in np.asarray(part["exterior"]).reshape(-1, 2)} == {(0, 0), (4, 0), (4, 3), (0, 3)}


# --------------------------------------------------------------------------- RLE


def test_rle_round_trip_is_exact_and_json_ready():
    rng = np.random.default_rng(1)
    masks = rng.random((4, 33, 47)) < 0.4
    masks[3] = False
    rles = masks_to_rle(torch.from_numpy(masks))
    rles = json.loads(json.dumps(rles))  # text counts survive JSON
    assert [r["size"] for r in rles] == [[33, 47]] * 4
    for rle, m in zip(rles, masks):
        assert np.array_equal(rle_to_mask(rle), m)
        assert int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()})) == m.sum()
    assert masks_to_rle(np.zeros((0, 5, 5), bool)) == []


def test_rle_to_mask_reads_uncompressed_counts():
    mask = np.zeros((4, 3), bool)
    mask[1:3, 1] = True  # column-major: 5 zeros, 2 ones, 5 zeros
    assert np.array_equal(rle_to_mask({"size": [4, 3], "counts": [5, 2, 5]}), mask)


# --------------------------------------------------------------------------- detections


def make_detections(masks: np.ndarray, classes, scores, class_names=("cat", "dog")) -> Detections:
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return Detections(boxes=torch.tensor(boxes, dtype=torch.float32), scores=torch.tensor(scores),
                      classes=torch.tensor(classes), masks=torch.from_numpy(masks),
                      mask_scores=torch.tensor(scores) * 0.5, class_names=list(class_names))


def two_instances() -> np.ndarray:
    masks = np.zeros((2, 60, 80), bool)
    masks[0, 10:30, 5:40] = True
    masks[0, 15:20, 10:15] = False  # a hole
    masks[1, 35:55, 50:75] = True
    return masks


def test_detections_to_coco_fields_and_mapping():
    masks = two_instances()
    det = make_detections(masks, [1, 0], [0.9, 0.7])
    results = detections_to_coco(det, image_id=42, category_ids=[3, 17])
    assert [r["category_id"] for r in results] == [17, 3]
    assert results[0]["bbox"] == [5.0, 10.0, 35.0, 20.0]
    assert results[0]["score"] == pytest.approx(0.9) and results[0]["mask_score"] == pytest.approx(0.45)
    assert all(r["image_id"] == 42 for r in results)
    for r, m in zip(results, masks):
        assert np.array_equal(rle_to_mask(r["segmentation"]), m)
    json.dumps(results)
    with pytest.raises(ValueError, match="out of range"):
        detections_to_coco(det, 1, category_ids=[3])
    assert detections_to_coco(Detections.empty(60, 80), 1, [1]) == []


def test_coco_results_score_perfect_ap_against_their_own_masks():
    masks = two_instances()
    det = make_detections(masks, [1, 0], [0.9, 0.7])
    category_ids = [3, 17]
    gt = {"images": [{"id": 42, "height": 60, "width": 80, "file_name": "x.jpg"}],
          "categories": [{"id": 3, "name": "cat"}, {"id": 17, "name": "dog"}],
          "annotations": []}
    for i, (m, label) in enumerate(zip(masks, [1, 0])):
        rle = masks_to_rle(m[None])[0]
        gt["annotations"].append({"id": i + 1, "image_id": 42, "category_id": category_ids[label],
                                  "segmentation": rle, "area": float(m.sum()), "iscrowd": 0,
                                  "bbox": [float(v) for v in det.boxes[i].tolist()]})
    results = detections_to_coco(det, 42, category_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


@pytest.mark.parametrize("masks_as", ["polygons", "rle", "none"])
def test_frame_record_json_line(tmp_path, masks_as):
    masks = two_instances()
    det = make_detections(masks, [1, 0], [0.9, 0.7])
    record = frame_record(det, frame_index=12, timestamp_s=0.48, masks=masks_as, tolerance_px=0,
                          category_ids=[3, 17])
    path = tmp_path / "frames.jsonl"
    with open(path, "w") as f:
        write_json_line(f, record)
        write_json_line(f, frame_record(Detections.empty(60, 80), 13, None))
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert (first["frame"], first["time_s"], first["height"], first["width"]) == (12, 0.48, 60, 80)
    assert second == {"frame": 13, "time_s": None, "height": 60, "width": 80, "instances": []}
    a, b = first["instances"]
    assert (a["label"], a["class_name"], a["category_id"]) == (1, "dog", 17)
    assert (b["label"], b["class_name"], b["category_id"]) == (0, "cat", 3)
    assert a["box"] == [5.0, 10.0, 40.0, 30.0]
    for inst, m in zip(first["instances"], masks):
        if masks_as == "polygons":
            assert np.array_equal(polygons_to_mask(inst["polygons"], 60, 80), m)
            assert len(inst["polygons"]) == 1
        elif masks_as == "rle":
            assert np.array_equal(rle_to_mask(inst["rle"]), m)
        else:
            assert "polygons" not in inst and "rle" not in inst
    if masks_as == "polygons":
        assert len(a["polygons"][0]["holes"]) == 1


def test_frame_record_rejects_unknown_mask_format_and_nan():
    det = make_detections(two_instances(), [1, 0], [0.9, float("nan")])
    with pytest.raises(ValueError, match="masks must be"):
        frame_record(det, 0, 0.0, masks="png")
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_json_line(io.StringIO(), frame_record(det, 0, 0.0, masks="none"))


def test_detections_methods_are_the_results_functions():
    masks = torch.zeros(2, 40, 50, dtype=torch.bool)
    masks[0, 5:30, 5:30] = True
    masks[0, 10:20, 10:20] = False  # a hole
    masks[1, 30:38, 35:48] = True
    det = Detections(boxes=torch.tensor([[5.0, 5, 30, 30], [35, 30, 48, 38]]), scores=torch.tensor([0.9, 0.8]),
                     classes=torch.tensor([0, 1]), masks=masks, mask_scores=torch.tensor([0.7, 0.6]))
    parts = det.to_polygons(tolerance_px=0.0)
    assert len(parts) == 2 and len(parts[0]) == 1 and len(parts[0][0]["holes"]) == 1
    assert det.to_rle() == masks_to_rle(masks)
    assert det.to_coco(7, [3, 9]) == detections_to_coco(det, 7, [3, 9])


def test_coco_results_as_polygons_fill_holes_and_load_in_pycocotools():
    masks = two_instances()
    det = make_detections(masks, [1, 0], [0.9, 0.7])
    results = detections_to_coco(det, 42, [3, 17], masks="polygons", tolerance_px=0)
    filled = masks.copy()
    filled[0, 15:20, 10:15] = True  # COCO polygons hold no holes
    gt = {"images": [{"id": 42, "height": 60, "width": 80, "file_name": "x.jpg"}],
          "categories": [{"id": 3, "name": "cat"}, {"id": 17, "name": "dog"}], "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(json.loads(json.dumps(results)))
    for result, expected in zip(results, filled):
        assert isinstance(result["segmentation"], list) and all(len(p) >= 6 for p in result["segmentation"])
        ann = coco_dt.anns[next(a for a in coco_dt.anns if coco_dt.anns[a]["score"] == result["score"])]
        assert np.array_equal(coco_dt.annToMask(ann).astype(bool), expected)  # tolerance 0: pixel-exact
    boxes_only = detections_to_coco(det, 42, [3, 17], masks="none")
    assert all("segmentation" not in r for r in boxes_only)
    assert [r["bbox"] for r in boxes_only] == [r["bbox"] for r in results]
    with pytest.raises(ValueError, match="masks must be one of"):
        detections_to_coco(det, 42, [3, 17], masks="png")


def test_coco_results_refuse_ids_that_are_not_integers():
    from yolact_lite.formats import detections_to_coco
    from yolact_lite.structures import Detections

    det = Detections(torch.tensor([[1.0, 1.0, 5.0, 5.0]]), torch.tensor([0.9]), torch.tensor([0]),
                     torch.ones(1, 8, 8, dtype=torch.bool))
    assert detections_to_coco(det, np.int64(4), (7,))[0]["category_id"] == 7
    for image_id, ids, words in ((1.9, [1], "image_id must be an integer"), ("abc", [1], "image_id must be"),
                                 (1, "1", "category_ids must be a list of integer"),
                                 (1, [1.7], "category_ids must be a list of integer"),
                                 (1, ["a"], "category_ids must be a list of integer")):
        with pytest.raises(ValueError, match=words):
            detections_to_coco(det, image_id, ids)
