"""Detections of one image -> :class:`~yolact_lite.structures.Detections` with
full-resolution masks (the original's postprocess, reorganised so that no full-resolution
work is done for dropped detections).

:func:`assemble_detections`: mask assembly at prototype resolution for the kept detections
of :func:`yolact_lite.inference.detection.detect`, crop, YOLACT++ re-scoring, display
filters, mapping masks and boxes to the original image.

Rules kept from the original (docs/original_yolact.md, section 2): masks =
sigmoid(prototypes @ coefficients^T), cropped with the predicted boxes at prototype resolution
(``crop_padding`` pixels each side; ``crop_mode`` "hard" as the original, or "soft" feathered
edges, or "none"), bilinearly resized (align_corners=False) straight to the original image
size, thresholded ``> mask_threshold``; with ``clip_to_box`` each mask is then also cut to its
box at image resolution (not in the original).

Deliberate differences:

* boxes stay float pixels (the original truncates them to integers);
* with a letterboxed input the prototype rows/columns covering the padding are cut first and
  the resize maps image pixels to prototype coordinates exactly (the original has no letterbox);
* the resize is computed only inside each detection's crop footprint (everything outside is
  exactly zero, so below any threshold >= 0): same values as resizing the whole map, a
  fraction of the work. Without cropping the whole map is resized in chunks.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import InferenceConfig
from ..masks import assemble_masks, crop_region, soft_crop_region
from ..structures import Detections, InputGeometry

__all__ = ["assemble_detections", "assemble_low_res", "finish_masks", "PendingMasks", "display_filter"]

_CHUNK = 16  # masks resized at once on the un-cropped path (bounds peak memory)


@dataclass
class PendingMasks:
    """What the full-resolution masks of low-resolution detections still need: made by
    :func:`assemble_low_res`, spent by :func:`finish_masks`."""

    region: Optional[Tensor]  # [N, rows, cols] bool crop footprints (None: whole maps)
    geometry: InputGeometry
    proto_size: Tuple[int, int]  # (Hp, Wp) of the prototypes
    config: InferenceConfig


@torch.no_grad()
def assemble_detections(det: Dict[str, Tensor], prototypes: Tensor, geometry: InputGeometry, config: InferenceConfig,
                        mask_iou_head: Optional[torch.nn.Module] = None, class_names: Sequence[str] = (),
                        top_k: Optional[int] = None, display_threshold: Optional[float] = None,
                        roi_resize: bool = True) -> Detections:
    """Masks and pixel boxes for the detections of one image.

    Args:
        det: output of :func:`~yolact_lite.inference.detection.detect` (N detections).
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
    low, pending = assemble_low_res(det, prototypes, geometry, config, mask_iou_head, class_names, top_k,
                                    display_threshold, roi_resize)
    return finish_masks(low, pending)


@torch.no_grad()
def assemble_low_res(det: Dict[str, Tensor], prototypes: Tensor, geometry: InputGeometry, config: InferenceConfig,
                     mask_iou_head: Optional[torch.nn.Module] = None, class_names: Sequence[str] = (),
                     top_k: Optional[int] = None, display_threshold: Optional[float] = None,
                     roi_resize: bool = True) -> Tuple[Detections, PendingMasks]:
    """:func:`assemble_detections` up to, not including, the full-resolution masks: the
    :class:`Detections` hold boxes, scores, classes, mask_scores and ``proto_masks``, and
    ``masks`` is an all-False view of shape [M, orig_h, orig_w] that owns no memory. Hand
    them to :func:`finish_masks` with the rows that need real masks (a tracker matches on
    ``proto_masks``, so only what is drawn or written needs the resize)."""
    protos = prototypes[0] if prototypes.dim() == 4 else prototypes
    h, w = geometry.orig_h, geometry.orig_w
    names = list(class_names)
    hp, wp = int(protos.shape[0]), int(protos.shape[1])
    rows, cols = geometry.proto_crop(hp, wp)
    scores, boxes_rel, classes = det["scores"], det["boxes_rel"], det["classes"]
    pending = PendingMasks(None, geometry, (hp, wp), config)
    if scores.numel() == 0:
        return Detections.empty(h, w, names, proto_size=(rows, cols)), pending

    soft, region = _cropped_soft_masks(protos, det["coefficients"], boxes_rel, config)
    mask_scores = _rescored(soft, scores, classes, mask_iou_head) if config.rescore_masks else scores
    keep = display_filter(mask_scores, top_k, display_threshold)
    if keep is not None:
        if keep.numel() == 0:
            return Detections.empty(h, w, names, proto_size=(rows, cols)), pending
        soft, boxes_rel, classes = soft[keep], boxes_rel[keep], classes[keep]
        scores, mask_scores = scores[keep], mask_scores[keep]
        region = region[keep] if region is not None else None

    soft = soft[:, :rows, :cols]
    pending.region = None if region is None or not roi_resize else region[:, :rows, :cols]
    no_masks = torch.zeros((), dtype=torch.bool, device=soft.device).expand(soft.shape[0], h, w)
    low = Detections(boxes=geometry.boxes_to_image(boxes_rel.float()), scores=scores, classes=classes,
                     masks=no_masks, mask_scores=mask_scores, class_names=names, proto_masks=soft)
    return low, pending


