"""COCO evaluation: detections -> COCO results, pycocotools mAP, mask leakage, timing.

The numbers reported here are pycocotools' ``COCOeval`` numbers (the original's
``--output_coco_json`` + ``run_coco_eval.py`` path), not the original ``eval.py``'s own
``APDataObject`` mAP.  The two differ on purpose in a few places (see
docs/original_yolact.md, section 3): COCOeval averages over classes that have ground truth
in the evaluated images only, matches with ``IoU >= t`` (the original uses ``> t``),
reports the COCO area bins (AP_S/M/L), and handles crowds with its own ignore rule.

Conventions
-----------
* Result files use the annotation json's own category ids: ``category_ids[label]``
  (labels are the contiguous ``0..C-1`` of :class:`yolact_lite.data.coco.CocoDataset`,
  i.e. the sorted category ids), so the round trip is exact for any id set.
* Box results carry the box score; mask results carry ``Detections.mask_scores``
  (YOLACT++: box score x predicted mask IoU, otherwise equal to the box score).
  The two lists are produced separately (``kind="bbox"`` / ``kind="segm"``) because
  COCOeval must not see a ``bbox`` key in segm results (it would take the box area).
* Boxes are ``[x, y, w, h]`` floats rounded to 0.01 px (the original rounds to 0.1 px,
  which can push tiny perfect boxes below IoU 0.95).
* All AP values are percentages (0-100).  An entry that COCOeval leaves undefined (no
  ground truth in that area bin / class among the evaluated images) is ``None``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import statistics
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..box_ops import coco_size_bin
from ..errors import DataError
from ..formats import detections_to_coco as to_coco_results
from ..io_utils import write_json_atomic
from ..structures import Detections
from .tide import tide_from_coco

METRIC_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
TABLE_HEADERS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")
SIZE_BINS = ("small", "medium", "large")
# COCO area-range limits (pixels): small < 32^2 <= medium < 96^2 <= large


# --------------------------------------------------------------------------- conversion

def detections_to_coco(image_id: int, detections: Detections, category_ids: Sequence[int],
                       kind: str = "bbox") -> List[dict]:
    """COCOeval's result dicts for one image, from :func:`yolact_lite.formats.detections_to_coco`.

    ``kind="bbox"``: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` with
    the box score.  ``kind="segm"``: ``{"image_id", "category_id", "segmentation": RLE,
    "score"}`` with the mask score.  ``category_ids[label]`` maps the contiguous labels back
    to the annotation file's category ids.
    """
    if kind not in ("bbox", "segm"):
        raise ValueError(f"kind must be 'bbox' or 'segm', got {kind!r}")
    results = to_coco_results(detections, image_id, category_ids)
    if kind == "bbox":
        return [{k: r[k] for k in ("image_id", "category_id", "bbox", "score")} for r in results]
    return [{"image_id": r["image_id"], "category_id": r["category_id"], "segmentation": r["segmentation"],
             "score": r["mask_score"]} for r in results]


# --------------------------------------------------------------------------- COCOeval

def load_coco_gt(annotation_json: Any) -> COCO:
    """A pycocotools ``COCO`` for a json path (or an already-loaded dict), silently, without
    the annotations COCOeval cannot score (:func:`ground_truth` counts them)."""
    return ground_truth(annotation_json)[0]


def ground_truth(annotation_json: Any) -> Tuple[COCO, Counter]:
    """``(COCO, left out)``: the ground truth of a json path or dict as a silent pycocotools
    ``COCO``, with the annotations COCOeval cannot score left out and counted by reason
    (:func:`yolact_lite.data.coco.scorable_ground_truth`); a ``COCO`` is used as it is."""
    if isinstance(annotation_json, COCO):
        return annotation_json, Counter()
    from ..data.coco import load_coco_json, scorable_ground_truth, validate_coco_dict

    if isinstance(annotation_json, dict):
        validate_coco_dict(annotation_json)
        data = annotation_json
    else:
        data = load_coco_json(annotation_json)  # validates, one-line DataError
    data, dropped = scorable_ground_truth(data)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    return coco, dropped


def _results_coco(coco_gt: COCO, results: Sequence[dict], iou_type: str) -> COCO:
    """Like ``COCO.loadRes`` but silent, non-mutating and fine with an empty list."""
    known = set(coco_gt.getImgIds())
    anns = []
    for i, r in enumerate(results):
        if r["image_id"] not in known:
            raise DataError(f"result for image id {r['image_id']} which is not in the annotations")
        a = copy.deepcopy(r)
        a["id"] = i + 1
        a["iscrowd"] = 0
        if iou_type == "bbox":
            x, y, w, h = a["bbox"]
            a["area"] = float(w) * float(h)
            a["segmentation"] = [[x, y, x, y + h, x + w, y + h, x + w, y]]
        else:
            a.pop("bbox", None)
            a["area"] = float(mask_utils.area(a["segmentation"]))
            a["bbox"] = mask_utils.toBbox(a["segmentation"]).tolist()
        anns.append(a)
    res = COCO()
    res.dataset = {"images": list(coco_gt.dataset["images"]),
                   "categories": copy.deepcopy(coco_gt.dataset["categories"]),
                   "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        res.createIndex()
    return res


def _percent(v: float) -> Optional[float]:
    v = float(v)
    return None if v < 0 else 100.0 * v


def _run_cocoeval(coco_gt: COCO, results: Sequence[dict], iou_type: str,
                  image_ids: Sequence[int], verbose: bool) -> COCOeval:
    coco_dt = _results_coco(coco_gt, results, iou_type)
    ev = COCOeval(coco_gt, coco_dt, iou_type)
    ev.params.imgIds = sorted(int(i) for i in image_ids)
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 vs pycocotools
        ev.evaluate()
        ev.accumulate()
        if verbose:
            print(f"--- {iou_type} ---")
        ev.summarize()
    return ev


def _per_class_ap(ev: COCOeval, coco_gt: COCO) -> Dict[str, Optional[float]]:
    """AP@[.5:.95] per category (area "all", maxDets 100), keyed by category name."""
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    out: Dict[str, Optional[float]] = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[coco_gt.cats[cat_id]["name"]] = float(100.0 * p.mean()) if p.size else None
    return out


def coco_evaluate(coco_gt: Any, box_results: Sequence[dict], mask_results: Sequence[dict],
                  per_class: bool = False, image_ids: Optional[Iterable[int]] = None,
                  verbose: bool = False) -> Dict[str, Any]:
    """COCOeval for ``bbox`` and ``segm`` -> ``{"box": {AP, AP50, AP75, AP_small,
    AP_medium, AP_large}, "mask": {...}}`` in percent.

    ``image_ids`` restricts the evaluation (default: every image of ``coco_gt``); pass the
    ids you actually predicted on when evaluating a subset.  With ``per_class=True`` the
    result also has ``"per_class": {name: {"box": AP, "mask": AP}}`` (``None`` for a
    class without ground truth in the evaluated images).  ``coco_gt`` may be a ``COCO``,
    a json path or a loaded dict.  COCOeval's prints are shown only when ``verbose``.
    """
    coco_gt = load_coco_gt(coco_gt)
    ids = sorted(set(int(i) for i in (image_ids if image_ids is not None else coco_gt.getImgIds())))
    out: Dict[str, Any] = {}
    evals = {}
    for key, iou_type, results in (("box", "bbox", box_results), ("mask", "segm", mask_results)):
        ev = _run_cocoeval(coco_gt, results, iou_type, ids, verbose)
        evals[key] = ev
        out[key] = {name: _percent(ev.stats[i]) for i, name in enumerate(METRIC_KEYS)}
    if per_class:
        box_ap = _per_class_ap(evals["box"], coco_gt)
        mask_ap = _per_class_ap(evals["mask"], coco_gt)
        out["per_class"] = {name: {"box": box_ap[name], "mask": mask_ap[name]} for name in box_ap}
    return out


# --------------------------------------------------------------------------- leakage

def _box_pixel_range(start: float, length: float, limit: int) -> tuple:
    """Pixel indices whose centre (i + 0.5) lies in [start, start + length], clipped."""
    lo = int(math.ceil(start - 0.5))
    hi = int(math.floor(start + length - 0.5)) + 1
    return max(lo, 0), min(max(hi, 0), limit)


def mask_leakage(coco_gt: Any, mask_results: Sequence[dict], image_ids: Optional[Iterable[int]] = None,
                 iou_threshold: float = 0.5, min_score: float = 0.0) -> Dict[str, Dict[str, Any]]:
    """How much of each well-localised predicted mask spills outside its object's box.

    For every mask result (score >= ``min_score``) the same-class, non-crowd ground-truth
    instance of the same image with the highest MASK IoU is found; only detections with
    that IoU >= ``iou_threshold`` count (no one-to-one matching: duplicates of one object
    all count).  Leakage of a detection = (predicted-mask pixels whose centre lies outside
    the gt's ``bbox``) / (predicted-mask pixels).  Detections are binned by the matched
    gt's COCO ``area`` (small < 32^2 <= medium < 96^2 <= large).

    Returns ``{"small"|"medium"|"large"|"all": {"leakage": mean share in [0, 1] or None,
    "count": number of matched detections}}``.
    """
    coco_gt = load_coco_gt(coco_gt)
    ids = set(int(i) for i in (image_ids if image_ids is not None else coco_gt.getImgIds()))
    by_key: Dict[tuple, List[dict]] = {}
    for r in mask_results:
        if int(r["image_id"]) in ids and float(r["score"]) >= min_score:
            by_key.setdefault((int(r["image_id"]), int(r["category_id"])), []).append(r)

    shares: Dict[str, List[float]] = {b: [] for b in SIZE_BINS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for (image_id, cat_id), dets in sorted(by_key.items()):
            gts = [a for a in coco_gt.imgToAnns.get(image_id, [])
                   if a["category_id"] == cat_id and not a.get("iscrowd", 0)]
            if not gts:
                continue
            gt_rles = [coco_gt.annToRLE(a) for a in gts]
            dt_rles = [d["segmentation"] for d in dets]
            ious = np.asarray(mask_utils.iou(dt_rles, gt_rles, [0] * len(gt_rles)))
            ious = ious.reshape(len(dt_rles), len(gt_rles))
            for i, rle in enumerate(dt_rles):
                j = int(np.argmax(ious[i]))
                if ious[i, j] < iou_threshold:
                    continue
                mask = mask_utils.decode(rle)
                total = int(mask.sum())
                if total == 0:
                    continue
                h, w = mask.shape
                x, y, bw, bh = (float(v) for v in gts[j]["bbox"])
                x1, x2 = _box_pixel_range(x, bw, w)
                y1, y2 = _box_pixel_range(y, bh, h)
                inside = int(mask[y1:y2, x1:x2].sum()) if x2 > x1 and y2 > y1 else 0
                shares[coco_size_bin(float(gts[j]["area"]))].append((total - inside) / total)

    def summary(values: List[float]) -> Dict[str, Any]:
        return {"leakage": float(np.mean(values)) if values else None, "count": len(values)}

    out = {b: summary(shares[b]) for b in SIZE_BINS}
    out["all"] = summary([v for b in SIZE_BINS for v in shares[b]])
    return out


# --------------------------------------------------------------------------- timing

def _median(values: Sequence[float]) -> Optional[float]:
    return float(statistics.median(values)) if values else None


def timing_summary(records: Sequence[Dict[str, float]], warmup: int = 2) -> Dict[str, Any]:
    """Per-stage median ms over ``records`` (dicts of stage -> ms, one per image, with a
    ``total`` key), skipping the first ``warmup`` records when more remain.
    Returns ``{"stages_ms": {stage: median}, "total_ms": median, "fps": 1000/total,
    "num_timed": n}``."""
    recs = list(records)
    if len(recs) > warmup:
        recs = recs[warmup:]
    stages: Dict[str, List[float]] = {}
    for r in recs:
        for k, v in r.items():
            if k != "total" and v is not None:
                stages.setdefault(k, []).append(float(v))
    total = _median([r["total"] for r in recs if "total" in r])
    return {
        "stages_ms": {k: _median(v) for k, v in stages.items()},
        "total_ms": total,
        "fps": (1000.0 / total) if total else None,
        "num_timed": len(recs),
    }


def _timed_predict(predictor: Any, image: np.ndarray) -> tuple:
    start = time.perf_counter()
    dets = predictor.predict(image)
    total = (time.perf_counter() - start) * 1000.0
    record = {k: float(v) for k, v in dict(getattr(predictor, "timings", None) or {}).items()
              if isinstance(v, (int, float))}
    record["total"] = total
    return dets, record


# --------------------------------------------------------------------------- driver

def _image_list(annotation_json: Any, image_dir: Any):
    """(COCO gt, category_ids, class names, [(image_id, path)] sorted by id, annotations left
    out by reason)."""
    coco_gt, dropped = ground_truth(annotation_json)
    image_dir = os.fspath(image_dir)
    if not Path(image_dir).is_dir():
        raise DataError(f"{image_dir}: image directory does not exist")
    cats = sorted(coco_gt.dataset["categories"], key=lambda c: c["id"])
    category_ids = [int(c["id"]) for c in cats]
    names = [str(c["name"]) for c in cats]
    images = sorted(coco_gt.dataset["images"], key=lambda im: int(im["id"]))
    items = [(int(im["id"]), os.path.join(image_dir, im["file_name"])) for im in images]
    return coco_gt, category_ids, names, items, dropped


def _label_mapping(predictor: Any, json_ids: Sequence[int], annotation_json: Any) -> List[int]:
    """label -> category id used to write results.

    The json's sorted ids (the :class:`CocoDataset` label order), unless the predictor
    carries its own ``category_ids`` (from its checkpoint) with the same id set, in which
    case those define the mapping.  A class-count mismatch is a :class:`DataError`; the
    same count with a different id set warns and uses the json's sorted ids.
    """
    names = getattr(predictor, "class_names", None)
    if names and len(names) != len(json_ids):
        raise DataError(f"{annotation_json}: {len(json_ids)} categories, but the model "
                        f"predicts {len(names)} classes")
    model_ids = getattr(predictor, "category_ids", None)
    if model_ids is None:
        return list(json_ids)
    model_ids = [int(c) for c in model_ids]
    if len(model_ids) != len(json_ids):
        raise DataError(f"{annotation_json}: {len(json_ids)} categories, but the model "
                        f"predicts {len(model_ids)} classes")
    if sorted(model_ids) == sorted(json_ids):
        return model_ids
    warnings.warn(f"the model's category ids differ from those of {annotation_json}; "
                  f"mapping labels to the json's category ids in sorted order", UserWarning,
                  stacklevel=3)
    return list(json_ids)


def _progress(iterable, total: int, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from ..progress import progress_bar

    return progress_bar(iterable, total=total, desc=desc, unit="img")


def evaluate(predictor: Any, annotation_json: Any, image_dir: Any, max_images: Optional[int] = None,
             per_class: bool = False, progress: bool = True, results_dir: Any = None,
             leakage: bool = True, verbose: bool = False, tide: bool = False,
             note: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> Dict[str, Any]:
    """Predict every image of a COCO json (sorted image ids; the first ``max_images``) and
    evaluate with COCOeval.

    ``predictor`` is anything with ``.predict(image_bgr) -> Detections`` (optionally
    ``.timings``: per-stage ms of the last call, ``.class_names`` and ``.category_ids``,
    see :func:`_label_mapping`).  Returns
    ``{"box": {...}, "mask": {...}, ["per_class": ...], "leakage": ..., "num_images",
    "num_detections", "timing": {"stages_ms", "total_ms", "fps", "num_timed"}}``; timing
    medians skip the first 2 images (warm-up) when there are more.  With ``results_dir``
    writes ``bbox_detections.json``, ``mask_detections.json`` and ``metrics.json`` there.
    ``tide``: also ``"tide": {"box": ..., "mask": ...}``, :func:`yolact_lite.tide.tide_from_coco`.
    Ground-truth annotations COCOeval cannot score are left out (:func:`ground_truth`), counted
    in ``"dropped_annotations"`` and named in one line to ``note``.
    """
    from ..data.image_io import read_image

    coco_gt, json_ids, _, items, dropped = _image_list(annotation_json, image_dir)
    if dropped:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(dropped.items()))
        note(f"note: {sum(dropped.values())} ground-truth annotation(s) cannot be scored and are left "
             f"out of the AP ({reasons}); `yolact-lite data check` lists them")
    category_ids = _label_mapping(predictor, json_ids, annotation_json)
    if max_images is not None:
        if int(max_images) < 1:
            raise DataError(f"max_images must be at least 1, got {max_images}")
        items = items[: int(max_images)]
    if not items:
        raise DataError(f"{annotation_json}: no images to evaluate")

    box_results: List[dict] = []
    mask_results: List[dict] = []
    records: List[Dict[str, float]] = []
    for image_id, path in _progress(items, len(items), progress, "eval"):
        image = read_image(path)
        info = coco_gt.imgs[image_id]
        if image.shape[:2] != (int(info["height"]), int(info["width"])):
            raise DataError(f"{path}: image is {image.shape[1]}x{image.shape[0]} but "
                            f"the annotations say {info['width']}x{info['height']}")
        dets, record = _timed_predict(predictor, image)
        if len(dets) and tuple(dets.masks.shape[-2:]) != tuple(image.shape[:2]):
            raise ValueError(f"predictor returned {tuple(dets.masks.shape[-2:])} masks for a "
                             f"{tuple(image.shape[:2])} image (masks must be full resolution)")
        records.append(record)
        box_results.extend(detections_to_coco(image_id, dets, category_ids, kind="bbox"))
        mask_results.extend(detections_to_coco(image_id, dets, category_ids, kind="segm"))

    image_ids = [i for i, _ in items]
    metrics = coco_evaluate(coco_gt, box_results, mask_results, per_class=per_class,
                            image_ids=image_ids, verbose=verbose)
    if leakage:
        metrics["leakage"] = mask_leakage(coco_gt, mask_results, image_ids=image_ids)
    if tide:
        metrics["tide"] = {"box": tide_from_coco(coco_gt, box_results, "bbox", image_ids),
                           "mask": tide_from_coco(coco_gt, mask_results, "segm", image_ids)}
    metrics["dropped_annotations"] = dict(dropped)
    metrics["num_images"] = len(items)
    metrics["num_detections"] = len(box_results)
    metrics["timing"] = timing_summary(records)

    if results_dir is not None:
        out = Path(results_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "bbox_detections.json", box_results)
        write_json_atomic(out / "mask_detections.json", mask_results)
        write_json_atomic(out / "metrics.json", metrics)
    return metrics


def benchmark(predictor: Any, annotation_json: Any, image_dir: Any, num_images: int,
              warmup: int = 2, progress: bool = True) -> Dict[str, Any]:
    """FPS the way the original ``--benchmark`` measures it: ``num_images`` images (sorted
    ids, cycling when the json has fewer), image reading excluded, the first ``warmup``
    images excluded from the statistics.  Returns :func:`timing_summary`'s dict plus
    ``num_images`` and ``num_detections`` (median per image)."""
    if int(num_images) <= warmup:
        raise DataError(f"--benchmark needs more than {warmup} images (the first {warmup} are "
                        f"warm-up), got {num_images}")
    _, json_ids, _, items, _ = _image_list(annotation_json, image_dir)
    _label_mapping(predictor, json_ids, annotation_json)
    if not items:
        raise DataError(f"{annotation_json}: no images to benchmark")
    from ..data.image_io import read_image

    cache: Dict[str, np.ndarray] = {}
    records, counts = [], []
    for k in _progress(range(int(num_images)), int(num_images), progress, "benchmark"):
        _, path = items[k % len(items)]
        if path not in cache:
            if len(cache) >= 64:
                cache.clear()
            cache[path] = read_image(path)
        dets, record = _timed_predict(predictor, cache[path])
        records.append(record)
        counts.append(len(dets))
    out = timing_summary(records, warmup=warmup)
    out["num_images"] = int(num_images)
    out["num_detections"] = _median(counts[warmup:])
    return out


# --------------------------------------------------------------------------- tables

def _fmt(v: Optional[float], width: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.2f}"


def format_table(metrics: Dict[str, Any]) -> str:
    """The AP table: rows ``box``/``mask``, columns AP AP50 AP75 AP_S AP_M AP_L."""
    w = 7
    lines = [f"{'':<6}" + "".join(f"{h:>{w}}" for h in TABLE_HEADERS)]
    lines.append("-" * len(lines[0]))
    for row in ("box", "mask"):
        vals = metrics.get(row, {})
        lines.append(f"{row:<6}" + "".join(_fmt(vals.get(k), w) for k in METRIC_KEYS))
    return "\n".join(lines)


def format_per_class_table(metrics: Dict[str, Any], skip_absent: bool = True) -> str:
    """Per-class AP (box and mask), one class per line.  Classes without ground truth in
    the evaluated images (AP undefined) are left out unless ``skip_absent=False``, which
    shows them with ``-``."""
    table = metrics.get("per_class") or {}
    rows = {n: v for n, v in table.items()
            if not skip_absent or v.get("box") is not None or v.get("mask") is not None}
    width = max([len("class")] + [len(n) for n in rows])
    lines = [f"{'class':<{width}} {'box AP':>8} {'mask AP':>8}", "-" * (width + 18)]
    for name, v in rows.items():
        lines.append(f"{name:<{width}} {_fmt(v.get('box'), 8)} {_fmt(v.get('mask'), 8)}")
    if len(rows) < len(table):
        lines.append(f"({len(table) - len(rows)} classes without ground truth in these images not shown)")
    return "\n".join(lines)


def format_timing_table(timing: Dict[str, Any]) -> str:
    """Per-stage median ms, the total and FPS."""
    stages = dict(timing.get("stages_ms") or {})
    width = max([len("total")] + [len(s) for s in stages])
    lines = [f"{'stage':<{width}} {'median ms':>10}", "-" * (width + 11)]
    for name, ms in stages.items():
        lines.append(f"{name:<{width}} {_fmt(ms, 10)}")
    lines.append(f"{'total':<{width}} {_fmt(timing.get('total_ms'), 10)}")
    fps = timing.get("fps")
    lines.append(f"{'FPS':<{width}} {_fmt(fps, 10)}")
    return "\n".join(lines)
