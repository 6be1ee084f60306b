"""Tiled inference: large frames in overlapping tiles, so that small objects keep their pixels.

A 2000 x 1500 frame squeezed into a 550 px input shrinks every object ~3.6x: a 20 px object
becomes ~5 px, below what the network (smallest anchor 24 px, stride-8 P3) can find.
:func:`predict_tiled` runs the predictor on overlapping ``tile x tile`` windows at their
native resolution, plus (by default) the whole frame for the objects that tiles cut into
pieces, and merges everything back into one :class:`~yolact_lite.structures.Detections`
in frame coordinates.

Merge rule (chosen: "drop the cut piece if a complete view exists, else merge the pieces by
mask IoU"; then box NMS):

1. Each window's detections are mapped to frame coordinates (boxes offset, masks kept as
   the patch they cover).  A detection is *cut* when its box lies within ``border_px`` (2 px)
   of an INNER edge of its window (an edge that is not the edge of the processed region):
   the tile saw only part of the object.
2. Two detections of the same class from different windows show the *same object* when
   their masks, compared only inside the part of the frame BOTH windows saw, have IoU
   >= ``merge_iou`` (0.5); boxes clipped to that part are compared when neither mask
   reaches into it.  Pairs with at least one cut member are linked (union-find).
3. A group with a complete (not cut) member keeps its best-scoring complete member and
   drops the rest (e.g. the full-frame view of a large object, or the tile that holds a
   small object whole); a group of cut pieces only (an object larger than the tile
   overlap, missed by the full-frame pass) becomes ONE detection: union of the masks and
   boxes, the best score.
4. Class-wise box NMS (``torchvision.ops.batched_nms``, IoU ``nms_iou`` = 0.5) removes the
   remaining duplicates (an object seen whole by several overlapping tiles and the full
   frame), then the ``max_detections`` best are kept.

``roi=(x1, y1, x2, y2)`` (frame pixels) restricts all of this to that area: the full-frame
pass is the ROI, tiles cover only the ROI, results come back in frame coordinates with
frame-sized masks (empty outside the ROI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import batched_nms

from ..errors import DataError
from ..structures import Detections

__all__ = ["predict_tiled", "tile_windows"]

Window = Tuple[int, int, int, int]  # x0, y0, x1, y1 (frame pixels, end exclusive)


def _starts(length: int, tile: int, overlap: float) -> List[int]:
    """Window starts along one axis: as few windows as keep at least ``overlap`` x tile of
    overlap between neighbours, spread evenly from 0 to ``length - tile``."""
    if length <= tile:
        return [0]
    stride = tile * (1.0 - overlap)
    count = int(math.ceil((length - tile) / stride - 1e-9)) + 1
    return [int(round(i * (length - tile) / (count - 1))) for i in range(count)]


def tile_windows(width: int, height: int, tile: int, overlap: float = 0.2) -> List[Window]:
    """Overlapping ``tile x tile`` windows covering a ``width x height`` area, row-major
    (windows are smaller than ``tile`` only along an axis shorter than ``tile``)."""
    if tile < 1:
        raise DataError(f"tile must be >= 1 px; got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise DataError(f"tile overlap must be in [0, 1); got {overlap}")
    xs, ys = _starts(width, tile, overlap), _starts(height, tile, overlap)
    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in ys for x in xs]


@dataclass
class _Piece:
    """One window's detection in frame coordinates; the mask is kept as its bounding patch."""

    box: Tuple[float, float, float, float]
    score: float
    mask_score: float
    label: int
    patch: np.ndarray  # bool [ph, pw]; (0, 0) for an empty mask
    origin: Tuple[int, int]  # frame (x, y) of patch[0, 0]
    window: Window
    window_id: int
    cut: bool

    @property
    def patch_rect(self) -> Window:
        x, y = self.origin
        return x, y, x + self.patch.shape[1], y + self.patch.shape[0]


def _intersect(a: Window, b: Window) -> Optional[Window]:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _bound(a: Window, b: Window) -> Window:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _paste(canvas: np.ndarray, canvas_origin: Tuple[int, int], piece: _Piece) -> None:
    """OR ``piece``'s patch into ``canvas`` (whose [0, 0] is frame ``canvas_origin``)."""
    cx, cy = canvas_origin
    rect = _intersect(piece.patch_rect, (cx, cy, cx + canvas.shape[1], cy + canvas.shape[0]))
    if rect is None:
        return
    x0, y0, x1, y1 = rect
    px, py = piece.origin
    canvas[y0 - cy:y1 - cy, x0 - cx:x1 - cx] |= piece.patch[y0 - py:y1 - py, x0 - px:x1 - px]


