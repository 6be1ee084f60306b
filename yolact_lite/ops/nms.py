"""Fast NMS (as in YOLACT) and a traditional per-class NMS.

Shapes and dtypes shared by every function here:

* ``boxes``: floating tensor ``[P, 4]``, corners ``(x1, y1, x2, y2)``.
* ``scores``: floating tensor ``[C, P]``, the foreground score of each of the
  C classes for each of the P candidate boxes; same device as ``boxes``.
* Result: ``(prior_index, class_id, score)``, three 1-D tensors of length N
  (int64, int64, scores' dtype) on the input device, ordered by score
  descending. Equal scores are ordered by class id, then prior index,
  ascending (cross-class mode: by prior index). No autograd graph is built.

Fast NMS, per class (``cross_class=False``): each class keeps its ``top_k``
best boxes (equal scores: lower box index first). Candidate ``j`` survives iff
its IoU with every candidate ranked above it in the same class is
``<= iou_threshold``, *whether or not that candidate survived itself*: an
already suppressed box still suppresses. That is what makes it a single
matrix operation instead of a sequential loop, and why it removes a little
more than traditional NMS. The survivors of all classes are sorted by score
and the best ``max_detections`` are returned. There is no score threshold.

Fast NMS, cross-class (``cross_class=True``): every box takes its best class
score (ties: lowest class id); the ``top_k`` best boxes go through the same
rule once, ignoring classes. As in the original YOLACT, this mode returns all
survivors among the ``top_k`` candidates: it is *not* capped at
``max_detections``.

IoU is plain IoU: ``area = (x2 - x1) * (y2 - y1)`` (no +1),
``inter = clamp(min(x2) - max(x1), 0) * clamp(min(y2) - max(y1), 0)``,
``union = (area_a + area_b) - inter`` and IoU is ``inter / union``, or 0 when
``union <= 0`` (degenerate or inverted boxes never yield NaN). Everything is
computed in float32 with this exact operation order in all implementations,
so the compiled kernels and :func:`fast_nms_reference` agree bit for bit.
float16 / bfloat16 / float64 inputs are converted to float32 first; returned
scores are read back from the original ``scores`` tensor.
"""
from __future__ import annotations

import numbers
import os
import warnings
from typing import Tuple

import torch
from torch import Tensor

try:  # the compiled extension is optional: the reference is the fallback
    from yolact_lite import _C
except ImportError as exc:  # pragma: no cover - depends on the build
    _C = None
    _C_IMPORT_ERROR: Exception | None = exc
else:
    _C_IMPORT_ERROR = None

NmsOutput = Tuple[Tensor, Tensor, Tensor]

FORCE_REFERENCE_ENV = "YOLACT_LITE_FORCE_REFERENCE_NMS"
_warned_missing_extension = False
_warned_missing_cuda_kernel = False


def extension_available() -> bool:
    """True if the compiled extension ``yolact_lite._C`` could be imported."""
    return _C is not None


