"""Dataset statistics over a COCO annotation dict (pure functions, no image is read).

Every function takes the dict as loaded by :func:`yolact_lite.data.coco.load_coco_json`
(i.e. structurally valid; call :func:`~yolact_lite.data.coco.validate_coco_dict` first on
anything else) and returns plain Python values (lists, dicts, numbers) that serialise to
JSON as they are.

* :func:`class_counts` / :func:`imbalance_summary` -- instances and images per category.
  A model trained on heavily imbalanced data tends to predict the majority class.
* :func:`class_balanced_weights` -- "effective number of samples" class weights for the
  classification loss.
* :func:`size_histogram` -- object sizes in COCO area bins and, after the resize to the
  network input, in bins bounded by the anchor scales.
* :func:`instances_per_image` -- crowding, and what ``loss.masks_to_train`` would cut.
* :func:`annotation_anomalies` -- degenerate or suspicious annotations.
* :func:`crowd_only_images`, :func:`mask_formats`, :func:`split_category_differences` --
  image-, file- and split-level findings (used with the above by
  :func:`yolact_lite.data.check.check_dataset`, which also reads the images).
* :func:`dataset_stats` -- all of the above in one JSON-ready dict.

Conventions shared by all functions:

* Categories are listed in contiguous-label order, i.e. sorted by category id (the order
  :class:`~yolact_lite.data.coco.CocoDataset` uses for labels ``0..C-1``).
* Crowd annotations (``iscrowd = 1``) are never training positives, so they are left out
  of the counts and sizes (they are reported separately where it matters) but they are
  checked by :func:`annotation_anomalies`.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils

from ..box_ops import COCO_LARGE_AREA, COCO_SMALL_AREA

__all__ = [
    "ClassCount", "Anomaly", "ANOMALY_KINDS", "COCO_SMALL_AREA", "COCO_LARGE_AREA",
    "class_counts", "imbalance_summary", "class_balanced_weights", "anchor_geometry",
    "resized_object_sizes", "size_histogram", "instances_per_image", "annotation_anomalies",
    "crowd_only_images", "mask_formats", "split_category_differences", "dataset_stats",
]

#: Problems reported by :func:`annotation_anomalies`, in report order.
ANOMALY_KINDS = (
    "non_finite_coordinates",  # NaN/inf in the bbox or a polygon
    "nonpositive_box",         # bbox width or height <= 0
    "box_outside_image",       # bbox reaches beyond the image by more than the tolerance
    "degenerate_polygon",      # a polygon part with < 3 points (< 6 coords) or an odd count
    "empty_rle",               # an RLE mask without any foreground pixel
    "rle_size_mismatch",       # an RLE whose size is not the image's [height, width]
    "empty_mask",              # valid-looking polygons that rasterise to no pixel (check_masks)
    "box_mask_mismatch",       # IoU(bbox, tight bbox of the mask) < threshold (check_masks)
    "duplicate",               # same image and category as an earlier one, bbox IoU > 0.95
)


class ClassCount(NamedTuple):
    category_id: int
    name: str
    instances: int  # non-crowd annotations of this category
    images: int     # images with at least one non-crowd annotation of this category


class Anomaly(NamedTuple):
    annotation_id: int
    image_id: int
    problem: str  # one of ANOMALY_KINDS


def _crowd(ann: dict) -> bool:
    return bool(ann.get("iscrowd", 0))


def _finite(values: Iterable[Any]) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


# --------------------------------------------------------------------------- classes


def class_counts(coco: dict) -> List[ClassCount]:
    """``(category id, name, instances, images)`` per category, sorted by category id.

    ``instances`` counts non-crowd annotations; ``images`` the images holding at least one
    of them.  Categories without any annotation are listed with zeros.
    """
    instances: Dict[int, int] = defaultdict(int)
    images: Dict[int, set] = defaultdict(set)
    for ann in coco["annotations"]:
        if _crowd(ann):
            continue
        cid = int(ann["category_id"])
        instances[cid] += 1
        images[cid].add(int(ann["image_id"]))
    cats = sorted(coco["categories"], key=lambda c: int(c["id"]))
    return [ClassCount(int(c["id"]), str(c["name"]), instances[int(c["id"])],
                       len(images[int(c["id"])])) for c in cats]


def _instance_numbers(counts: Sequence[Union[ClassCount, int, Sequence]]) -> List[int]:
    out = []
    for c in counts:
        if isinstance(c, ClassCount):
            out.append(int(c.instances))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            out.append(int(c))
        elif isinstance(c, (tuple, list)) and len(c) >= 3:
            out.append(int(c[2]))
        else:
            raise ValueError(f"expected ClassCount tuples or instance counts, got {c!r}")
        if out[-1] < 0:
            raise ValueError(f"instance counts must be >= 0, got {out[-1]}")
    return out


def imbalance_summary(counts: Sequence[ClassCount]) -> Dict[str, Any]:
    """How skewed the class distribution is.

    ``max_min_ratio`` is taken over the classes that have at least one instance (``None``
    when there are none); classes with no instance are counted in ``empty_classes``.
    ``top_share`` is the largest class's share of all instances; ``top5_share`` likewise
    for the five largest.  ``effective_classes`` = exp(entropy of the class distribution):
    C for a perfectly balanced set, 1 when one class holds everything.
    """
    n = np.asarray(_instance_numbers(counts), dtype=np.float64)
    total = float(n.sum())
    present = n[n > 0]
    out: Dict[str, Any] = {
        "num_classes": int(n.size),
        "total_instances": int(total),
        "empty_classes": int((n == 0).sum()),
        "max_instances": int(n.max()) if n.size else 0,
        "min_instances_nonzero": int(present.min()) if present.size else 0,
        "max_min_ratio": float(present.max() / present.min()) if present.size else None,
        "top_share": float(n.max() / total) if total else 0.0,
        "top5_share": float(np.sort(n)[::-1][:5].sum() / total) if total else 0.0,
        "effective_classes": 0.0,
        "top_class": None,
    }
    if total:
        p = present / total
        out["effective_classes"] = float(np.exp(-(p * np.log(p)).sum()))
        top = int(np.argmax(n))
        c = counts[top]
        out["top_class"] = c.name if isinstance(c, ClassCount) else top
    return out


def class_balanced_weights(counts: Sequence[Union[ClassCount, int]], beta: float = 0.999) -> List[float]:
    """Per-class loss weights from the "effective number of samples" (Cui et al., 2019).

    ``w_c ∝ (1 - beta) / (1 - beta ** n_c)`` where ``n_c`` is the class's instance count,
    then scaled so that the classes WITH instances average exactly 1.  ``beta = 0`` gives
    all ones; ``beta -> 1`` tends to inverse frequency (``beta = 1`` is accepted and means
    exactly ``1 / n_c``).

    Convention: ``counts`` is :func:`class_counts`' output (or plain instance counts) in
    contiguous label order (= sorted category id), and the result is one weight per
    FOREGROUND class in that order.  The caller prepends the background weight, 1.0, to get
    the ``C + 1`` weights of the classification loss (index 0 = background).

    A class with 0 instances gets weight 0.0: it is never a target, so its weight has no
    effect on the loss, and it does not distort the normalisation of the others.
    """
    beta = float(beta)
    if not (0.0 <= beta <= 1.0) or not math.isfinite(beta):
        raise ValueError(f"beta must be in [0, 1]; got {beta}")
    n = _instance_numbers(counts)
    raw = []
    for nc in n:
        if nc == 0:
            raw.append(0.0)
        elif beta == 1.0:
            raw.append(1.0 / nc)
        elif beta == 0.0:
            raw.append(1.0)
        else:
            # (1 - beta^n) computed as -expm1(n log beta): exact even when beta^n ~ 1
            raw.append((1.0 - beta) / -math.expm1(nc * math.log(beta)))
    present = [w for w, nc in zip(raw, n) if nc > 0]
    if not present:
        return [0.0 for _ in n]
    mean = sum(present) / len(present)
    return [w / mean for w in raw]


# --------------------------------------------------------------------------- sizes


def anchor_geometry(config) -> Dict[str, Any]:
    """The keyword arguments of :func:`size_histogram` taken from a :class:`Config`."""
    m = config.model
    return {"input_size": int(m.input_size),
            "anchor_scales": [[float(s) for s in level] for level in m.anchors.scales],
            "preserve_aspect_ratio": bool(m.preserve_aspect_ratio)}


def resized_object_sizes(coco: dict, input_size: int, preserve_aspect_ratio: bool = False) -> np.ndarray:
    """``sqrt(w * h)`` of every non-crowd annotation's bbox (clipped to its image) after
    the image is resized to the network input: a per-axis stretch to ``input_size`` squared
    (the original), or one scale ``input_size / max(H, W)`` (letterbox).  Boxes that are
    non-finite or have no area inside the image are left out."""
    sizes = {int(img["id"]): (int(img["height"]), int(img["width"])) for img in coco["images"]}
    out = []
    for ann in coco["annotations"]:
        if _crowd(ann) or not _finite(ann["bbox"]):
            continue
        h, w = sizes[int(ann["image_id"])]
        x, y, bw, bh = (float(v) for v in ann["bbox"])
        bw = min(max(x + bw, 0.0), w) - min(max(x, 0.0), w)
        bh = min(max(y + bh, 0.0), h) - min(max(y, 0.0), h)
        if bw <= 0 or bh <= 0:
            continue
        if preserve_aspect_ratio:
            sx = sy = input_size / max(h, w)
        else:
            sx, sy = input_size / w, input_size / h
        out.append(math.sqrt(bw * sx * bh * sy))
    return np.asarray(out, dtype=np.float64)


def _bin_labels(edges: Sequence[float]) -> List[str]:
    fmt = lambda v: f"{v:g}"  # noqa: E731
    labels = [f"< {fmt(edges[0])}"]
    labels += [f"{fmt(a)}-{fmt(b)}" for a, b in zip(edges[:-1], edges[1:])]
    labels.append(f">= {fmt(edges[-1])}")
    return labels


def size_histogram(coco: dict, input_size: Optional[int] = None,
                   anchor_scales: Optional[Sequence[Sequence[float]]] = None,
                   preserve_aspect_ratio: bool = False) -> Dict[str, Any]:
    """Object sizes of the non-crowd annotations.

    ``coco``: counts in the COCO area bins from each annotation's ``area`` field (the
    bbox's ``w * h`` when the field is missing; ``area_from_bbox`` says how often): small
    ``area < 32^2``, medium ``32^2 <= area < 96^2``, large ``area >= 96^2``.

    ``prior`` (only with ``input_size`` and ``anchor_scales``, see :func:`anchor_geometry`):
    the objects' ``sqrt(w * h)`` after the resize to the input (see
    :func:`resized_object_sizes`) in bins bounded by the SMALLEST scale of each pyramid
    level: bin 0 is ``size < edges[0]`` (smaller than the smallest anchor), bin i is
    ``edges[i-1] <= size < edges[i]``, the last is ``size >= edges[-1]``.  ``fine`` is a
    log-spaced histogram (4 bins per octave, from 1 px) for plotting.
    """
    areas = []
    from_bbox = 0
    for ann in coco["annotations"]:
        if _crowd(ann):
            continue
        area = ann.get("area")
        if area is None or not _finite([area]):
            if not _finite(ann["bbox"]):
                continue
            area = max(float(ann["bbox"][2]), 0.0) * max(float(ann["bbox"][3]), 0.0)
            from_bbox += 1
        areas.append(float(area))
    a = np.asarray(areas, dtype=np.float64)
    small = int((a < COCO_SMALL_AREA).sum())
    large = int((a >= COCO_LARGE_AREA).sum())
    out: Dict[str, Any] = {
        "coco": {"small": small, "medium": int(a.size) - small - large, "large": large,
                 "total": int(a.size), "area_from_bbox": from_bbox,
                 "edges": [COCO_SMALL_AREA, COCO_LARGE_AREA]},
    }
    if input_size is None or anchor_scales is None:
        return out

    edges = [float(min(level)) for level in anchor_scales]
    if not edges or any(e <= 0 for e in edges) or edges != sorted(edges):
        raise ValueError(f"anchor scales must be positive and increase by level; got {anchor_scales}")
    s = resized_object_sizes(coco, int(input_size), preserve_aspect_ratio)
    bins = np.searchsorted(np.asarray(edges), s, side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    fine_edges = 2.0 ** np.arange(0.0, math.log2(max(input_size, edges[-1]) * 2) + 0.25, 0.25)
    fine_counts = np.histogram(np.clip(s, fine_edges[0], fine_edges[-1] - 1e-9), bins=fine_edges)[0]
    out["prior"] = {
        "input_size": int(input_size),
        "preserve_aspect_ratio": bool(preserve_aspect_ratio),
        "edges": edges,
        "labels": _bin_labels(edges),
        "counts": [int(c) for c in counts],
        "total": int(s.size),
        "smallest_anchor": edges[0],
        "below_smallest": int(counts[0]),
        "share_below_smallest": float(counts[0] / s.size) if s.size else 0.0,
        "median_size": _percentile(s, 50),
        "p10_size": _percentile(s, 10),
        "fine": {"edges": [float(e) for e in fine_edges], "counts": [int(c) for c in fine_counts]},
    }
    return out


# --------------------------------------------------------------------------- crowding


def instances_per_image(coco: dict, masks_to_train: int = 100) -> Dict[str, Any]:
    """Non-crowd instances per image, and what ``loss.masks_to_train`` would cut.

    The loss keeps at most ``masks_to_train`` POSITIVE PRIORS per image for the mask branch;
    here positives are approximated by non-crowd instances (in reality each object usually
    matches several priors, so the real cut starts earlier).  With the original's random
    subset an image with ``n > K`` instances drops ``n - K`` of them (which ones is random);
    ``share_instances_dropped`` is their sum over all images divided by all instances.
    """
    k = int(masks_to_train)
    if k < 1:
        raise ValueError(f"masks_to_train must be >= 1; got {masks_to_train}")
    per_image = {int(img["id"]): 0 for img in coco["images"]}
    crowd = 0
    for ann in coco["annotations"]:
        if _crowd(ann):
            crowd += 1
        else:
            per_image[int(ann["image_id"])] += 1
    n = np.asarray(list(per_image.values()), dtype=np.int64)
    total = int(n.sum())
    over = n > k
    dropped = int((n[over] - k).sum())
    busiest = sorted(per_image.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    return {
        "num_images": int(n.size),
        "total_instances": total,
        "crowd_annotations": crowd,
        "images_without_instances": int((n == 0).sum()),
        "mean": float(n.mean()) if n.size else 0.0,
        "median": _percentile(n, 50),
        "p90": _percentile(n, 90),
        "p99": _percentile(n, 99),
        "max": int(n.max()) if n.size else 0,
        "masks_to_train": k,
        "images_over_limit": int(over.sum()),
        "share_images_over_limit": float(over.mean()) if n.size else 0.0,
        "instances_dropped": dropped,
        "share_instances_dropped": float(dropped / total) if total else 0.0,
        "busiest_images": [{"image_id": i, "instances": c} for i, c in busiest],
        "note": "positives approximated by non-crowd instances",
    }


# --------------------------------------------------------------------------- anomalies


def _box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between [N, 4] and [M, 4] xywh boxes."""
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _polygon_parts(seg: list) -> List[list]:
    if seg and all(not isinstance(v, list) for v in seg):
        return [seg]  # a single flat polygon
    return list(seg)


