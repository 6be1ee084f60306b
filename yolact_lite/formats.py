"""Instance masks in the formats users keep: polygons with holes, RLE, COCO results, JSON lines.

Pure functions on numpy arrays or torch tensors (CPU or CUDA; they are copied to the CPU).

Coordinates follow COCO: pixel ``(row i, column j)`` covers the square ``[j, j+1] x [i, i+1]``,
so a polygon is the outline of its pixels (pycocotools rasterises a pixel when its centre is
inside).  :func:`mask_to_polygons` traces exactly that outline (the pixel edges, at half-pixel
resolution) with OpenCV's two-level contour hierarchy (``RETR_CCOMP``): every outer contour
with the holes inside it; an island inside a hole is a part of its own.  The outlines are then
simplified with Douglas-Peucker (``cv2.approxPolyDP``) to ``tolerance_px``; ``tolerance_px=0``
keeps the exact outline, and :func:`polygons_to_mask` gives the mask back pixel for pixel.

A polygon is a flat list ``[x0, y0, x1, y1, ...]`` (COCO's layout); a part is
``{"exterior": polygon, "holes": [polygon, ...]}``.  Orientation is not specified.

COCO's own polygon segmentation cannot hold holes, so COCO results (:func:`detections_to_coco`)
carry RLE masks by default, which are exact; COCO polygons (holes filled) on request.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import IO, Any, Dict, List, Optional, Sequence, Union

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .errors import DataError

__all__ = [
    "mask_to_polygons", "masks_to_polygons", "polygons_to_mask", "masks_to_rle", "rle_to_mask",
    "detections_to_coco", "frame_record", "write_json_line", "JSON_MASK_FORMATS",
]

# How a JSON output carries masks (predict --json-masks, detections_to_coco, frame records).
JSON_MASK_FORMATS = ("polygons", "rle", "none")

Polygon = List[float]
Part = Dict[str, Any]  # {"exterior": Polygon, "holes": [Polygon, ...]}


def _numpy_masks(masks, ndim: int, name: str) -> np.ndarray:
    if hasattr(masks, "detach"):  # a torch tensor
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != ndim:
        shape = "[H, W]" if ndim == 2 else "[N, H, W]"
        raise ValueError(f"{name}: expected a {shape} mask array, got shape {tuple(masks.shape)}")
    if not (masks.dtype == bool or np.issubdtype(masks.dtype, np.integer)):
        raise ValueError(f"{name}: expected bool or 0/1 integer masks, got {masks.dtype} "
                         "(threshold probabilities first, e.g. masks > 0.5)")
    return masks.astype(bool, copy=False)


# --------------------------------------------------------------------------- polygons


def _outline_grid(mask: np.ndarray) -> np.ndarray:
    """A ``[2H + 3, 2W + 3]`` uint8 grid at half-pixel steps (plus a one-cell border) where
    every pixel of ``mask`` sets its closed square: cell ``(2i + 1 + a, 2j + 1 + b)`` for
    ``a, b`` in 0..2.  The contours of this grid run along the pixel edges of ``mask``."""
    h, w = mask.shape
    up = np.repeat(np.repeat(mask.astype(np.uint8), 2, axis=0), 2, axis=1)  # pixel -> 2x2 cells
    grid = np.zeros((2 * h + 3, 2 * w + 3), np.uint8)
    for dy in (1, 2):
        for dx in (1, 2):
            grid[dy:dy + 2 * h, dx:dx + 2 * w] |= up
    return grid


def _exact_outline(contour: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The contour's corner points ``[K, 2]`` (grid x, y) along the grid cells' edges only.

    OpenCV's 8-connected tracer steps diagonally across concave corners; the corner cell it
    skips (the one of the two candidates that is set) is put back, so no pixel corner is cut.
    Points in the middle of straight runs are dropped.
    """
    p = contour.reshape(-1, 2).astype(np.int64)
    step = np.roll(p, -1, axis=0) - p
    diagonal = (step[:, 0] != 0) & (step[:, 1] != 0)
    across = p + np.stack([step[:, 0], np.zeros_like(step[:, 1])], axis=1)
    down = p + np.stack([np.zeros_like(step[:, 0]), step[:, 1]], axis=1)
    corner = np.where((grid[across[:, 1], across[:, 0]] > 0)[:, None], across, down)
    points = np.empty((2 * len(p), 2), np.int64)
    points[0::2], points[1::2] = p, corner
    keep = np.ones(2 * len(p), bool)
    keep[1::2] = diagonal
    points = points[keep]
    before, after = points - np.roll(points, 1, axis=0), np.roll(points, -1, axis=0) - points
    turn = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    return points[turn != 0]