def cuda_extension_available() -> bool:
    """True if the compiled extension includes the CUDA kernel."""
    return _C is not None and bool(_C.with_cuda())


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
def _check_int(fn: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _all_finite(t: Tensor) -> bool:
    # min and max propagate NaN and expose +-inf: one fast reduction instead
    # of materialising isfinite() over every element
    return t.numel() == 0 or bool(torch.isfinite(torch.stack(torch.aminmax(t))).all())


def _prepare(boxes, scores, iou_threshold, top_k, max_detections, name="fast_nms"):
    """Validate arguments; return float32 contiguous (boxes, scores) and the
    threshold rounded to float32 (so every backend compares the same value)."""
    if not isinstance(boxes, Tensor) or not isinstance(scores, Tensor):
        raise TypeError(f"{name}: boxes and scores must be torch.Tensor, got "
                        f"{type(boxes).__name__} and {type(scores).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}: boxes must have shape [P, 4], got {list(boxes.shape)}")
    if scores.dim() != 2:
        raise ValueError(f"{name}: scores must have shape [C, P], got {list(scores.shape)}")
    if scores.shape[1] != boxes.shape[0]:
        raise ValueError(f"{name}: scores [C, P] = {list(scores.shape)} and boxes [P, 4] = "
                         f"{list(boxes.shape)} disagree on P")
    if not boxes.is_floating_point() or not scores.is_floating_point():
        raise ValueError(f"{name}: boxes and scores must be floating point, got "
                         f"{boxes.dtype} and {scores.dtype}")
    if boxes.device != scores.device:
        raise ValueError(f"{name}: boxes and scores must be on the same device, got "
                         f"{boxes.device} and {scores.device}")
    try:
        thr = float(iou_threshold)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: iou_threshold must be a number, got {iou_threshold!r}") from None
    if not thr >= 0.0:  # also rejects NaN
        raise ValueError(f"{name}: iou_threshold must be >= 0, got {iou_threshold!r}")
    _check_int(name, "top_k", top_k, 1)
    _check_int(name, "max_detections", max_detections, 1)
    boxes32 = boxes.to(torch.float32).contiguous()
    scores32 = scores.to(torch.float32).contiguous()
    for label, t in (("scores", scores32), ("boxes", boxes32)):
        if not _all_finite(t):
            raise ValueError(f"{name}: {label} contain NaN/inf (or values beyond float32 "
                             "range); clean them before NMS")
    thr32 = float(torch.tensor(thr, dtype=torch.float32))
    return boxes32, scores32, thr32


def _empty(device, score_dtype) -> NmsOutput:
    long = torch.empty(0, dtype=torch.long, device=device)
    return long, long.clone(), torch.empty(0, dtype=score_dtype, device=device)


def _finish(result: NmsOutput, scores: Tensor) -> NmsOutput:
    idx, cls, sc = result
    if scores.dtype != torch.float32:  # return the caller's exact values/dtype
        sc = scores[cls, idx]
    return idx, cls, sc


# --------------------------------------------------------------------------
# pure torch reference
# --------------------------------------------------------------------------
def _pairwise_iou(b: Tensor) -> Tensor:
    """IoU of ``b[..., n, 4]`` with itself: ``[..., n, n]`` (see module doc)."""
    x1, y1, x2, y2 = b.unbind(-1)
    area = (x2 - x1) * (y2 - y1)
    w = (torch.minimum(x2[..., :, None], x2[..., None, :])
         - torch.maximum(x1[..., :, None], x1[..., None, :])).clamp(min=0)
    h = (torch.minimum(y2[..., :, None], y2[..., None, :])
         - torch.maximum(y1[..., :, None], y1[..., None, :])).clamp(min=0)
    inter = w * h
    union = area[..., :, None] + area[..., None, :] - inter
    pos = union > 0
    iou = inter / torch.where(pos, union, torch.ones_like(union))
    return torch.where(pos, iou, torch.zeros_like(iou))


def _fast_keep(cand_boxes: Tensor, thr: float) -> Tensor:
    """``[G, k, 4]`` candidates in rank order -> keep mask ``[G, k]``."""
    iou = _pairwise_iou(cand_boxes).triu_(diagonal=1)  # row i < column j
    return iou.amax(dim=1) <= thr


def _reference_core(boxes: Tensor, scores: Tensor, thr: float, top_k: int,
                    max_detections: int, cross_class: bool) -> NmsOutput:
    num_classes, num_priors = scores.shape
    k = min(top_k, num_priors)
    if cross_class:
        cls = scores.argmax(dim=0)  # first maximum: lowest class id on ties
        best = scores.gather(0, cls[None]).squeeze(0)
        order = best.sort(descending=True, stable=True).indices[:k]
        keep = _fast_keep(boxes[order][None], thr)[0]
        idx = order[keep]
        return idx, cls[idx], best[idx]
    sorted_scores, order = scores.sort(dim=1, descending=True, stable=True)
    top_scores, top_idx = sorted_scores[:, :k], order[:, :k]
    keep = _fast_keep(boxes[top_idx], thr)  # [C, k]
    cls_grid = torch.arange(num_classes, device=scores.device)[:, None].expand(num_classes, k)
    # boolean indexing walks class-major and in rank order, so a stable sort
    # breaks score ties by (class id, prior index)
    kept_scores, kept_idx, kept_cls = top_scores[keep], top_idx[keep], cls_grid[keep]
    final = kept_scores.sort(descending=True, stable=True).indices[:max_detections]
    return kept_idx[final], kept_cls[final], kept_scores[final]


@torch.no_grad()
def fast_nms_reference(boxes: Tensor, scores: Tensor, iou_threshold: float = 0.5,
                       top_k: int = 200, max_detections: int = 100,
                       cross_class: bool = False) -> NmsOutput:
    """Fast NMS in plain (batched) torch ops; the specification of
    :func:`fast_nms` and its fallback. Same arguments, result and rules.

    Builds the ``[C, k, k]`` IoU tensor, keeps its strict upper triangle
    (``triu(diagonal=1)``) and keeps column ``j`` iff its max is
    ``<= iou_threshold``.
    """
    boxes32, scores32, thr = _prepare(boxes, scores, iou_threshold, top_k, max_detections)
    if scores32.numel() == 0:
        return _empty(scores.device, scores.dtype)
    out = _reference_core(boxes32, scores32, thr, int(top_k), int(max_detections),
                          bool(cross_class))
    return _finish(out, scores)


# --------------------------------------------------------------------------
# dispatcher
# --------------------------------------------------------------------------
def _warn_once_missing_extension() -> None:
    global _warned_missing_extension
    if not _warned_missing_extension:
        _warned_missing_extension = True
        warnings.warn(
            "yolact_lite: the compiled extension yolact_lite._C is not built "
            f"({_C_IMPORT_ERROR}); fast_nms falls back to the slower pure-torch "
            "reference. Build it with `pip install --no-build-isolation -e .` "
            "from the repository root.", RuntimeWarning, stacklevel=3)


def _warn_once_missing_cuda_kernel() -> None:
    global _warned_missing_cuda_kernel
    if not _warned_missing_cuda_kernel:
        _warned_missing_cuda_kernel = True
        warnings.warn(
            "yolact_lite: yolact_lite._C was built without its CUDA kernel; fast_nms "
            "on CUDA tensors uses the pure-torch reference. Rebuild with nvcc "
            "available (CUDA_HOME set) via `pip install --no-build-isolation -e .`.",
            RuntimeWarning, stacklevel=3)


@torch.no_grad()
def fast_nms(boxes: Tensor, scores: Tensor, iou_threshold: float = 0.5,
             top_k: int = 200, max_detections: int = 100,
             cross_class: bool = False) -> NmsOutput:
    """Fast NMS of YOLACT (see the module docstring for the exact rules).

    Args:
        boxes: ``[P, 4]`` floating tensor of ``(x1, y1, x2, y2)`` boxes.
        scores: ``[C, P]`` floating tensor of class scores, same device.
        iou_threshold: a candidate is dropped when its IoU with any higher
            ranked candidate (of the same class, unless ``cross_class``) is
            ``> iou_threshold``. Must be ``>= 0``.
        top_k: candidates per class (per image if ``cross_class``), ``>= 1``.
        max_detections: cap on the returned detections in per-class mode
            (ignored when ``cross_class=True``, as in the original).
        cross_class: one NMS over all classes using each box's best class.

    Returns:
        ``(prior_index [N] int64, class_id [N] int64, score [N])`` sorted by
        score descending (ties: class id, then prior index, ascending; in
        cross-class mode: prior index). ``score`` has the dtype of ``scores``.

    Raises:
        ValueError: bad shapes/dtypes/devices/arguments, NaN/inf in inputs.

    Uses the compiled extension when built (CPU kernel, CUDA kernel for CUDA
    tensors), else :func:`fast_nms_reference` with a one-time warning. Set
    ``YOLACT_LITE_FORCE_REFERENCE_NMS=1`` to always use the reference.
    """
    boxes32, scores32, thr = _prepare(boxes, scores, iou_threshold, top_k, max_detections)
    if scores32.numel() == 0:
        return _empty(scores.device, scores.dtype)
    top_k, max_detections, cross_class = int(top_k), int(max_detections), bool(cross_class)
    kernel = None
    if os.environ.get(FORCE_REFERENCE_ENV, "0") in ("", "0"):
        if _C is None:
            _warn_once_missing_extension()
        elif boxes32.device.type == "cpu":
            kernel = _C.fast_nms_cpu
        elif boxes32.device.type == "cuda":
            if _C.with_cuda():
                kernel = _C.fast_nms_cuda
            else:
                _warn_once_missing_cuda_kernel()
    if kernel is None:
        out = _reference_core(boxes32, scores32, thr, top_k, max_detections, cross_class)
    else:
        out = kernel(boxes32, scores32, thr, top_k, max_detections, cross_class)
    return _finish(out, scores)


# --------------------------------------------------------------------------
# traditional NMS
# --------------------------------------------------------------------------
@torch.no_grad()
def traditional_nms(boxes: Tensor, scores: Tensor, iou_threshold: float = 0.5,
                    candidate_threshold: float = 0.05, max_detections: int = 100,
                    *, top_k: int | None = None) -> NmsOutput:
    """Classic sequential NMS per class (``torchvision.ops.batched_nms``).

    Candidates are the (class, box) pairs with ``score > candidate_threshold``
    (optionally only each class's ``top_k`` best); suppressed boxes do not
    suppress others. Same shapes and result format as :func:`fast_nms`
    (at most ``max_detections`` results, sorted by score descending; the order
    of exactly equal scores follows torchvision and is not specified).
    """
    from torchvision.ops import batched_nms

    boxes32, scores32, thr = _prepare(boxes, scores, iou_threshold,
                                      1 if top_k is None else top_k, max_detections,
                                      name="traditional_nms")
    if scores32.numel() == 0:
        return _empty(scores.device, scores.dtype)
    num_classes, num_priors = scores32.shape
    if top_k is not None and top_k < num_priors:
        cand_scores, cand_idx = scores32.topk(int(top_k), dim=1)
    else:
        cand_scores = scores32
        cand_idx = torch.arange(num_priors, device=scores32.device).expand(num_classes, -1)
    cand_cls = torch.arange(num_classes, device=scores32.device)[:, None].expand_as(cand_idx)
    mask = cand_scores > candidate_threshold
    cand_scores, cand_idx, cand_cls = cand_scores[mask], cand_idx[mask], cand_cls[mask]
    keep = batched_nms(boxes32[cand_idx], cand_scores, cand_cls, thr)[:max_detections]
    return _finish((cand_idx[keep], cand_cls[keep], cand_scores[keep]), scores)
