"""Protonet, the shared prediction head, the semantic-segmentation head, the mask-IoU head."""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ProtoNet(nn.Module):
    """k prototypes from P3: 3 x (3x3 conv + ReLU), x2 bilinear upsample, 3x3 conv + ReLU,
    1x1 conv to k, ReLU.

    Input [B, F, H, W] -> output [B, 2H, 2W, k] (channels last, as the mask assembly uses it).
    """

    def __init__(self, in_channels: int, hidden: int = 256, num_prototypes: int = 32):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else hidden, hidden, 3, padding=1) for i in range(3)
        )
        self.upsampled_conv = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.project = nn.Conv2d(hidden, num_prototypes, 1)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = F.relu(self.upsampled_conv(x))
        return F.relu(self.project(x)).permute(0, 2, 3, 1).contiguous()


class PredictionHead(nn.Module):
    """One head shared by every pyramid level: 3x3 conv + ReLU, then three parallel 3x3 convs.

    Output channels are anchor-major (channel a*4+j for boxes), so after permuting to channels
    last and flattening, predictions are ordered level -> row-major position -> anchor.
    """

    def __init__(self, in_channels: int, hidden: int, num_anchors: int, num_classes: int, num_prototypes: int):
        """``num_classes``: foreground classes C; the class conv predicts C + 1 logits (0 = background)."""
        super().__init__()
        self.num_classes = num_classes
        self.num_logits = num_classes + 1
        self.num_prototypes = num_prototypes
        self.shared_conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.box = nn.Conv2d(hidden, num_anchors * 4, 3, padding=1)
        self.cls = nn.Conv2d(hidden, num_anchors * self.num_logits, 3, padding=1)
        self.coef = nn.Conv2d(hidden, num_anchors * num_prototypes, 3, padding=1)

    @staticmethod
    def _flatten(x: Tensor, width: int) -> Tensor:
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, width)

    def forward(self, levels: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """[P3..P7] -> box deltas [B, P, 4], class logits [B, P, C+1], coefficients [B, P, k]."""
        boxes, logits, coefs = [], [], []
        for x in levels:
            x = F.relu(self.shared_conv(x))
            boxes.append(self._flatten(self.box(x), 4))
            logits.append(self._flatten(self.cls(x), self.num_logits))
            coefs.append(self._flatten(self.coef(x), self.num_prototypes))
        return torch.cat(boxes, 1), torch.cat(logits, 1), torch.tanh(torch.cat(coefs, 1))


class MaskIoUHead(nn.Module):
    """YOLACT++ fast mask re-scoring: predicted mask IoU per class from a cropped soft mask.

    Five unpadded 3x3 stride-2 convs (8..128 channels, ReLU), a 1x1 conv to C (ReLU), global
    max pool. Input [N, 1, Hp, Wp] -> output [N, C].
    """

    def __init__(self, num_classes: int):
        super().__init__()
        channels = [1, 8, 16, 32, 64, 128]
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, 3, stride=2) for cin, cout in zip(channels[:-1], channels[1:])
        )
        self.classify = nn.Conv2d(128, num_classes, 1)

    def forward(self, masks: Tensor) -> Tensor:
        x = masks
        for conv in self.convs:
            x = F.relu(conv(x))
        x = F.relu(self.classify(x))
        return x.amax(dim=(2, 3))
