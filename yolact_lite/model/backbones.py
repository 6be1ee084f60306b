"""Backbones: ResNet-50/101 (optionally with deformable convs), DarkNet-53, EfficientNet-Lite0.

Every backbone maps a normalised image batch [B, 3, H, W] to the feature maps C2, C3, C4, C5
(strides 4, 8, 16, 32) and says their channel counts in ``out_channels``; the FPN uses C3..C5,
or C2..C5 when a P2 level is configured.

Every backbone also lists its stages in ``stage_names()``: the stem, then the four parts that
end at C2, C3, C4 and C5 (submodule names; ``model/freeze.py`` freezes a prefix of them).
"""

from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

# ----------------------------------------------------------------------------- ResNet


class ModulatedDeformConv3x3(nn.Module):
    """DCNv2 3x3 conv (one deformable group) through ``torchvision.ops.deform_conv2d``.

    A plain 3x3 conv (``offset_mask``) predicts 27 channels per output pixel: 18 offsets as
    interleaved (dy, dx) pairs per kernel tap (tap = row * 3 + col), then 9 modulation
    logits (sigmoid). It starts at zero, so a fresh layer equals 0.5 x an ordinary conv.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.offset_mask = nn.Conv2d(in_channels, 27, 3, stride=stride, padding=1)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.offset_mask(x)
        offset, mask = out[:, :18], out[:, 18:].sigmoid()
        return deform_conv2d(
            x, offset, self.weight, self.bias, stride=self.stride, padding=1, mask=mask
        )


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv); names match torchvision's."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, deformable: bool = False):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        if deformable:
            self.conv2 = ModulatedDeformConv3x3(planes, planes, stride)
        else:
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity, inplace=True)


def deformable_blocks(num_blocks: int, dcn_layers: int, interval: int) -> List[bool]:
    """Which blocks of a stage get a deformable conv (the YOLACT++ placement rule).

    Block 0 iff ``dcn_layers >= num_blocks``; block i >= 1 iff ``i + dcn_layers >= num_blocks``
    and ``i % interval == 0``.
    """
    flags = [dcn_layers >= num_blocks]
    flags += [i + dcn_layers >= num_blocks and i % interval == 0 for i in range(1, num_blocks)]
    return flags


class ResNet(nn.Module):
    """ResNet-50/101 trunk without the classifier; returns C2..C5."""

    DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}

    def __init__(self, name: str, dcn_layers: Sequence[int] = (0, 0, 0, 0), dcn_interval: int = 1):
        super().__init__()
        depths = self.DEPTHS[name]
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_channels = 64
        for stage, (blocks, planes) in enumerate(zip(depths, (64, 128, 256, 512))):
            flags = deformable_blocks(blocks, dcn_layers[stage], dcn_interval)
            layers = []
            for i, deformable in enumerate(flags):
                stride = 2 if (i == 0 and stage > 0) else 1
                layers.append(Bottleneck(in_channels, planes, stride, deformable))
                in_channels = planes * Bottleneck.expansion
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layers))
        self.out_channels = [256, 512, 1024, 2048]

    def stage_names(self) -> List[List[str]]:
        """[stem, C2 stage, C3, C4, C5] as submodule names (the max-pool has no parameters)."""
        return [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]

    def forward(self, x: Tensor) -> List[Tensor]:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


# ----------------------------------------------------------------------------- DarkNet-53


def _conv_bn_leaky(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.1, inplace=True),
    )


class DarkNetBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _conv_bn_leaky(channels, channels // 2, 1)
        self.conv2 = _conv_bn_leaky(channels // 2, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


class DarkNet53(nn.Module):
    """DarkNet-53: stem, then 5 stages of (stride-2 conv, residual blocks); returns C2..C5."""

    def __init__(self):
        super().__init__()
        self.stem = _conv_bn_leaky(3, 32, 3)
        stages, in_channels = [], 32
        for blocks, channels in zip((1, 2, 8, 8, 4), (64, 128, 256, 512, 1024)):
            layers = [_conv_bn_leaky(in_channels, channels, 3, stride=2)]
            layers += [DarkNetBlock(channels) for _ in range(blocks)]
            stages.append(nn.Sequential(*layers))
            in_channels = channels
        self.stages = nn.ModuleList(stages)
        self.out_channels = [128, 256, 512, 1024]

    def stage_names(self) -> List[List[str]]:
        """[stem, C2 stage, C3, C4, C5]; the stride-2 stage 0 has no output of its own, so it
        belongs to the part ending at C2."""
        return [["stem"], ["stages.0", "stages.1"], ["stages.2"], ["stages.3"], ["stages.4"]]

    def forward(self, x: Tensor) -> List[Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs[1:]


# ----------------------------------------------------------------------------- EfficientNet-Lite0


class SamePadConv2d(nn.Conv2d):
    """Conv with TensorFlow 'SAME' padding (asymmetric for stride 2), as the Lite weights expect."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
    layers = [SamePadConv2d(cin, cout, kernel, stride=stride, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation (the 'Lite' variant, ReLU6)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        hidden = cin * expand
        self.expand = _conv_bn_relu6(cin, hidden, 1) if expand != 1 else None
        self.depthwise = _conv_bn_relu6(hidden, hidden, kernel, stride, groups=hidden)
        self.project = _conv_bn_relu6(hidden, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.depthwise(out))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 trunk (blocks 0..15); returns C2 (24 ch), C3 (40), C4 (112), C5 (320)."""

    # (expand ratio, kernel, stride, out channels, repeats) per stage.
    STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
              (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
    OUTPUT_BLOCKS = (2, 4, 10, 15)  # last block of the stride-4, 8, 16 and 32 stages

    def __init__(self):
        super().__init__()
        self.stem = _conv_bn_relu6(3, 32, 3, stride=2)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in self.STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = [24, 40, 112, 320]

    def stage_names(self) -> List[List[str]]:
        """[stem, blocks ending at stride 4 (C2), 8, 16, 32]: the block groups between outputs."""
        names, first = [["stem"]], 0
        for last in self.OUTPUT_BLOCKS:
            names.append([f"blocks.{i}" for i in range(first, last + 1)])
            first = last + 1
        return names

    def forward(self, x: Tensor) -> List[Tensor]:
        x = self.stem(x)
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.OUTPUT_BLOCKS:
                outs.append(x)
        return outs


def build_backbone(name: str, dcn_layers: Sequence[int] = (0, 0, 0, 0), dcn_interval: int = 1) -> nn.Module:
    if name in ResNet.DEPTHS:
        return ResNet(name, dcn_layers, dcn_interval)
    if name == "darknet53":
        return DarkNet53()
    if name == "efficientnet_lite0":
        return EfficientNetLite0()
    raise ValueError(f"unknown backbone {name!r}")