def _rle_area(seg: dict, h: int, w: int) -> Tuple[Optional[int], Optional[dict]]:
    """(foreground pixels, RLE usable by pycocotools) of an RLE dict; (None, None) when its
    size does not match the image."""
    if [int(v) for v in seg["size"]] != [h, w]:
        return None, None
    counts = seg["counts"]
    if isinstance(counts, list):
        if sum(counts) != h * w:
            return None, None
        return int(sum(counts[1::2])), None  # uncompressed: cheap, built lazily if needed
    rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return int(mask_utils.area(rle)), rle


def _checked_mask(seg: Any, h: int, w: int, seg_finite: bool, check_masks: bool, problems: List[str]):
    """The mask's problems (appended to ``problems``) and a pycocotools RLE of it when it is
    worth checking against the box (else None)."""
    rle = None
    if isinstance(seg, dict):
        area, rle = _rle_area(seg, h, w)
        if area is None:
            problems.append("rle_size_mismatch")
        elif area == 0:
            problems.append("empty_rle")
            rle = None
        elif rle is None and check_masks:
            rle = mask_utils.frPyObjects(seg, h, w)
    elif seg_finite:
        parts = _polygon_parts(seg)
        good = [[float(v) for v in p] for p in parts if len(p) >= 6 and len(p) % 2 == 0]
        if len(good) < len(parts) or not parts:
            problems.append("degenerate_polygon")
        if good and check_masks:
            rle = mask_utils.merge(mask_utils.frPyObjects(good, h, w))
            if int(mask_utils.area(rle)) == 0:
                problems.append("empty_mask")
                rle = None
    return rle


