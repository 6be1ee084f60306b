"""Test support (in the spirit of detectron2's ``utils/testing.py``): small configs, untrained
models that still detect, and BatchNorm layers with non-trivial statistics.

Shipped with the package because the benchmarks use it too.  A freshly initialised YOLACT
scores every prior as background, so NMS keeps nothing and a speed measurement would skip NMS,
mask assembly and drawing: :func:`detecting_model` biases the heads so that many priors score as
foreground with non-empty masks.  Its detections are meaningless; only their number and cost are
realistic.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from .priors import anchor_scales_override
from .yolact import Yolact, build_model

__all__ = ["small_overrides", "detecting_model", "randomise_batchnorms"]


def small_overrides(input_size: int) -> List[str]:
    """``--set`` overrides for a smaller input with the original's anchor-scale rule (fast tests)."""
    return [f"model.input_size={int(input_size)}", anchor_scales_override(input_size)]


def randomise_batchnorms(module: nn.Module, seed: int = 0) -> None:
    """Give every ``BatchNorm2d`` statistics and affine far from the identity (in place), so
    eval-mode and train-mode BN, or a folded and an unfolded conv, differ clearly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_((torch.rand(n, generator=g) - 0.5) * 0.4)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))


def detecting_model(config, seed: int = 0, pretrained: bool = False,
                    class_weight_scale: Optional[float] = None) -> Yolact:
    """Build ``config``'s model (eval mode) with its heads biased to detect.

    Args:
        config: the typed config tree (``yolact_lite.config.Config``).
        seed: seeds torch's global RNG before building, so the weights are reproducible.
        pretrained: load ImageNet backbone weights (only offline-available ones make sense here).
        class_weight_scale: multiplies the class conv's weights so scores spread out; default
            4.0 for a random backbone (its features are weak) and 1.0 for a pretrained one.
    """
    torch.manual_seed(seed)
    model = build_model(config, pretrained=pretrained)
    if class_weight_scale is None:
        class_weight_scale = 1.0 if pretrained else 4.0
    c1 = model.head.num_logits
    with torch.no_grad():
        model.head.cls.weight.mul_(class_weight_scale)
        bias = model.head.cls.bias.view(-1, c1)  # [anchors per cell, classes + 1]
        bias[:, 0] = -2.0  # background logit low: foreground wins the softmax often
        bias[:, 1:] = torch.randn(bias.shape[0], c1 - 1) * 1.5
        model.head.coef.bias.normal_(0.5, 1.0)  # positive-leaning coefficients: non-empty masks
    return model.eval()
