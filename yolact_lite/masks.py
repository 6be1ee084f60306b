"""Mask assembly and cropping: the single place where prototype masks become instance masks.

Both the training loss and inference import these functions, so the crop rule used to train
is exactly the one used to predict.

Crop rule (the original's, at prototype resolution): with a box ``(x1, y1, x2, y2)`` relative
to the image and a map of ``H x W`` pixels, pixel column ``c`` survives iff
``x1*W - pad <= c < x2*W + pad`` (float bounds, the lower clamped at 0 and the upper at ``W``;
``x1``/``x2`` are swapped first if given the wrong way round); rows likewise with ``H``.
A negative ``pad`` shrinks the span (an empty span keeps nothing).

Soft crop (:func:`soft_crop_region`, inference only): the same bounds, but instead of a 0/1
cut each axis gets a product of two sigmoid ramps of width ``softness`` pixels,
``sigmoid((c + 0.5 - start) / s) * sigmoid((stop - 0.5 - c) / s)``; a bound that lies at or
beyond the map's edge (clamped by the hard rule) gives no ramp.  Each ramp is ``> 0.5`` on
the first and last pixel the hard rule keeps and ``< 0.5`` just outside them when the bounds
are whole numbers, and the weight tends to the hard crop as ``softness -> 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["assemble_mask_logits", "assemble_masks", "prototype_activity", "crop_region", "soft_crop_region",
           "crop_masks"]


def assemble_mask_logits(prototypes: Tensor, coefficients: Tensor) -> Tensor:
    """Linear combination of prototypes, before the sigmoid.

    Args:
        prototypes: ``[Hp, Wp, k]``.
        coefficients: ``[N, k]``.

    Returns:
        ``[N, Hp, Wp]`` logits: ``out[n] = sum_j prototypes[..., j] * coefficients[n, j]``.
    """
    return (prototypes @ coefficients.t()).permute(2, 0, 1)


def assemble_masks(prototypes: Tensor, coefficients: Tensor) -> Tensor:
    """``sigmoid(assemble_mask_logits(prototypes, coefficients))``: ``[N, Hp, Wp]`` in (0, 1)."""
    return torch.sigmoid(assemble_mask_logits(prototypes, coefficients))


def prototype_activity(prototypes: Tensor) -> Tensor:
    """Share of pixels where each prototype is above zero.

    A prototype whose ReLU output is zero on every pixel is dead: it adds nothing to any mask
    and gets no gradient, so it never recovers.  When all k are dead every assembled mask is
    ``sigmoid(0) = 0.5`` and nothing passes the 0.5 threshold.

    Args:
        prototypes: ``[..., k]`` (e.g. ``[B, Hp, Wp, k]``), after the ReLU.

    Returns:
        ``[k]`` float in [0, 1]; 0 for a prototype that is dead on these pixels.
    """
    k = prototypes.shape[-1]
    return (prototypes.detach().reshape(-1, k) > 0).float().mean(dim=0)


def _axis_keep(low: Tensor, high: Tensor, size: int, padding: float) -> Tensor:
    """``[N]`` relative bounds -> ``[N, size]`` bool: which pixel indices lie in the span."""
    start = (torch.minimum(low, high) * size - padding).clamp(min=0)
    stop = (torch.maximum(low, high) * size + padding).clamp(max=size)
    index = torch.arange(size, device=low.device, dtype=start.dtype)
    return (index[None, :] >= start[:, None]) & (index[None, :] < stop[:, None])


def crop_region(boxes: Tensor, height: int, width: int, padding_px: float = 1.0) -> Tensor:
    """Which pixels of an ``height x width`` map each box keeps (see the module docstring).

    Args:
        boxes: ``[N, 4]`` relative xyxy.
        height, width: size of the map the boxes are laid on.
        padding_px: padding in pixels of that map, added on every side.

    Returns:
        ``[N, height, width]`` bool.
    """
    boxes = boxes.detach()
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()  # half precision would move bounds near the far edge
    cols = _axis_keep(boxes[:, 0], boxes[:, 2], width, padding_px)  # [N, W]
    rows = _axis_keep(boxes[:, 1], boxes[:, 3], height, padding_px)  # [N, H]
    return rows[:, :, None] & cols[:, None, :]


def _axis_ramp(low: Tensor, high: Tensor, size: int, padding: float, softness: float) -> Tensor:
    """``[N]`` relative bounds -> ``[N, size]`` float weights (see the module docstring)."""
    start = torch.minimum(low, high) * size - padding
    stop = torch.maximum(low, high) * size + padding
    centre = torch.arange(size, device=low.device, dtype=start.dtype)[None, :] + 0.5
    rise = torch.sigmoid((centre - start[:, None]) / softness)
    fall = torch.sigmoid((stop[:, None] - centre) / softness)
    # a bound the hard rule clamps to the map edge is no crop edge: no feathering there
    rise = torch.where((start <= 0)[:, None], torch.ones_like(rise), rise)
    fall = torch.where((stop >= size)[:, None], torch.ones_like(fall), fall)
    return rise * fall


def soft_crop_region(boxes: Tensor, height: int, width: int, padding_px: float = 1.0,
                     softness_px: float = 1.0) -> Tensor:
    """Feathered :func:`crop_region`: per-pixel weights in (0, 1] instead of a 0/1 cut.

    Args:
        boxes: ``[N, 4]`` relative xyxy.
        height, width: size of the map the boxes are laid on.
        padding_px: padding in pixels of that map on every side (negative shrinks).
        softness_px: width (temperature) of the sigmoid ramps, pixels of that map; > 0.

    Returns:
        ``[N, height, width]`` float32 (float64 for float64 boxes): the product of the
        column ramps and the row ramps, monotone across each edge.
    """
    if softness_px <= 0:
        raise ValueError(f"softness_px must be > 0; got {softness_px}")
    boxes = boxes.detach()
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()
    cols = _axis_ramp(boxes[:, 0], boxes[:, 2], width, padding_px, softness_px)  # [N, W]
    rows = _axis_ramp(boxes[:, 1], boxes[:, 3], height, padding_px, softness_px)  # [N, H]
    return rows[:, :, None] * cols[:, None, :]


def crop_masks(masks: Tensor, boxes: Tensor, padding_px: float = 1.0) -> Tensor:
    """Zero every mask outside its box: ``masks * crop_region(boxes, H, W, padding_px)``.

    Args:
        masks: ``[N, H, W]``.
        boxes: ``[N, 4]`` relative xyxy.
        padding_px: padding in pixels of the mask map.

    Returns:
        ``[N, H, W]``, same dtype as ``masks`` (differentiable w.r.t. ``masks``).
    """
    region = crop_region(boxes, masks.shape[-2], masks.shape[-1], padding_px)
    return masks * region.to(masks.dtype)