@torch.no_grad()
def finish_masks(low: Detections, pending: PendingMasks, keep: Optional[Tensor] = None) -> Detections:
    """The detections of :func:`assemble_low_res` (the ``keep`` rows, an index tensor in the
    order wanted; None: all) with their full-resolution masks."""
    region = pending.region
    if keep is not None:
        low = low.select(keep)
        region = None if region is None else region[keep]
    if len(low) == 0:
        return low
    low.masks = _image_masks(low.proto_masks, region, low.boxes, pending.geometry, pending.proto_size,
                             pending.config)
    return low


def _cropped_soft_masks(protos: Tensor, coefficients: Tensor, boxes_rel: Tensor,
                        config: InferenceConfig) -> Tuple[Tensor, Optional[Tensor]]:
    """Soft masks [N, Hp, Wp] of the detections, cropped as ``config.crop_mode``, and the
    footprint [N, Hp, Wp] bool outside which a mask cannot pass the threshold (None: no crop)."""
    hp, wp = int(protos.shape[0]), int(protos.shape[1])
    # one matmul + sigmoid for the kept detections only
    soft = assemble_masks(protos.float(), coefficients.float()).contiguous()
    if config.crop_mode == "hard":
        region = crop_region(boxes_rel, hp, wp, config.crop_padding)
        return soft * region, region
    if config.crop_mode == "soft":
        weight = soft_crop_region(boxes_rel, hp, wp, config.crop_padding, config.crop_softness)
        # where weight <= threshold the mask (<= 1) cannot pass it: a valid footprint for the
        # ROI resize (no output pixel whose four taps all lie outside it can be above)
        return soft * weight, weight > config.mask_threshold
    return soft, None


def _image_masks(soft: Tensor, region: Optional[Tensor], boxes: Tensor, geometry: InputGeometry,
                 proto_size: Tuple[int, int], config: InferenceConfig) -> Tensor:
    """Soft masks [N, rows, cols] -> thresholded masks [N, orig_h, orig_w] bool: resized only
    inside ``region`` (the crop footprints) on the CPU, whole maps otherwise; with
    ``clip_to_box`` cut to the pixel ``boxes`` [N, 4]."""
    hp, wp = proto_size
    h, w = geometry.orig_h, geometry.orig_w
    if region is not None and soft.device.type == "cpu":
        masks = _resize_threshold_roi(soft, region, geometry, hp, wp, config.mask_threshold)
    else:
        masks = _resize_threshold_full(soft, geometry, hp, wp, config.mask_threshold)
    if config.clip_to_box:
        image_rel = boxes / torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        masks &= crop_region(image_rel, h, w, padding_px=0.5)
    return masks


def _rescored(soft: Tensor, scores: Tensor, classes: Tensor, mask_iou_head: Optional[torch.nn.Module]) -> Tensor:
    """YOLACT++: score x the mask-IoU head's predicted IoU of each detection's class [N]."""
    if mask_iou_head is None:
        return scores
    param = next(mask_iou_head.parameters(), None)
    inp = soft[:, None] if param is None else soft[:, None].to(param.dtype)
    predicted_iou = mask_iou_head(inp).float()  # [N, C]
    return scores * predicted_iou.gather(1, classes[:, None]).squeeze(1)


def check_display_filters(display_threshold: Optional[float], top_k: Optional[int]) -> None:
    """ValueError unless ``display_threshold`` is None or a score in [0, 1] and ``top_k`` None
    or a count >= 1 (a NaN threshold or a top_k of 0 would silently keep all or nothing)."""
    if display_threshold is not None:
        if isinstance(display_threshold, bool) or not isinstance(display_threshold, numbers.Real) \
                or not 0.0 <= float(display_threshold) <= 1.0:
            raise ValueError(f"display_threshold must be a score in [0, 1] or None; got {display_threshold!r}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1 or None; got {top_k!r}")


def display_filter(ranking: Tensor, top_k: Optional[int], display_threshold: Optional[float]) -> Optional[Tensor]:
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