def _pieces(dets: Detections, window: Window, window_id: int, region: Window, border_px: float) -> List[_Piece]:
    """Detections of the crop ``window`` (crop-local pixels) -> pieces in frame coordinates."""
    n = len(dets)
    if n == 0:
        return []
    x0, y0, x1, y1 = window
    ww, wh = x1 - x0, y1 - y0
    inner = (x0 > region[0], y0 > region[1], x1 < region[2], y1 < region[3])  # left, top, right, bottom
    masks = dets.masks.to("cpu", torch.bool)
    rows_any = masks.any(dim=2).numpy()  # [n, wh]
    cols_any = masks.any(dim=1).numpy()  # [n, ww]
    boxes = dets.boxes.detach().float().cpu().tolist()
    scores = dets.scores.detach().float().cpu().tolist()
    mask_scores = dets.mask_scores.detach().float().cpu().tolist()
    labels = dets.classes.detach().cpu().tolist()
    out = []
    for i in range(n):
        bx0, by0, bx1, by1 = boxes[i]
        cut = ((inner[0] and bx0 <= border_px) or (inner[1] and by0 <= border_px)
               or (inner[2] and bx1 >= ww - border_px) or (inner[3] and by1 >= wh - border_px))
        r = np.flatnonzero(rows_any[i])
        c = np.flatnonzero(cols_any[i])
        if r.size:
            patch = masks[i, r[0]:r[-1] + 1, c[0]:c[-1] + 1].numpy().copy()
            origin = (x0 + int(c[0]), y0 + int(r[0]))
        else:
            patch = np.zeros((0, 0), dtype=bool)
            origin = (x0 + int(bx0), y0 + int(by0))
        out.append(_Piece(box=(bx0 + x0, by0 + y0, bx1 + x0, by1 + y0), score=scores[i],
                          mask_score=mask_scores[i], label=int(labels[i]), patch=patch, origin=origin,
                          window=window, window_id=window_id, cut=bool(cut)))
    return out


def _same_object(a: _Piece, b: _Piece, merge_iou: float) -> bool:
    """Mask IoU of ``a`` and ``b`` inside the frame area both windows saw (>= merge_iou)."""
    shared = _intersect(a.window, b.window)
    if shared is None:
        return False
    rect = None
    for p in (a, b):
        if p.patch.size:
            r = _intersect(p.patch_rect, shared)
            if r is not None:
                rect = r if rect is None else _bound(rect, r)
    if rect is not None:
        size = (rect[3] - rect[1], rect[2] - rect[0])
        ma, mb = np.zeros(size, dtype=bool), np.zeros(size, dtype=bool)
        _paste(ma, rect[:2], a)
        _paste(mb, rect[:2], b)
        union = int(np.count_nonzero(ma | mb))
        if union:
            return np.count_nonzero(ma & mb) / union >= merge_iou
    # neither mask reaches into the shared area: compare the boxes clipped to it
    clipped = []
    for p in (a, b):
        x0, y0 = max(p.box[0], shared[0]), max(p.box[1], shared[1])
        x1, y1 = min(p.box[2], shared[2]), min(p.box[3], shared[3])
        if x1 <= x0 or y1 <= y0:
            return False
        clipped.append((x0, y0, x1, y1))
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = clipped
    iw, ih = min(ax1, bx1) - max(ax0, bx0), min(ay1, by1) - max(ay0, by0)
    if iw <= 0 or ih <= 0:
        return False
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union >= merge_iou