def _duplicate_orders(groups: Dict[Tuple[int, int], List[Tuple[int, np.ndarray]]], duplicate_iou: float) -> set:
    """Positions of duplicates: pairs within (image, category); the later annotation is the duplicate."""
    orders = set()
    for members in groups.values():
        if len(members) < 2:
            continue
        boxes = np.stack([b for _, b in members])
        iou = np.triu(_box_iou_xywh(boxes, boxes), k=1)
        for j in np.nonzero((iou > duplicate_iou).any(axis=0))[0]:
            orders.add(members[int(j)][0])
    return orders


def annotation_anomalies(coco: dict, check_masks: bool = True, box_mask_iou: float = 0.5,
                         duplicate_iou: float = 0.95, outside_tolerance: float = 1.0
                         ) -> Tuple[List[Anomaly], Dict[str, int]]:
    """Find degenerate or suspicious annotations.

    Returns ``(anomalies, counts)``: a list of :class:`Anomaly` ``(annotation id, image id,
    problem)`` in annotation order, and the number of anomalies per problem (every kind of
    :data:`ANOMALY_KINDS`, zeros included).  An annotation may have several problems, but
    checks that cannot mean anything are skipped (no outside / mask check for a box
    without area, no mask check for a mask that is already reported as empty or broken).

    * ``box_outside_image``: the bbox extends more than ``outside_tolerance`` pixels past an
      image border (COCO boxes are floats and often overshoot by rounding).
    * ``box_mask_mismatch`` / ``empty_mask`` (only when ``check_masks``; the mask is
      rasterised with pycocotools as ``COCO.annToMask`` does, kept as RLE):
      IoU(bbox, tight bbox of the mask) < ``box_mask_iou``, or a polygon that rasterises
      to no pixel.
    * ``duplicate``: same image and category as an EARLIER annotation (any crowd flag) and
      bbox IoU > ``duplicate_iou``; reported once, on the later annotation of the pair.
    """
    sizes = {int(img["id"]): (int(img["height"]), int(img["width"])) for img in coco["images"]}
    found: List[Anomaly] = []
    groups: Dict[Tuple[int, int], List[Tuple[int, np.ndarray]]] = defaultdict(list)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools vs numpy 2
        for order, ann in enumerate(coco["annotations"]):
            aid, iid = int(ann["id"]), int(ann["image_id"])
            h, w = sizes[iid]
            problems: List[str] = []
            seg = ann["segmentation"]

            bbox_ok = _finite(ann["bbox"])
            seg_finite = not isinstance(seg, list) or all(
                _finite(part) for part in _polygon_parts(seg))
            if not bbox_ok or not seg_finite:
                problems.append("non_finite_coordinates")
            box = np.asarray(ann["bbox"], dtype=np.float64) if bbox_ok else None
            if box is not None and (box[2] <= 0 or box[3] <= 0):
                problems.append("nonpositive_box")
                box = None
            if box is not None:
                tol = float(outside_tolerance)
                if (box[0] < -tol or box[1] < -tol or box[0] + box[2] > w + tol
                        or box[1] + box[3] > h + tol):
                    problems.append("box_outside_image")
                groups[(iid, int(ann["category_id"]))].append((order, box))

            rle = _checked_mask(seg, h, w, seg_finite, check_masks, problems)
            if check_masks and rle is not None and box is not None:
                tight = mask_utils.toBbox(rle).reshape(1, 4).astype(np.float64)
                if _box_iou_xywh(box.reshape(1, 4), tight)[0, 0] < box_mask_iou:
                    problems.append("box_mask_mismatch")
            found.extend(Anomaly(aid, iid, p) for p in problems)

    anns = coco["annotations"]
    found.extend(Anomaly(int(anns[o]["id"]), int(anns[o]["image_id"]), "duplicate")
                 for o in sorted(_duplicate_orders(groups, duplicate_iou)))

    rank = {k: i for i, k in enumerate(ANOMALY_KINDS)}
    position = {int(a["id"]): i for i, a in enumerate(anns)}
    found.sort(key=lambda a: (position[a.annotation_id], rank[a.problem]))
    counts = {k: 0 for k in ANOMALY_KINDS}
    for a in found:
        counts[a.problem] += 1
    return found, counts


