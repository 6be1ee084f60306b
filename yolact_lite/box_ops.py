"""Box conversions, overlaps and the SSD-style box encoding used by YOLACT.

Conventions used throughout the package:

* ``xyxy``: ``(x1, y1, x2, y2)``, usually relative to the network input (0..1).
* ``cxcywh``: ``(cx, cy, w, h)``, the form priors (anchors) are stored in.
* IoU is the plain continuous one (no "+1" pixel convention).

All functions are pure, differentiable where it makes sense, and accept any leading batch
dimensions unless a docstring says otherwise.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "COCO_SMALL_AREA",
    "COCO_LARGE_AREA",
    "coco_size_bin",
    "point_form",
    "center_size",
    "box_area",
    "box_intersection",
    "box_iou",
    "box_ioa",
    "encode",
    "decode",
]

# COCO's size strata by area in pixels: small < 32^2 <= medium < 96^2 <= large.
COCO_SMALL_AREA = 32.0**2
COCO_LARGE_AREA = 96.0**2


def coco_size_bin(area: float) -> str:
    """``"small"``, ``"medium"`` or ``"large"`` for an area in pixels (COCO's strata)."""
    if area < COCO_SMALL_AREA:
        return "small"
    return "medium" if area < COCO_LARGE_AREA else "large"

# Smallest width/height (relative units) fed to the log in :func:`encode`; only degenerate
# (zero-size or inverted) boxes ever reach it, and it keeps their targets finite.
_MIN_ENCODED_SIZE = 1e-8


def point_form(boxes: Tensor) -> Tensor:
    """``[..., 4]`` (cx, cy, w, h) -> ``[..., 4]`` (x1, y1, x2, y2)."""
    centre, size = boxes[..., :2], boxes[..., 2:]
    return torch.cat((centre - size / 2, centre + size / 2), dim=-1)


def center_size(boxes: Tensor) -> Tensor:
    """``[..., 4]`` (x1, y1, x2, y2) -> ``[..., 4]`` (cx, cy, w, h)."""
    low, high = boxes[..., :2], boxes[..., 2:]
    return torch.cat(((low + high) / 2, high - low), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """``[..., 4]`` xyxy -> ``[...]`` area; inverted boxes have area 0 (not negative)."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def box_intersection(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise intersection areas.

    Args:
        a: ``[..., A, 4]`` xyxy.
        b: ``[..., B, 4]`` xyxy (leading dimensions broadcast with ``a``'s).

    Returns:
        ``[..., A, B]``, always >= 0.
    """
    # Per-coordinate contiguous columns broadcast far faster than strided [..., 2] slices.
    ax1, ay1, ax2, ay2 = (c.contiguous()[..., :, None] for c in a.unbind(-1))
    bx1, by1, bx2, by2 = (c.contiguous()[..., None, :] for c in b.unbind(-1))
    w = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0)
    h = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    return w * h


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU (no +1 convention).

    Args:
        a: ``[..., A, 4]`` xyxy.
        b: ``[..., B, 4]`` xyxy.

    Returns:
        ``[..., A, B]`` in [0, 1]; a pair whose union is <= 0 (two degenerate boxes) gets 0.
    """
    inter = box_intersection(a, b)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def box_ioa(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise intersection over the area of the FIRST box (the crowd-overlap measure).

    Args:
        a: ``[..., A, 4]`` xyxy (e.g. priors in point form).
        b: ``[..., B, 4]`` xyxy (e.g. crowd boxes).

    Returns:
        ``[..., A, B]``: ``|a_i ∩ b_j| / |a_i|``; 0 where ``a_i`` has no area.
    """
    inter = box_intersection(a, b)
    area = box_area(a)[..., :, None]
    return torch.where(area > 0, inter / area.clamp(min=torch.finfo(area.dtype).tiny), 0.0)


def encode(matched: Tensor, priors: Tensor, variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """SSD box encoding of ground-truth boxes relative to their priors.

    ``t_xy = (gt_centre - prior_centre) / (v0 * prior_wh)``, ``t_wh = log(gt_wh / prior_wh) / v1``.

    Args:
        matched: ``[..., P, 4]`` xyxy ground-truth box per prior.
        priors: ``[P, 4]`` (cx, cy, w, h).
        variances: ``(v0, v1)``.

    Returns:
        ``[..., P, 4]`` regression targets. Ground-truth widths/heights below 1e-8 are
        clamped to 1e-8 before the log so degenerate boxes give large but finite targets
        (the original yields -inf there).
    """
    gt = center_size(matched)
    offset = (gt[..., :2] - priors[..., :2]) / (variances[0] * priors[..., 2:])
    scale = torch.log(gt[..., 2:].clamp(min=_MIN_ENCODED_SIZE) / priors[..., 2:]) / variances[1]
    return torch.cat((offset, scale), dim=-1)


def decode(deltas: Tensor, priors: Tensor, variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """Inverse of :func:`encode`: regression outputs -> boxes (no clipping).

    Args:
        deltas: ``[..., P, 4]`` (e.g. ``[B, P, 4]``).
        priors: ``[P, 4]`` (cx, cy, w, h).
        variances: ``(v0, v1)``.

    Returns:
        ``[..., P, 4]`` xyxy boxes, relative like the priors.
    """
    centre = priors[..., :2] + deltas[..., :2] * variances[0] * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(deltas[..., 2:] * variances[1])
    return torch.cat((centre - size / 2, centre + size / 2), dim=-1)
