"""Network outputs -> :class:`~yolact_lite.structures.Detections` (the original's Detect +
postprocess, reorganised so that no full-resolution work is done for dropped detections).

Two pure functions, one image at a time:

* :func:`detect`: softmax, candidate filter, box decoding, NMS, optional score threshold;
* :func:`assemble_detections`: mask assembly at prototype resolution for the kept
  detections, crop, YOLACT++ re-scoring, mapping masks and boxes to the original image.

Rules kept from the original (docs/original_yolact.md, section 2):

* a prior is a candidate iff its best FOREGROUND softmax score is ``> candidate_threshold``; all C
  class scores of a candidate stay in play, and there is NO second per-class threshold
  (a detection may survive Fast NMS with a score below ``candidate_threshold``);
* masks = sigmoid(prototypes @ coefficients^T), cropped with the predicted boxes at
  prototype resolution (``crop_padding`` pixels each side; ``crop_mode`` "hard" as the
  original, or "soft" feathered edges, or "none"), bilinearly resized
  (align_corners=False) straight to the original image size, thresholded ``> mask_threshold``;
  with ``clip_to_box`` each mask is then also cut to its box at image resolution (not in the
  original);
* ``detection_threshold`` filters on the box score, before re-scoring.

Deliberate differences:

* boxes stay float pixels (the original truncates them to integers);
* with a letterboxed input the prototype rows/columns covering the padding are cut first and
  the resize maps image pixels to prototype coordinates exactly (the original has no letterbox);
* the resize is computed only inside each detection's crop footprint (everything outside is
  exactly zero, so below any threshold >= 0): same values as resizing the whole map, a
  fraction of the work. Without cropping the whole map is resized in chunks.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..box_ops import decode
from ..config import InferenceConfig
from ..masks import assemble_masks, crop_region, soft_crop_region
from ..ops import fast_nms, traditional_nms
from ..structures import Detections, InputGeometry

__all__ = ["NETWORK_OUTPUTS", "decode_outputs", "detect", "select_detections", "assemble_detections",
           "outputs_for_image", "empty_detection"]

_CHUNK = 16  # masks resized at once on the un-cropped path (bounds peak memory)


def outputs_for_image(outputs: Dict[str, Tensor], index: int) -> Dict[str, Tensor]:
    """Slice image ``index`` out of a batched network output (``priors`` is shared)."""
    return {
        key: (value if key == "priors" else value[index])
        for key, value in outputs.items()
        if isinstance(value, Tensor)
    }


def empty_detection(num_prototypes: int, device=None, dtype=torch.float32) -> Dict[str, Tensor]:
    """What :func:`detect` returns when nothing is found."""
    return {
        "boxes_rel": torch.zeros(0, 4, device=device, dtype=dtype),
        "classes": torch.zeros(0, dtype=torch.int64, device=device),
        "scores": torch.zeros(0, device=device, dtype=dtype),
        "coefficients": torch.zeros(0, num_prototypes, device=device, dtype=dtype),
        "prior_index": torch.zeros(0, dtype=torch.int64, device=device),
    }


NETWORK_OUTPUTS = ("boxes", "scores", "coefficients", "prototypes")


def decode_outputs(raw: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The model's raw outputs -> the network-output contract every backend returns in eval.

    Args:
        raw: :class:`yolact_lite.model.Yolact` outputs: ``box_deltas`` [B, P, 4],
            ``class_logits`` [B, P, C+1], ``coefficients`` [B, P, k], ``prototypes``
            [B, Hp, Wp, k], ``priors`` [P, 4] (the batch dimension may be absent).

    Returns:
        float32 ``boxes`` [B, P, 4] decoded xyxy relative to the input (not clipped),
        ``scores`` [B, P, C] softmax foreground scores (background column dropped),
        ``coefficients`` [B, P, k], ``prototypes`` [B, Hp, Wp, k]. Softmax and decoding run
        in float32 whatever the network's precision (a bf16/fp16 softmax over 81 classes
        loses the 0.05 candidate edge).
    """
    out = {
        "boxes": decode(raw["box_deltas"].float(), raw["priors"].float()),
        "scores": torch.softmax(raw["class_logits"].float(), dim=-1)[..., 1:],
        "coefficients": raw["coefficients"].float(),
    }
    if "prototypes" in raw:  # detect() alone needs no prototypes
        out["prototypes"] = raw["prototypes"].float()
    return out