def crowd_only_images(coco: dict) -> List[int]:
    """Ids of the images that have annotations but only crowd ones (no positive for training;
    their objects are only regions to ignore), in image order."""
    crowd: Dict[int, bool] = {}
    for ann in coco["annotations"]:
        iid = int(ann["image_id"])
        crowd[iid] = crowd.get(iid, True) and _crowd(ann)
    return [int(img["id"]) for img in coco["images"] if crowd.get(int(img["id"]), False)]


def mask_formats(coco: dict) -> Dict[str, List[int]]:
    """Non-crowd annotation ids by mask format, ``{"polygon": [...], "rle": [...]}``.

    Crowd annotations are left out: COCO itself stores crowds as RLE and objects as polygons.
    Both lists non-empty means the non-crowd masks come from two sources.
    """
    out: Dict[str, List[int]] = {"polygon": [], "rle": []}
    for ann in coco["annotations"]:
        if not _crowd(ann):
            out["rle" if isinstance(ann["segmentation"], dict) else "polygon"].append(int(ann["id"]))
    return out


def split_category_differences(coco: dict, other: dict) -> Dict[str, Any]:
    """How the categories of two splits (e.g. train and val) differ.

    ``definitions``: ``(id, name here, name in other)`` for every id whose name differs or that
    one file lacks (``None``), i.e. labels that would mean different classes.
    ``only_here`` / ``only_in_other``: ids of categories with non-crowd instances in one
    split but none in the other (never learned, or never evaluated).
    """
    here = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
    there = {int(c["id"]): str(c["name"]) for c in other["categories"]}
    used_here = {int(a["category_id"]) for a in coco["annotations"] if not _crowd(a)}
    used_there = {int(a["category_id"]) for a in other["annotations"] if not _crowd(a)}
    return {
        "definitions": [(cid, here.get(cid), there.get(cid)) for cid in sorted(set(here) | set(there))
                        if here.get(cid) != there.get(cid)],
        "only_here": sorted(used_here - used_there),
        "only_in_other": sorted(used_there - used_here),
    }


