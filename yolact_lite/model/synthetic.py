"""Untrained models that still produce detections, for timing and pipeline tests.

A freshly initialised YOLACT scores every prior as background, so NMS keeps nothing and a speed
measurement would skip NMS, mask assembly and drawing.  ``detecting_model`` biases the heads so
that many priors score as foreground with non-empty masks, which exercises the full path.  The
detections are meaningless; only their number and cost are realistic.
"""

from __future__ import annotations

from typing import Optional

import torch

from .yolact import Yolact, build_model


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
    c1 = config.model.num_classes + 1
    with torch.no_grad():
        model.head.cls.weight.mul_(class_weight_scale)
        bias = model.head.cls.bias.view(-1, c1)  # [anchors per cell, classes + 1]
        bias[:, 0] = -2.0  # background logit low: foreground wins the softmax often
        bias[:, 1:] = torch.randn(bias.shape[0], c1 - 1) * 1.5
        model.head.coef.bias.normal_(0.5, 1.0)  # positive-leaning coefficients: non-empty masks
    return model.eval()
