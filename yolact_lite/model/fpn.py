"""Feature pyramid: C3..C5 (or C2..C5) -> P3..P5 (or P2..P5) top-down, plus P6, P7 by
stride-2 convs."""

from __future__ import annotations

from typing import List, Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class FPN(nn.Module):
    """YOLACT's FPN.

    Lateral 1x1 convs on C3..C5; top-down, the coarser MERGED map (before its output conv) is
    upsampled bilinearly to the finer lateral's exact size and added; a 3x3 conv + ReLU makes
    each of P3..P5; P6 is a stride-2 3x3 conv on the post-ReLU P5, P7 likewise on P6 (no ReLU).

    Input: [C3, C4, C5] (or from C2). Output: [P3, ..., P(5+num_downsample)] (or from P2),
    each [B, F, H_l, W_l]. Modules are indexed fine-to-coarse: ``lateral[0]`` acts on the
    finest input.
    """

    def __init__(self, in_channels: Sequence[int], num_features: int = 256, num_downsample: int = 2):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, num_features, 1) for c in in_channels)
        self.output = nn.ModuleList(
            nn.Conv2d(num_features, num_features, 3, padding=1) for _ in in_channels
        )
        self.downsample = nn.ModuleList(
            nn.Conv2d(num_features, num_features, 3, stride=2, padding=1) for _ in range(num_downsample)
        )

    def forward(self, features: List[Tensor]) -> List[Tensor]:
        merged = [None] * len(features)
        top = None
        for i in range(len(features) - 1, -1, -1):
            lateral = self.lateral[i](features[i])
            if top is not None:
                lateral = lateral + F.interpolate(
                    top, size=lateral.shape[-2:], mode="bilinear", align_corners=False
                )
            merged[i] = top = lateral
        outs = [F.relu(conv(m)) for conv, m in zip(self.output, merged)]
        for conv in self.downsample:
            outs.append(conv(outs[-1]))
        return outs
