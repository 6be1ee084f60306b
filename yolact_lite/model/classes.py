"""Keep some classes of a trained model: slice its class-dependent layers.

A model trained on many classes (e.g. all of COCO, with the wanted class as one of them)
becomes a model of only the kept ones without retraining.  The kept logits are exactly the
trained ones; the softmax then runs over background + the kept classes, so a score only
rises where probability mass had gone to a dropped class.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

from torch import Tensor

from .yolact import CLASS_DEPENDENT_LAYERS

_PER_ANCHOR_LOGITS = "head.cls."  # A * (C + 1) channels; the other class-dependent layers have C
_PER_CLASS = tuple(layer + "." for layer in CLASS_DEPENDENT_LAYERS if layer + "." != _PER_ANCHOR_LOGITS)


def select_classes(state: Mapping[str, Tensor], labels: Sequence[int], num_classes: int,
                   num_anchors: int) -> Dict[str, Tensor]:
    """Weights of a ``num_classes``-class model -> weights of the ``len(labels)``-class model
    that predicts foreground ``labels`` (0-based, in the order given).

    The class conv has ``num_anchors * (C + 1)`` output channels, anchor-major with logit 0 =
    background; the semantic head and YOLACT++'s mask-IoU classifier have ``C``.  Every other
    tensor is shared unchanged.
    """
    labels = [int(x) for x in labels]
    if not labels or len(set(labels)) != len(labels) or not all(0 <= x < num_classes for x in labels):
        raise ValueError(f"labels must be distinct and in [0, {num_classes}), got {labels}")
    logits = [0] + [x + 1 for x in labels]
    per_anchor = [a * (num_classes + 1) + j for a in range(num_anchors) for j in logits]
    out: Dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(_PER_ANCHOR_LOGITS):
            if value.shape[0] != num_anchors * (num_classes + 1):
                raise ValueError(f"{key}: {value.shape[0]} channels, expected "
                                 f"{num_anchors} anchors x {num_classes + 1} logits")
            value = value[per_anchor]
        elif key.startswith(_PER_CLASS) and value.dim() >= 1:
            if value.shape[0] != num_classes:
                raise ValueError(f"{key}: {value.shape[0]} channels, expected {num_classes} classes")
            value = value[labels]
        out[key] = value  # sliced tensors are new; shared ones are not copied
    return out