# --------------------------------------------------------------------------- everything


def dataset_stats(coco: dict, config=None, check_masks: bool = True, beta: float = 0.999,
                  compare_configs: Sequence[Tuple[str, Any]] = ()) -> Dict[str, Any]:
    """All statistics as one JSON-ready dict (``config`` defaults to the built-in defaults;
    ``compare_configs`` adds ``(name, config)`` pairs whose prior-scale bins are listed
    under ``prior_compare``)."""
    if config is None:
        from ..config import Config
        config = Config()
    counts = class_counts(coco)
    weights = class_balanced_weights(counts, beta)
    anomalies, anomaly_counts = annotation_anomalies(coco, check_masks=check_masks)
    sizes = size_histogram(coco, **anchor_geometry(config))
    return {
        "num_images": len(coco["images"]),
        "num_annotations": len(coco["annotations"]),
        "num_categories": len(coco["categories"]),
        "config": {"name": config.name, "num_classes": config.model.num_classes,
                   **{k: v for k, v in anchor_geometry(config).items()},
                   "masks_to_train": config.loss.masks_to_train},
        "classes": [{**c._asdict(), "weight": wt} for c, wt in zip(counts, weights)],
        "class_weights_beta": float(beta),
        "imbalance": imbalance_summary(counts),
        "sizes": sizes,
        "prior_compare": {name: size_histogram(coco, **anchor_geometry(cfg))["prior"]
                          for name, cfg in compare_configs},
        "instances_per_image": instances_per_image(coco, config.loss.masks_to_train),
        "crowd_only_images": crowd_only_images(coco),
        "mask_formats": {k: len(v) for k, v in mask_formats(coco).items()},
        "anomalies": {"checked_masks": bool(check_masks), "counts": anomaly_counts,
                      "total": len(anomalies),
                      "items": [a._asdict() for a in anomalies]},
    }
