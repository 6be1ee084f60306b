"""Prior (anchor) boxes, generated exactly as the original YOLACT does.

For a level of conv size (H, W): positions row-major (row j outer, column i inner), centre
((i + 0.5) / W, (j + 0.5) / H) relative to the conv size; at each position the anchors run
scale-major, ratio-minor with w = s * sqrt(r) / input_size, h = s / sqrt(r) / input_size, and
in square-anchor mode (YOLACT v1 configs) h is overwritten by w.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterable, List, Sequence, Tuple

import torch
from torch import Tensor


def anchors_per_location(scales: Sequence[float], aspect_ratios: Sequence[float]) -> int:
    return len(scales) * len(aspect_ratios)


@lru_cache(maxsize=32)
def _make_priors(
    level_sizes: Tuple[Tuple[int, int], ...],
    input_size: int,
    scales: Tuple[Tuple[float, ...], ...],
    aspect_ratios: Tuple[float, ...],
    square: bool,
) -> Tensor:
    per_level = []
    for (height, width), level_scales in zip(level_sizes, scales):
        wh = []
        for s in level_scales:
            for r in aspect_ratios:
                w = s * math.sqrt(r) / input_size
                h = w if square else s / math.sqrt(r) / input_size
                wh.append((w, h))
        wh_t = torch.tensor(wh, dtype=torch.float64)  # [A, 2]
        ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(wh), 2)
        sizes = wh_t.unsqueeze(0).expand(height * width, -1, 2)
        per_level.append(torch.cat([centres, sizes], dim=-1).reshape(-1, 4))
    priors = torch.cat(per_level).to(torch.float32)
    priors.requires_grad_(False)
    return priors


def make_priors(
    level_sizes: Sequence[Tuple[int, int]],
    input_size: int,
    scales: Sequence[Sequence[float]],
    aspect_ratios: Sequence[float],
    square: bool,
) -> Tensor:
    """Priors [P, 4] as (cx, cy, w, h) relative to the input, ordered level -> position -> anchor.

    Cached by arguments (the result is shared; do not modify it in place).
    """
    return _make_priors(
        tuple((int(h), int(w)) for h, w in level_sizes),
        int(input_size),
        tuple(tuple(float(s) for s in level) for level in scales),
        tuple(float(r) for r in aspect_ratios),
        bool(square),
    )


# ----------------------------------------------------------------- scales for other input sizes

ORIGINAL_ANCHOR_SCALES = (24, 48, 96, 192, 384)  # pixels at the original 550 input, P3..P7


def anchor_scales_for(input_size: int, base: Iterable[float] = ORIGINAL_ANCHOR_SCALES,
                      reference: int = 550) -> List[List[float]]:
    """The original's rule for another input size: each scale becomes ``int(s * S / 550)``
    (truncated, as the original im400/im700 configs do), one scale per level."""
    return [[float(max(1, int(s * input_size / reference)))] for s in base]


def anchor_scales_override(input_size: int, base: Iterable[float] = ORIGINAL_ANCHOR_SCALES) -> str:
    """``model.anchors.scales=[[..],..]`` for :func:`anchor_scales_for` (a --set value)."""
    return "model.anchors.scales=[" + ",".join(f"[{int(s[0])}]" for s in anchor_scales_for(input_size, base)) + "]"

