"""Detection for one image: candidate filter, NMS, optional score threshold (the original
YOLACT's Detect on the network-output contract of :mod:`yolact_lite.model.outputs`).

Rules kept from the original (docs/original_yolact.md, section 2): a prior is a candidate iff
its best FOREGROUND softmax score is ``> candidate_threshold``; all C class scores of a
candidate stay in play, and there is NO second per-class threshold (a detection may survive
Fast NMS with a score below ``candidate_threshold``); ``detection_threshold`` filters on the
box score.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from ..config import InferenceConfig
from ..ops import fast_nms, traditional_nms

__all__ = ["detect", "select_detections", "empty_detection"]


def empty_detection(num_prototypes: int, device=None, dtype=torch.float32) -> Dict[str, Tensor]:
    """What :func:`detect` returns when nothing is found."""
    return {
        "boxes_rel": torch.zeros(0, 4, device=device, dtype=dtype),
        "classes": torch.zeros(0, dtype=torch.int64, device=device),
        "scores": torch.zeros(0, device=device, dtype=dtype),
        "coefficients": torch.zeros(0, num_prototypes, device=device, dtype=dtype),
        "prior_index": torch.zeros(0, dtype=torch.int64, device=device),
    }


@torch.no_grad()
def detect(outputs: Dict[str, Tensor], config: InferenceConfig, nms_fn=None) -> Dict[str, Tensor]:
    """The original's Detect for ONE image.

    Args:
        outputs: the network-output contract of one image
            (:func:`yolact_lite.model.outputs.decode_outputs`): ``boxes`` [P, 4] decoded
            xyxy, ``scores`` [P, C] softmax foreground scores, ``coefficients`` [P, k]. A
            leading batch dimension of 1 is accepted.
        config: ``candidate_threshold``, ``nms`` ("fast" | "cross_class" | "traditional"),
            ``nms_iou``, ``nms_top_k``, ``max_detections``, ``detection_threshold``.
        nms_fn: replaces :func:`~yolact_lite.ops.fast_nms` for the "fast"/"cross_class"
            modes (same signature; e.g. ``fast_nms_reference`` in benchmarks).

    Returns:
        dict, N detections sorted by score descending:
        ``boxes_rel`` [N, 4] xyxy relative to the network input (not clipped),
        ``classes`` [N] int64 (0..C-1, background removed), ``scores`` [N],
        ``coefficients`` [N, k], ``prior_index`` [N] int64.
    """
    if "boxes" not in outputs:
        raise ValueError("detect() takes the network-output contract (boxes, scores, coefficients): "
                         "decode raw model outputs with yolact_lite.model.outputs.decode_outputs first")
    boxes = _unbatch(outputs["boxes"])
    foreground = _unbatch(outputs["scores"]).float()  # [P, C]
    coefficients = _unbatch(outputs["coefficients"])
    best = foreground.amax(dim=1)
    candidates = torch.nonzero(best > config.candidate_threshold).squeeze(1)  # [Pc]
    if candidates.numel() == 0:
        return empty_detection(coefficients.shape[-1], coefficients.device, torch.float32)

    boxes = boxes[candidates].float()  # [Pc, 4]
    finite = torch.isfinite(boxes).all(dim=1)
    if not bool(finite.all()):
        # A diverged (or fp16-overflowing) network: such priors cannot be placed; drop them.
        candidates, boxes = candidates[finite], boxes[finite]
        if candidates.numel() == 0:
            return empty_detection(coefficients.shape[-1], coefficients.device, torch.float32)
    scores = foreground[candidates].t().contiguous()  # [C, Pc]
    return select_detections(boxes, scores, candidates, coefficients, config, nms_fn)


def select_detections(boxes: Tensor, scores: Tensor, candidates: Tensor, coefficients: Tensor,
                      config: InferenceConfig, nms_fn=None) -> Dict[str, Tensor]:
    """The part of :func:`detect` after the candidate filter: NMS, optional score
    threshold, result dict.

    ``boxes`` [Pc, 4] decoded xyxy of the candidates, ``scores`` [C, Pc] their foreground
    scores, ``candidates`` [Pc] their prior indices, ``coefficients`` [P, k] of all priors.
    """
    if config.nms == "traditional":
        index, classes, kept_scores = traditional_nms(
            boxes, scores, config.nms_iou, candidate_threshold=config.candidate_threshold,
            max_detections=config.max_detections,
        )
    else:
        nms = nms_fn or fast_nms
        index, classes, kept_scores = nms(
            boxes, scores, config.nms_iou, config.nms_top_k, config.max_detections,
            cross_class=config.nms == "cross_class",
        )
    if config.detection_threshold > 0:
        keep = kept_scores > config.detection_threshold
        index, classes, kept_scores = index[keep], classes[keep], kept_scores[keep]
    prior_index = candidates[index]
    return {
        "boxes_rel": boxes[index],
        "classes": classes,
        "scores": kept_scores,
        "coefficients": coefficients[prior_index].float(),
        "prior_index": prior_index,
    }


def _unbatch(x: Tensor) -> Tensor:
    if x.dim() == 3:
        if x.shape[0] != 1:
            raise ValueError(f"detect() takes the outputs of one image; got a batch of {x.shape[0]}")
        return x[0]
    return x
