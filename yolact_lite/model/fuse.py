"""Inference-time graph simplification: fold every BatchNorm into the conv before it.

In eval mode a BatchNorm is a per-channel affine map, ``y = (x - mean) / sqrt(var + eps) *
gamma + beta``. When ``x`` is the output of a convolution (ordinary, 'SAME'-padded or
modulated deformable: all linear in their weight, with an additive per-channel bias), the
map folds into the conv's weight and bias:

    s  = gamma / sqrt(var + eps)
    W' = W * s[:, None, None, None]
    b' = (b - mean) * s + beta        (b = 0 when the conv has no bias)

The BatchNorm is then replaced by ``nn.Identity``, which saves one full pass over every
feature map (a sizeable share of a ResNet's CPU time) and lets oneDNN fuse conv + bias.

Pairs that are folded:

* children named ``convN`` / ``bnN`` of the same module (ResNet stem ``conv1``/``bn1``,
  Bottleneck ``conv1/bn1``, ``conv2/bn2`` -- plain or deformable --, ``conv3/bn3``);
* consecutive ``(conv, BatchNorm2d)`` children of an ``nn.Sequential`` (ResNet downsample,
  DarkNet / EfficientNet ``Sequential(conv, bn, act)`` units).

Frozen BatchNorms (``model/freeze.py``, frozen backbone stages) fold the same way.

A BatchNorm that follows no conv is left in place (none does in the shipped backbones).
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn

from .backbones import ModulatedDeformConv3x3
from .freeze import FrozenBatchNorm2d

__all__ = ["fuse_for_inference", "fold_bn_into_conv", "count_batchnorms"]

_FOLDABLE = (nn.Conv2d, ModulatedDeformConv3x3)
_BATCHNORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn`` (eval statistics) into ``conv``'s weight and bias, in place.

    ``conv`` is an ``nn.Conv2d`` (or subclass) or a :class:`ModulatedDeformConv3x3`, ``bn`` an
    ``nn.BatchNorm2d`` or a :class:`FrozenBatchNorm2d`; a conv without bias gets one. Scale and
    bias are computed in float64; the weight is scaled in its own dtype.
    """
    weight = conv.weight
    if bn.num_features != weight.shape[0]:
        raise ValueError(
            f"cannot fold {type(bn).__name__}({bn.num_features}) into a conv with {weight.shape[0]} outputs"
        )
    n, f64 = bn.num_features, torch.float64
    var = bn.running_var.double() if bn.running_var is not None else torch.ones(n, dtype=f64)
    mean = bn.running_mean.double() if bn.running_mean is not None else torch.zeros(n, dtype=f64)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
    new_bias = (bias - mean) * scale + beta
    weight.mul_(scale.to(weight.dtype).view(-1, *([1] * (weight.dim() - 1))))
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(device=weight.device, dtype=weight.dtype), requires_grad=False)
    else:
        conv.bias.copy_(new_bias.to(conv.bias.dtype))


_PAIR_NAME = re.compile(r"^conv(\d*)$")


def _fuse_children(module: nn.Module) -> int:
    folded = 0
    children = dict(module.named_children())
    # conv<N> / bn<N> siblings (ResNet stem and Bottleneck)
    for name, child in children.items():
        match = _PAIR_NAME.match(name)
        if not match or not isinstance(child, _FOLDABLE):
            continue
        bn_name = f"bn{match.group(1)}"
        bn = children.get(bn_name)
        if isinstance(bn, _BATCHNORMS):
            fold_bn_into_conv(child, bn)
            setattr(module, bn_name, nn.Identity())
            folded += 1
    # Sequential(conv, bn, ...) units
    if isinstance(module, nn.Sequential):
        items = list(module._modules.items())
        for (_, first), (second_name, second) in zip(items, items[1:]):
            if isinstance(first, _FOLDABLE) and isinstance(second, _BATCHNORMS):
                fold_bn_into_conv(first, second)
                module._modules[second_name] = nn.Identity()
                folded += 1
    for child in module.children():
        folded += _fuse_children(child)
    return folded


def count_batchnorms(model: nn.Module) -> int:
    """How many BatchNorm layers (trainable or frozen) ``model`` still has."""
    return sum(isinstance(m, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)) for m in model.modules())


def fuse_for_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """A deep copy of ``model`` in eval mode with every conv+BatchNorm pair folded (see the
    module docstring), gradients off, and (by default) in ``channels_last`` memory format.

    The original ``model`` is not modified. Feed the copy ``channels_last`` inputs for the
    best CPU speed (any layout gives the same result).
    """
    fused = copy.deepcopy(model).eval()
    _fuse_children(fused)
    for p in fused.parameters():
        p.requires_grad_(False)
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    return fused
