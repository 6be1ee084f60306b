"""Mask assembly and cropping: the single place where prototype masks become instance masks.

Both the training loss and inference import these functions, so the crop rule used to train
is exactly the one used to predict.

Crop rule (the original's, at prototype resolution): with a box ``(x1, y1, x2, y2)`` relative
to the image and a map of ``H x W`` pixels, pixel column ``c`` survives iff
``x1*W - pad <= c < x2*W + pad`` (float bounds, the lower clamped at 0 and the upper at ``W``;
``x1``/``x2`` are swapped first if given the wrong way round); rows likewise with ``H``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["assemble_mask_logits", "assemble_masks", "crop_region", "crop_masks"]


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