@torch.no_grad()
def detect(outputs: Dict[str, Tensor], config: InferenceConfig, nms_fn=None) -> Dict[str, Tensor]:
    """The original's Detect for ONE image.

    Args:
        outputs: the network-output contract of one image (see :func:`decode_outputs`):
            ``boxes`` [P, 4] decoded xyxy, ``scores`` [P, C] softmax foreground scores,
            ``coefficients`` [P, k]; the model's raw outputs (``box_deltas``,
            ``class_logits``, ``priors``) are decoded first. A leading batch dimension of 1
            is accepted.
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
        outputs = decode_outputs(outputs)
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


@torch.no_grad()
def assemble_detections(
    det: Dict[str, Tensor],
    prototypes: Tensor,
    geometry: InputGeometry,
    config: InferenceConfig,
    mask_iou_head: Optional[torch.nn.Module] = None,
    class_names: Sequence[str] = (),
    top_k: Optional[int] = None,
    display_threshold: Optional[float] = None,
    roi_resize: bool = True,
) -> Detections:
    """Masks and pixel boxes for the detections of one image.

    Args:
        det: output of :func:`detect` (N detections).
        prototypes: [Hp, Wp, k] (a leading batch dimension of 1 is accepted).
        geometry: where the image lies in the network input (square stretch or letterbox).
        config: ``crop_mode``, ``crop_padding``, ``crop_softness``, ``clip_to_box``,
            ``mask_threshold``, ``rescore_masks``.
        mask_iou_head: YOLACT++ re-scoring net ([M, 1, Hp, Wp] -> [M, C]); with
            ``config.rescore_masks`` it sets ``mask_scores = scores x predicted IoU`` of each
            detection's class (computed on the cropped soft masks, as the original).
        class_names: stored in the result.
        top_k, display_threshold: optional display filters applied BEFORE the full-resolution work:
            keep detections whose ranking score (``mask_scores``) is ``> display_threshold`` and
            the ``top_k`` best of those; survivors keep their order.
        roi_resize: on CPU, resize only inside each crop footprint (same masks; False
            resizes whole maps like the original, for comparisons). GPUs always resize whole
            maps (one kernel beats a hundred small ones there).

    Returns:
        :class:`Detections` with boxes [M, 4] float pixels (clamped to the image, NOT
        truncated), masks [M, orig_h, orig_w] bool, scores, classes, mask_scores, and
        proto_masks [M, rows, cols] (the cropped soft masks before the resize); M <= N.
    """
    protos = prototypes[0] if prototypes.dim() == 4 else prototypes
    h, w = geometry.orig_h, geometry.orig_w
    names = list(class_names)
    scores = det["scores"]
    if scores.numel() == 0:
        return Detections.empty(h, w, names, proto_size=geometry.proto_crop(*protos.shape[:2]))
    boxes_rel = det["boxes_rel"]
    classes = det["classes"]

    hp, wp = int(protos.shape[0]), int(protos.shape[1])
    # one matmul + sigmoid for the kept detections only: [N, Hp, Wp]
    soft = assemble_masks(protos.float(), det["coefficients"].float()).contiguous()  # [N, Hp, Wp]
    region = None
    if config.crop_mode == "hard":
        region = crop_region(boxes_rel, hp, wp, config.crop_padding)
        soft = soft * region
    elif config.crop_mode == "soft":
        weight = soft_crop_region(boxes_rel, hp, wp, config.crop_padding, config.crop_softness)
        soft = soft * weight
        # where weight <= threshold the mask (<= 1) cannot pass it: a valid footprint for the
        # ROI resize (no output pixel whose four taps all lie outside it can be above)
        region = weight > config.mask_threshold

    mask_scores = scores
    if mask_iou_head is not None and config.rescore_masks:
        param = next(mask_iou_head.parameters(), None)
        inp = soft[:, None] if param is None else soft[:, None].to(param.dtype)
        predicted_iou = mask_iou_head(inp).float()  # [N, C]
        mask_scores = scores * predicted_iou.gather(1, classes[:, None]).squeeze(1)

    rows, cols = geometry.proto_crop(hp, wp)
    keep = _display_filter(mask_scores, top_k, display_threshold)
    if keep is not None:
        if keep.numel() == 0:
            return Detections.empty(h, w, names, proto_size=(rows, cols))
        soft, boxes_rel, classes = soft[keep], boxes_rel[keep], classes[keep]
        scores, mask_scores = scores[keep], mask_scores[keep]
        region = region[keep] if region is not None else None

    soft = soft[:, :rows, :cols]
    if region is not None and roi_resize and soft.device.type == "cpu":
        masks = _resize_threshold_roi(soft, region[:, :rows, :cols], geometry, hp, wp, config.mask_threshold)
    else:
        masks = _resize_threshold_full(soft, geometry, hp, wp, config.mask_threshold)

    boxes = geometry.boxes_to_image(boxes_rel.float())
    if config.clip_to_box:
        image_rel = boxes / torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        masks &= crop_region(image_rel, h, w, padding_px=0.5)
    return Detections(
        boxes=boxes, scores=scores, classes=classes, masks=masks,
        mask_scores=mask_scores, class_names=names, proto_masks=soft,
    )


def _display_filter(ranking: Tensor, top_k: Optional[int], display_threshold: Optional[float]) -> Optional[Tensor]:
    """Indices (ascending) of the detections kept by the display filters, or None for all."""
    if top_k is None and (display_threshold is None or display_threshold <= 0):
        return None
    keep = torch.arange(ranking.numel(), device=ranking.device)
    if display_threshold is not None and display_threshold > 0:
        keep = keep[ranking > display_threshold]
    if top_k is not None and keep.numel() > top_k:
        best = ranking[keep].topk(max(int(top_k), 0)).indices
        keep = keep[best].sort().values
    return keep


# --------------------------------------------------------------------------- resizing


def _scales(geometry: InputGeometry, hp: int, wp: int, rows: int, cols: int):
    """Prototype pixels per image pixel along y and x (source step of the resize)."""
    if geometry.is_stretch:
        # the original: F.interpolate(size=(h, w)) over the whole map
        return rows / geometry.orig_h, cols / geometry.orig_w
    # letterbox: image pixel y -> input y * content_h / orig_h -> prototype y * hp / S
    s = float(geometry.input_size)
    return geometry.content_h * hp / (s * geometry.orig_h), geometry.content_w * wp / (s * geometry.orig_w)


def _resize_threshold_full(soft: Tensor, geometry: InputGeometry, hp: int, wp: int, threshold: float) -> Tensor:
    """Resize whole [N, rows, cols] maps to the image and threshold (chunked)."""
    n, rows, cols = soft.shape
    h, w = geometry.orig_h, geometry.orig_w
    out = torch.empty(n, h, w, dtype=torch.bool, device=soft.device)
    sy, sx = _scales(geometry, hp, wp, rows, cols)
    for start in range(0, n, _CHUNK):
        chunk = soft[None, start:start + _CHUNK].contiguous()
        if geometry.is_stretch:
            up = F.interpolate(chunk, size=(h, w), mode="bilinear", align_corners=False)
        else:
            # explicit output size AND exact source scales (1 / scale = image px per proto px)
            up = torch.ops.aten.upsample_bilinear2d.default(chunk, [h, w], False, 1.0 / sy, 1.0 / sx)
        torch.gt(up[0], threshold, out=out[start:start + _CHUNK])
    return out


def _linear_taps(out_size: int, in_size: int, step: float, device):
    """Bilinear (align_corners=False) source taps for each output index, as F.interpolate:
    ``src = max((d + 0.5) * step - 0.5, 0)``, ``i0 = floor(src)``, ``i1 = min(i0 + 1, in - 1)``,
    ``w1 = src - i0``. Returns (i0, i1, w1) of length ``out_size``."""
    src = ((torch.arange(out_size, dtype=torch.float64, device=device) + 0.5) * step - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    w1 = (src - i0.double()).clamp(0, 1).float()
    return i0, i1, w1


def _span(need: Tensor) -> tuple[Tensor, Tensor]:
    """[N, L] bool with each row's True entries contiguous -> (start [N], stop [N])."""
    length = need.shape[1]
    any_ = need.any(dim=1)
    first = need.to(torch.uint8).argmax(dim=1)
    last = length - need.flip(1).to(torch.uint8).argmax(dim=1)
    return torch.where(any_, first, 0), torch.where(any_, last, 0)


