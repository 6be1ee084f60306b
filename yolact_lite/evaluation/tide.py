"""TIDE: where the AP goes (Bolya et al., "TIDE: A General Toolbox for Identifying Object
Detection Errors", ECCV 2020), from the paper's definitions.

The base is COCO AP at IoU ``t_f`` = 0.5 with pycocotools' matching (per image and category,
detections by falling score, each takes the unmatched ground truth of highest IoU >= t_f,
crowds only when no other is left and then ignored; at most 100 detections per image and
category; 101-point interpolated precision, the mean over categories with ground truth).
Every unmatched detection is ONE error, the first that applies (IoU with non-crowd ground
truths; "same" = of the detection's category):

* ``cls``  -- IoU >= t_f with a ground truth of another category;
* ``loc``  -- t_b <= best same IoU < t_f (t_b = 0.1);
* ``both`` -- t_b <= best IoU < t_f with a ground truth of another category only;
* ``dupe`` -- IoU >= t_f with a same ground truth that a higher-scoring detection matched;
* ``bkg``  -- IoU < t_b with every ground truth;

and ``miss`` counts the unmatched ground truths that no cls / loc error points at.

dAP of a type = AP with only that type fixed by an oracle - AP (each in isolation, not
progressively): cls takes the ground truth's category, loc takes the ground truth's box (or
mask); either is removed if its ground truth is then already matched; both, dupe and bkg
errors are removed; missed ground truths stop counting.  ``fp``: every unmatched detection
removed; ``fn``: every unmatched ground truth removed.  All values are AP points (0-100).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, Dict, List, Sequence

import numpy as np
from pycocotools import mask as mask_utils

ERROR_TYPES = ("cls", "loc", "both", "dupe", "bkg", "miss")
FOREGROUND_IOU = 0.5
BACKGROUND_IOU = 0.1
MAX_DETS = 100
RECALL_POINTS = np.linspace(0.0, 1.0, 101)

__all__ = ["ERROR_TYPES", "tide", "tide_from_coco", "format_tide_table", "plot_tide"]


class _Image:
    """One image's ground truths and detections with their IoUs.

    ``gt_cat`` [G] int, ``gt_crowd`` [G] bool, ``det_cat`` [D] int, ``det_score`` [D] float,
    ``iou`` [D, G] (crowd columns: intersection / detection area, as pycocotools),
    ``gt_iou`` [G, G] (the row a detection gets when it takes a ground truth's geometry)."""

    def __init__(self, gt_cat, gt_crowd, det_cat, det_score, iou, gt_iou):
        self.gt_cat, self.gt_crowd = np.asarray(gt_cat, dtype=np.int64), np.asarray(gt_crowd, dtype=bool)
        self.det_cat, self.det_score = np.asarray(det_cat, dtype=np.int64), np.asarray(det_score, dtype=np.float64)
        self.iou = np.asarray(iou, dtype=np.float64).reshape(len(self.det_cat), len(self.gt_cat))
        self.gt_iou = np.asarray(gt_iou, dtype=np.float64).reshape(len(self.gt_cat), len(self.gt_cat))


def _match(img: _Image, det_cat: np.ndarray, iou: np.ndarray, keep_det: np.ndarray,
           keep_gt: np.ndarray, threshold: float) -> tuple:
    """pycocotools' greedy matching, per category, of the kept detections (falling score,
    stable) to the kept ground truths.  Returns (det_gt [D] matched gt or -1, det_ignored [D]
    matched a crowd, det_used [D] among the first MAX_DETS of its category)."""
    n_det = len(det_cat)
    det_gt = np.full(n_det, -1, dtype=np.int64)
    det_ignored = np.zeros(n_det, dtype=bool)
    det_used = np.zeros(n_det, dtype=bool)
    for cat in np.unique(det_cat[keep_det]):
        dets = np.flatnonzero(keep_det & (det_cat == cat))
        dets = dets[np.argsort(-img.det_score[dets], kind="mergesort")][:MAX_DETS]
        det_used[dets] = True
        gts = np.flatnonzero(keep_gt & (img.gt_cat == cat))
        gts = gts[np.argsort(img.gt_crowd[gts], kind="mergesort")]  # crowds last
        taken = np.zeros(len(img.gt_cat), dtype=bool)
        for d in dets:
            best, m = min(threshold, 1 - 1e-10), -1
            for g in gts:
                if taken[g] and not img.gt_crowd[g]:
                    continue
                if m > -1 and not img.gt_crowd[m] and img.gt_crowd[g]:
                    break
                if iou[d, g] < best:
                    continue
                best, m = iou[d, g], g
            if m > -1:
                det_gt[d] = m
                det_ignored[d] = bool(img.gt_crowd[m])
                taken[m] = True
    return det_gt, det_ignored, det_used


def _average_precision(images: Sequence[_Image], outcomes: Sequence[tuple], categories: Sequence[int]) -> float:
    """COCO-style AP (percent) over ``categories`` from per-image outcomes
    ``(det_cat, det_gt, det_ignored, det_used, keep_det, keep_gt)``."""
    aps = []
    for cat in categories:
        scores, hits, n_gt = [], [], 0
        for img, (det_cat, det_gt, det_ignored, det_used, keep_det, keep_gt) in zip(images, outcomes):
            n_gt += int(np.sum(keep_gt & ~img.gt_crowd & (img.gt_cat == cat)))
            dets = np.flatnonzero(keep_det & det_used & ~det_ignored & (det_cat == cat))
            dets = dets[np.argsort(-img.det_score[dets], kind="mergesort")]
            scores.append(img.det_score[dets])
            hits.append(det_gt[dets] >= 0)
        if n_gt == 0:
            continue
        score, hit = np.concatenate(scores), np.concatenate(hits)
        order = np.argsort(-score, kind="mergesort")
        tp = np.cumsum(hit[order]).astype(np.float64)
        fp = np.cumsum(~hit[order]).astype(np.float64)
        recall = tp / n_gt
        precision = tp / np.maximum(tp + fp, np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
        at = np.searchsorted(recall, RECALL_POINTS, side="left")
        q = np.zeros(RECALL_POINTS.size)
        reached = at < precision.size
        q[reached] = precision[at[reached]]
        aps.append(float(np.mean(q)))
    return 100.0 * float(np.mean(aps)) if aps else float("nan")


def tide(images: Sequence[_Image], categories: Sequence[int], foreground_iou: float = FOREGROUND_IOU,
         background_iou: float = BACKGROUND_IOU) -> Dict[str, Any]:
    """The breakdown for prepared images (see the module docstring): ``{"ap", "dap": {type:
    points}, "dap_fp", "dap_fn", "counts": {type: n, "tp", "gt", "detections"}}``."""
    base, errors, targets = [], [], []
    counts = {t: 0 for t in ERROR_TYPES}
    counts.update(tp=0, gt=0, detections=0)
    for img in images:
        keep_det, keep_gt = np.ones(len(img.det_cat), bool), np.ones(len(img.gt_cat), bool)
        det_gt, det_ignored, det_used = _match(img, img.det_cat, img.iou, keep_det, keep_gt, foreground_iou)
        base.append((img.det_cat, det_gt, det_ignored, det_used, keep_det, keep_gt))
        kind = np.full(len(img.det_cat), "", dtype=object)
        target = np.full(len(img.det_cat), -1, dtype=np.int64)
        real = ~img.gt_crowd
        for d in np.flatnonzero(det_used & (det_gt < 0)):
            same = real & (img.gt_cat == img.det_cat[d])
            other = real & ~same
            iou_same = np.where(same, img.iou[d], -1.0)
            iou_other = np.where(other, img.iou[d], -1.0)
            best_same, best_other = iou_same.max(initial=-1.0), iou_other.max(initial=-1.0)
            if best_other >= foreground_iou:
                kind[d], target[d] = "cls", int(iou_other.argmax())
            elif background_iou <= best_same < foreground_iou:
                kind[d], target[d] = "loc", int(iou_same.argmax())
            elif background_iou <= best_other < foreground_iou:
                kind[d] = "both"
            elif best_same >= foreground_iou:
                kind[d] = "dupe"
            else:
                kind[d] = "bkg"
        matched = np.zeros(len(img.gt_cat), dtype=bool)
        matched[det_gt[det_gt >= 0]] = True
        covered = np.zeros(len(img.gt_cat), dtype=bool)
        covered[target[target >= 0]] = True
        missed = real & ~matched & ~covered
        errors.append((kind, missed, real & ~matched))
        targets.append(target)
        for t in ERROR_TYPES[:-1]:
            counts[t] += int(np.sum(kind == t))
        counts["miss"] += int(missed.sum())
        counts["tp"] += int(np.sum((det_gt >= 0) & ~det_ignored))
        counts["gt"] += int(real.sum())
        counts["detections"] += int(det_used.sum())

    ap = _average_precision(images, base, categories)

    def fixed(error: str) -> float:
        outcomes = []
        for img, (kind, missed, unmatched), target in zip(images, errors, targets):
            det_cat, iou = img.det_cat.copy(), img.iou.copy()
            keep_det, keep_gt = np.ones(len(det_cat), bool), np.ones(len(img.gt_cat), bool)
            hit = kind == error
            if error == "cls":
                det_cat[hit] = img.gt_cat[target[hit]]
            elif error == "loc":
                iou[hit] = img.gt_iou[target[hit]]
            elif error in ("both", "dupe", "bkg"):
                keep_det &= ~hit
            elif error == "miss":
                keep_gt &= ~missed
            elif error == "fp":
                keep_det &= kind == ""
            elif error == "fn":
                keep_gt &= ~unmatched
            det_gt, det_ignored, det_used = _match(img, det_cat, iou, keep_det, keep_gt, foreground_iou)
            if error in ("cls", "loc"):  # an oracle-fixed detection that matches nothing is removed
                keep_det &= ~(hit & (det_gt < 0))
            outcomes.append((det_cat, det_gt, det_ignored, det_used, keep_det, keep_gt))
        gained = _average_precision(images, outcomes, categories) - ap
        return None if np.isnan(gained) else gained  # nothing left to score (e.g. every gt was missed)

    if np.isnan(ap):  # no ground truth at all: nothing to break down (None in json)
        return {"ap": None, "dap": {t: None for t in ERROR_TYPES}, "dap_fp": None, "dap_fn": None,
                "counts": counts, "thresholds": {"foreground_iou": foreground_iou, "background_iou": background_iou}}
    return {"ap": ap, "dap": {t: fixed(t) for t in ERROR_TYPES}, "dap_fp": fixed("fp"),
            "dap_fn": fixed("fn"), "counts": counts,
            "thresholds": {"foreground_iou": foreground_iou, "background_iou": background_iou}}


def tide_from_coco(coco_gt: Any, results: Sequence[dict], iou_type: str, image_ids: Sequence[int],
                   foreground_iou: float = FOREGROUND_IOU, background_iou: float = BACKGROUND_IOU) -> Dict[str, Any]:
    """:func:`tide` for a pycocotools ``COCO`` and COCO result dicts (``bbox`` for
    ``iou_type="bbox"``, RLE ``segmentation`` for ``"segm"``) on ``image_ids``."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be bbox or segm; got {iou_type!r}")
    by_image: Dict[int, List[dict]] = {}
    for r in results:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    images = []
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 vs pycocotools
        for image_id in sorted(set(int(i) for i in image_ids)):
            gts = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id]))
            dets = by_image.get(image_id, [])
            crowd = [bool(g.get("iscrowd", 0) or g.get("ignore", 0)) for g in gts]
            if iou_type == "bbox":
                gt_geo, det_geo = [g["bbox"] for g in gts], [d["bbox"] for d in dets]
            else:
                gt_geo, det_geo = [coco_gt.annToRLE(g) for g in gts], [d["segmentation"] for d in dets]
            iou = mask_utils.iou(det_geo, gt_geo, crowd) if dets and gts else np.zeros((len(dets), len(gts)))
            gt_iou = mask_utils.iou(gt_geo, gt_geo, crowd) if gts else np.zeros((0, 0))
            images.append(_Image([g["category_id"] for g in gts], crowd, [d["category_id"] for d in dets],
                                 [d["score"] for d in dets], iou, gt_iou))
    return tide(images, sorted(coco_gt.getCatIds()), foreground_iou, background_iou)


def format_tide_table(breakdown: Dict[str, Dict[str, Any]]) -> str:
    """A text table: one row per kind (box, mask), AP50 and every dAP."""
    columns = ["AP50", *ERROR_TYPES, "FP", "FN"]
    lines = ["TIDE dAP (AP50 points gained by fixing each error type alone)",
             f"{'':6}" + "".join(f"{c:>8}" for c in columns)]
    for kind in ("box", "mask"):
        if kind not in breakdown:
            continue
        b = breakdown[kind]
        values = [b["ap"], *(b["dap"][t] for t in ERROR_TYPES), b["dap_fp"], b["dap_fn"]]
        lines.append(f"{kind:6}" + "".join(f"{v:8.2f}" if v is not None else f"{'-':>8}" for v in values))
    return "\n".join(lines)


def plot_tide(breakdown: Dict[str, Dict[str, Any]], path: Any, title: str = "TIDE") -> None:
    """A bar chart PNG of the dAP of each error type (and FP / FN), box and mask side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [*ERROR_TYPES, "FP", "FN"]
    kinds = [k for k in ("box", "mask") if k in breakdown]
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    width = 0.8 / max(1, len(kinds))
    x = np.arange(len(labels))
    for i, kind in enumerate(kinds):
        b = breakdown[kind]
        if b["ap"] is None:
            continue
        values = [v if v is not None else 0.0 for v in (*(b["dap"][t] for t in ERROR_TYPES), b["dap_fp"], b["dap_fn"])]
        ax.bar(x + (i - (len(kinds) - 1) / 2) * width, values, width, label=f"{kind} (AP50 {b['ap']:.1f})")
    ax.set_xticks(x, labels)
    ax.set_ylabel("dAP (AP50 points)")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