def _to_polygon(contour: np.ndarray, grid: np.ndarray, tolerance_px: float, x0: int, y0: int
                ) -> Optional[Polygon]:
    points = _exact_outline(contour, grid)
    if tolerance_px > 0 and len(points) > 3:
        # grid cells are half pixels
        points = cv2.approxPolyDP(points.reshape(-1, 1, 2).astype(np.int32), 2.0 * tolerance_px, True)
    points = points.reshape(-1, 2).astype(np.float64)
    if len(points) < 3:
        return None
    xy = (points - 1.0) / 2.0 + np.array([x0, y0], dtype=np.float64)
    return [float(v) for v in xy.reshape(-1)]


def mask_to_polygons(mask, tolerance_px: float = 1.0, holes: bool = True) -> List[Part]:
    """Outlines of one mask ``[H, W]`` (bool or 0/1; numpy or torch).

    Returns one part per outer contour (8-connected component), each with the holes inside it
    (``holes=False`` drops them: the part then covers its holes).  Outlines run along pixel
    edges (COCO coordinates, see the module docstring) and are simplified so that no point
    moves more than ``tolerance_px`` pixels (1 px removes the staircase of the exact outline:
    about 7x fewer points on round shapes; ``0`` keeps it); parts or holes that simplify to
    fewer than 3 points are left out.  An empty mask gives ``[]``.
    """
    if not math.isfinite(tolerance_px) or tolerance_px < 0:
        raise ValueError(f"tolerance_px must be a finite number >= 0, got {tolerance_px}")
    m = _numpy_masks(mask, 2, "mask_to_polygons")
    rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    if rows.size == 0:
        return []
    y0, x0 = int(rows[0]), int(cols[0])
    crop = m[y0:int(rows[-1]) + 1, x0:int(cols[-1]) + 1]  # trace only the instance's box
    grid = _outline_grid(crop)
    contours, hierarchy = cv2.findContours(grid, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return []
    links = hierarchy[0]  # per contour: next, previous, first child, parent
    parts: List[Part] = []
    for k, contour in enumerate(contours):
        if links[k][3] != -1:
            continue  # a hole: collected with its outer contour
        exterior = _to_polygon(contour, grid, tolerance_px, x0, y0)
        if exterior is None:
            continue
        inner: List[Polygon] = []
        child = links[k][2]
        while holes and child != -1:
            hole = _to_polygon(contours[child], grid, tolerance_px, x0, y0)
            if hole is not None:
                inner.append(hole)
            child = links[child][0]
        parts.append({"exterior": exterior, "holes": inner})
    return parts


def masks_to_polygons(masks, tolerance_px: float = 1.0, holes: bool = True) -> List[List[Part]]:
    """:func:`mask_to_polygons` for each of ``masks`` ``[N, H, W]``: one list of parts per instance."""
    m = _numpy_masks(masks, 3, "masks_to_polygons")
    return [mask_to_polygons(one, tolerance_px, holes) for one in m]


def _rasterise(polygons: Sequence[Polygon], height: int, width: int) -> np.ndarray:
    polygons = [[float(v) for v in p] for p in polygons if len(p) >= 6]
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(bool)


def polygons_to_mask(parts: Sequence[Part], height: int, width: int) -> np.ndarray:
    """The ``[height, width]`` bool mask of parts from :func:`mask_to_polygons`: each part's
    exterior minus its holes, united over the parts (pycocotools' rasteriser, as COCO tools
    draw polygons)."""
    out = np.zeros((int(height), int(width)), dtype=bool)
    for part in parts:
        area = _rasterise([part["exterior"]], height, width)
        if part.get("holes"):
            area &= ~_rasterise(part["holes"], height, width)
        out |= area
    return out


# --------------------------------------------------------------------------- RLE


def masks_to_rle(masks) -> List[Dict[str, Any]]:
    """COCO compressed RLE of each of ``masks`` ``[N, H, W]``: ``{"size": [H, W], "counts": str}``
    (JSON-ready: ``counts`` is text, not bytes)."""
    m = _numpy_masks(masks, 3, "masks_to_rle")
    if m.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """The ``[H, W]`` bool mask of one COCO RLE (compressed, text or bytes counts, or uncompressed)."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects(rle, h, w)
    elif isinstance(counts, str):
        rle = {"size": [h, w], "counts": counts.encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


# --------------------------------------------------------------------------- detections


def _label_ids(det) -> List[int]:
    return [int(c) for c in det.classes.tolist()]


def _floats(values, digits: int) -> List[float]:
    return [round(float(v), digits) for v in values]


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def detections_to_coco(det, image_id: int, category_ids: Sequence[int], masks: str = "rle",
                       tolerance_px: float = 1.0) -> List[Dict[str, Any]]:
    """COCO results (one dict per instance) of a :class:`~yolact_lite.structures.Detections`.

    Each result: ``image_id``, ``category_id`` (``category_ids[label]``: the dataset's ids, see
    ``Predictor.category_ids``), ``bbox`` ``[x, y, w, h]``, ``score`` (box score),
    ``mask_score`` and, per ``masks``, a ``segmentation``: ``"rle"`` (compressed RLE, text
    counts: exact), ``"polygons"`` (COCO polygons, a list of flat ``[x0, y0, ...]`` outlines,
    one per connected part, simplified to ``tolerance_px``; COCO polygons hold no holes, so a
    hole is filled; a mask with no part of 3 points has ``[]``) or none (``"none"``: boxes only).
    Boxes are rounded to 0.01 px and scores to 1e-5.  (pycocotools' ``loadRes`` takes the
    area from ``bbox`` when present; :mod:`yolact_lite.evaluation` drops it for mask evaluation.)
    """
    if masks not in JSON_MASK_FORMATS:
        raise ValueError(f"masks must be one of {', '.join(JSON_MASK_FORMATS)}, got {masks!r}")
    if not _is_integer(image_id):
        raise ValueError(f"image_id must be an integer (the COCO image id), got {image_id!r}")
    if isinstance(category_ids, (str, bytes)) or not all(_is_integer(c) for c in category_ids):
        raise ValueError(f"category_ids must be a list of integer COCO category ids, one per class; "
                         f"got {category_ids!r:.80}")
    labels = _label_ids(det)
    if labels and (min(labels) < 0 or max(labels) >= len(category_ids)):
        raise DataError(f"detection label {max(labels)} is out of range for {len(category_ids)} categories "
                        "(model/annotation class count mismatch?)")
    shapes: List[Any] = [None] * len(labels)
    if masks == "rle":
        shapes = masks_to_rle(det.masks)
    elif masks == "polygons":
        shapes = [[part["exterior"] for part in parts]
                  for parts in masks_to_polygons(det.masks, tolerance_px, holes=False)]
    out = []
    for i, label in enumerate(labels):
        x1, y1, x2, y2 = (float(v) for v in det.boxes[i].tolist())
        item: Dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(category_ids[label]),
            "bbox": _floats((x1, y1, x2 - x1, y2 - y1), 2),
            "score": round(float(det.scores[i]), 5),
            "mask_score": round(float(det.mask_scores[i]), 5),
        }
        if shapes[i] is not None:
            item["segmentation"] = shapes[i]
        out.append(item)
    return out


def frame_record(det, frame_index: int, timestamp_s: Optional[float], masks: str = "polygons",
                 tolerance_px: float = 1.0, category_ids: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """One video frame's detections as a JSON-ready dict (one line of a JSON-lines file).

    ``{"frame": index, "time_s": seconds or null, "height": H, "width": W, "instances": [...]}``
    with, per instance: ``label`` (0..C-1), ``class_name`` (when ``det.class_names`` has it),
    ``category_id`` (with ``category_ids``), ``score``, ``mask_score``, ``box`` ``[x1, y1, x2, y2]``
    and, per ``masks``: ``"polygons"`` (parts with holes, :func:`mask_to_polygons`), ``"rle"``
    (``"rle"``: :func:`masks_to_rle`) or nothing (``"none"``).
    """
    if masks not in JSON_MASK_FORMATS:
        raise ValueError(f"masks must be one of {', '.join(JSON_MASK_FORMATS)}, got {masks!r}")
    height, width = (int(v) for v in det.masks.shape[-2:])
    labels = _label_ids(det)
    shapes: List[Any] = [None] * len(labels)
    if masks == "polygons":
        shapes = masks_to_polygons(det.masks, tolerance_px)
    elif masks == "rle":
        shapes = masks_to_rle(det.masks)
    instances = []
    for i, label in enumerate(labels):
        item: Dict[str, Any] = {"label": label}
        if label < len(det.class_names):
            item["class_name"] = det.class_names[label]
        if category_ids is not None:
            item["category_id"] = int(category_ids[label])
        item["score"] = round(float(det.scores[i]), 5)
        item["mask_score"] = round(float(det.mask_scores[i]), 5)
        item["box"] = _floats(det.boxes[i].tolist(), 2)
        if masks != "none":
            item[masks] = shapes[i]
        instances.append(item)
    time_s = None if timestamp_s is None or not math.isfinite(timestamp_s) else round(float(timestamp_s), 4)
    return {"frame": int(frame_index), "time_s": time_s, "height": height, "width": width,
            "instances": instances}


def write_json_line(stream: IO[str], record: Union[Dict[str, Any], List[Any]]) -> None:
    """Append ``record`` as one compact JSON line and flush (a crash loses at most this line)."""
    stream.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")
    stream.flush()