def _find(parent: List[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _resolve_cuts(pieces: List[_Piece], merge_iou: float) -> List[_Piece]:
    """Steps 2-3 of the module docstring."""
    n = len(pieces)
    if n < 2 or not any(p.cut for p in pieces):
        return pieces
    boxes = torch.tensor([p.box for p in pieces], dtype=torch.float64)
    labels = torch.tensor([p.label for p in pieces])
    windows = torch.tensor([p.window_id for p in pieces])
    cut = torch.tensor([p.cut for p in pieces])
    lo = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    hi = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    touching = ((hi - lo) >= 0).all(dim=2)  # boxes overlap or touch (a cut piece ends at its border)
    candidate = (touching & (labels[:, None] == labels[None, :]) & (windows[:, None] != windows[None, :])
                 & (cut[:, None] | cut[None, :]))
    candidate = torch.triu(candidate, diagonal=1)
    parent = list(range(n))
    for i, j in torch.nonzero(candidate).tolist():
        if _find(parent, i) != _find(parent, j) and _same_object(pieces[i], pieces[j], merge_iou):
            parent[_find(parent, i)] = _find(parent, j)
    groups: dict = {}
    for i in range(n):
        groups.setdefault(_find(parent, i), []).append(i)

    out = []
    for members in groups.values():
        group = [pieces[i] for i in members]
        if len(group) == 1:
            out.append(group[0])
            continue
        complete = [p for p in group if not p.cut]
        if complete:
            out.append(max(complete, key=lambda p: p.score))
            continue
        # only cut pieces: one detection, union of the masks and boxes, the best score
        box = (min(p.box[0] for p in group), min(p.box[1] for p in group),
               max(p.box[2] for p in group), max(p.box[3] for p in group))
        rects = [p.patch_rect for p in group if p.patch.size]
        best = max(group, key=lambda p: p.score)
        if rects:
            rect = rects[0]
            for r in rects[1:]:
                rect = _bound(rect, r)
            patch = np.zeros((rect[3] - rect[1], rect[2] - rect[0]), dtype=bool)
            for p in group:
                _paste(patch, rect[:2], p)
            origin = rect[:2]
        else:
            patch, origin = np.zeros((0, 0), dtype=bool), best.origin
        out.append(_Piece(box=box, score=best.score, mask_score=max(p.mask_score for p in group),
                          label=best.label, patch=patch, origin=origin, window=best.window,
                          window_id=best.window_id, cut=False))
    return out


def _parse_roi(roi, width: int, height: int) -> Window:
    if roi is None:
        return 0, 0, width, height
    if len(roi) != 4:
        raise DataError(f"roi must be (x1, y1, x2, y2); got {roi!r}")
    x0, y0, x1, y1 = (int(round(float(v))) for v in roi)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        raise DataError(f"roi {tuple(roi)} does not overlap the {width}x{height} frame")
    return x0, y0, x1, y1


def predict_tiled(predictor, image_bgr: np.ndarray, tile: Optional[int] = 640, overlap: float = 0.2,
                  include_full_frame: bool = True, roi: Optional[Sequence[float]] = None,
                  nms_iou: float = 0.5, merge_iou: float = 0.5, border_px: float = 2.0,
                  max_detections: Optional[int] = None) -> Detections:
    """Detections of a (large) BGR frame from overlapping tiles plus the full frame.

    Args:
        predictor: anything with ``.predict(image_bgr) -> Detections`` and ``.class_names``
            (a :class:`~yolact_lite.inference.predictor.Predictor`).
        image_bgr: ``[H, W, 3]`` uint8.
        tile: tile side in frame pixels (None: no tiling, only the ROI / frame pass).
        overlap: fraction of ``tile`` that neighbouring tiles share (at least).
        include_full_frame: also run the whole ROI / frame (finds objects larger than a tile).
        roi: ``(x1, y1, x2, y2)`` frame pixels: only that area is processed.
        nms_iou: class-wise box NMS threshold of the final merge.
        merge_iou: mask IoU (in the shared area) that makes two windows' detections one object.
        border_px: a box within this distance of an inner window edge is a cut piece.
        max_detections: keep the best N (default: ``predictor.config.inference.max_detections``
            when the predictor has one, else all).

    Returns:
        :class:`Detections` in frame coordinates (masks ``[N, H, W]``), sorted by score;
        see the module docstring for the merge rule.
    """
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.size == 0:
        raise DataError("predict_tiled needs a non-empty [H, W, 3] BGR image")
    height, width = image_bgr.shape[:2]
    region = _parse_roi(roi, width, height)
    windows = _windows(region, tile, overlap, include_full_frame)
    if max_detections is None:
        config = getattr(predictor, "config", None)
        max_detections = getattr(getattr(config, "inference", None), "max_detections", None)

    pieces: List[_Piece] = []
    for window_id, window in enumerate(windows):
        x0, y0, x1, y1 = window
        crop = np.ascontiguousarray(image_bgr[y0:y1, x0:x1])
        pieces += _pieces(predictor.predict(crop), window, window_id, region, border_px)
    names = list(getattr(predictor, "class_names", []) or [])
    pieces = _resolve_cuts(pieces, merge_iou)
    if not pieces:
        return Detections.empty(height, width, names)

    return _merged(pieces, height, width, names, nms_iou, max_detections)


def _windows(region: Window, tile: Optional[int], overlap: float, include_full_frame: bool) -> List[Window]:
    """The windows to run: the region itself, and/or its tiles (frame coordinates)."""
    if tile is None:
        return [region]
    rw, rh = region[2] - region[0], region[3] - region[1]
    tiles = [(region[0] + a, region[1] + b, region[0] + c, region[1] + d)
             for a, b, c, d in tile_windows(rw, rh, int(tile), overlap)]
    return ([region] if include_full_frame and len(tiles) > 1 else []) + tiles


def _merged(pieces: List[_Piece], height: int, width: int, names: List[str], nms_iou: float,
            max_detections: Optional[int]) -> Detections:
    """Class-wise box NMS over the resolved pieces, the ``max_detections`` best, as frame-sized
    :class:`Detections` sorted by score."""
    boxes = torch.tensor([p.box for p in pieces], dtype=torch.float32)
    scores = torch.tensor([p.score for p in pieces], dtype=torch.float32)
    labels = torch.tensor([p.label for p in pieces], dtype=torch.int64)
    keep = batched_nms(boxes, scores, labels, nms_iou)  # sorted by score, descending
    if max_detections is not None:
        keep = keep[: int(max_detections)]
    masks = torch.zeros(keep.numel(), height, width, dtype=torch.bool)
    canvas = masks.numpy()  # shares memory
    for row, i in enumerate(keep.tolist()):
        _paste(canvas[row], (0, 0), pieces[i])
    return Detections(
        boxes=boxes[keep], scores=scores[keep], classes=labels[keep], masks=masks,
        mask_scores=torch.tensor([pieces[i].mask_score for i in keep.tolist()], dtype=torch.float32),
        class_names=names,
    )