def _resize_threshold_roi(soft: Tensor, region: Tensor, geometry: InputGeometry, hp: int, wp: int,
                          threshold: float) -> Tensor:
    """Like :func:`_resize_threshold_full`, computed only where a mask can be non-zero.

    Outside its crop region a mask is exactly 0 at prototype resolution, so an output pixel
    whose four bilinear taps all lie outside the region is 0 (not above a threshold >= 0).
    For each detection only the output rows/columns whose taps touch the region are computed.
    """
    n, rows, cols = soft.shape
    h, w = geometry.orig_h, geometry.orig_w
    device = soft.device
    sy, sx = _scales(geometry, hp, wp, rows, cols)
    y0, y1, wy = _linear_taps(h, rows, sy, device)
    x0, x1, wx = _linear_taps(w, cols, sx, device)
    # proto row / column span of each crop region
    r_start, r_stop = _span(region.any(dim=2))  # [N]
    c_start, c_stop = _span(region.any(dim=1))
    # output rows whose taps touch [r_start, r_stop): y0 <= r_stop - 1 and y1 >= r_start
    need_y = (y0[None] < r_stop[:, None]) & (y1[None] >= r_start[:, None])
    need_x = (x0[None] < c_stop[:, None]) & (x1[None] >= c_start[:, None])
    ys, ye = _span(need_y)
    xs, xe = _span(need_x)
    bounds = torch.stack([ys, ye, xs, xe, r_start, r_stop, c_start, c_stop], 1).tolist()

    out = torch.zeros(n, h, w, dtype=torch.bool, device=device)
    for i, (a, b, c, d, *_) in enumerate(bounds):
        if b <= a or d <= c:
            continue
        # taps of the ROI are inside [ra - 1, rb] (clamped); slice the map to what is read
        lo_r, hi_r = int(y0[a]), int(y1[b - 1]) + 1
        lo_c, hi_c = int(x0[c]), int(x1[d - 1]) + 1
        m = soft[i, lo_r:hi_r, lo_c:hi_c]
        top = m.index_select(0, y0[a:b] - lo_r)
        bottom = m.index_select(0, y1[a:b] - lo_r)
        rows_interp = torch.lerp(top, bottom, wy[a:b, None])  # [roi_h, hi_c - lo_c]
        left = rows_interp.index_select(1, x0[c:d] - lo_c)
        right = rows_interp.index_select(1, x1[c:d] - lo_c)
        values = torch.lerp(left, right, wx[None, c:d])
        out[i, a:b, c:d] = values > threshold
    return out
