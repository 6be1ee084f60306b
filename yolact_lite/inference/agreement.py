"""How closely one inference path reproduces another's detections (precision checks).

Pure functions on :class:`~yolact_lite.structures.Detections` of the same image:
a reference (usually fp32) detection counts as *matched* when the other path has an unused
detection of the same class whose full-resolution mask has IoU >= ``iou`` with it (greedy,
reference detections in score order, each taking its best unused candidate; when both masks
are empty their boxes' IoU stands in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch
from torch import Tensor

from ..box_ops import box_iou
from ..structures import Detections

__all__ = ["mask_iou_matrix", "Agreement", "match_detections", "summarise_agreement"]


def mask_iou_matrix(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every pair of boolean masks: a [N, H, W], b [M, H, W] -> [N, M] float64
    (exact pixel counts: an IoU of 0.9 compares equal to the threshold 0.9)."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64)
    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    inter = (fa @ fb.t()).double()  # pixel counts: exact in float32 up to 2^24 pixels
    union = fa.sum(1).double()[:, None] + fb.sum(1).double()[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


@dataclass
class Agreement:
    """One image: ``reference`` detections considered, ``matched`` of them, and for the
    matched pairs the largest box corner error (pixels) and score error."""

    reference: int
    matched: int
    box_error_px: List[float]
    score_error: List[float]


def match_detections(reference: Detections, other: Detections, min_score: float = 0.3,
                     iou: float = 0.9) -> Agreement:
    """Match ``reference``'s detections with score > ``min_score`` to ``other``'s (all of
    them: a detection slightly under the threshold in the other path still counts)."""
    ref = reference.select(torch.nonzero(reference.scores > min_score).squeeze(1))
    if len(ref) == 0:
        return Agreement(0, 0, [], [])
    ious = mask_iou_matrix(ref.masks, other.masks)
    if len(other):
        # two empty masks say nothing about where the objects are: compare their boxes instead
        empty = (~ref.masks.flatten(1).any(1))[:, None] & (~other.masks.flatten(1).any(1))[None, :]
        ious = torch.where(empty, box_iou(ref.boxes.double(), other.boxes.double()), ious)
    same_class = ref.classes[:, None] == other.classes[None, :]
    ious = torch.where(same_class, ious, torch.full_like(ious, -1.0))
    used = torch.zeros(len(other), dtype=torch.bool)
    matched, box_err, score_err = 0, [], []
    for i in range(len(ref)):
        row = torch.where(used, torch.full_like(ious[i], -1.0), ious[i])
        if row.numel() == 0:
            break
        j = int(row.argmax())
        if float(row[j]) < iou:
            continue
        used[j] = True
        matched += 1
        box_err.append(float((ref.boxes[i] - other.boxes[j]).abs().max()))
        score_err.append(float((ref.scores[i] - other.scores[j]).abs()))
    return Agreement(len(ref), matched, box_err, score_err)


def summarise_agreement(per_image: List[Agreement]) -> dict:
    """Totals over images: ``agreement`` (matched / reference, 1.0 when there is nothing to
    match), ``reference``, ``matched``, mean / max box error (px) and score error."""
    ref = sum(a.reference for a in per_image)
    matched = sum(a.matched for a in per_image)
    box = [e for a in per_image for e in a.box_error_px]
    score = [e for a in per_image for e in a.score_error]
    return {
        "agreement": matched / ref if ref else 1.0,
        "reference": ref,
        "matched": matched,
        "box_err_mean_px": sum(box) / len(box) if box else 0.0,
        "box_err_max_px": max(box) if box else 0.0,
        "score_err_mean": sum(score) / len(score) if score else 0.0,
        "score_err_max": max(score) if score else 0.0,
    }
