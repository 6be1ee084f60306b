"""The network-output contract: what every runtime returns for a batch in eval.

The model (:class:`yolact_lite.model.Yolact`) gives raw outputs; :func:`decode_outputs`
turns them into the four named float32 tensors that detection, export and every runtime
agree on (:data:`NETWORK_OUTPUTS`, in this order)::

    boxes        [B, P, 4]      decoded xyxy relative to the input (not clipped)
    scores       [B, P, C]      softmax foreground scores (background column dropped)
    coefficients [B, P, k]      mask coefficients
    prototypes   [B, Hp, Wp, k]
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from ..box_ops import decode

__all__ = ["NETWORK_OUTPUTS", "decode_outputs", "outputs_for_image"]

NETWORK_OUTPUTS = ("boxes", "scores", "coefficients", "prototypes")


def decode_outputs(raw: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The model's raw outputs -> the network-output contract.

    Args:
        raw: :class:`yolact_lite.model.Yolact` outputs: ``box_deltas`` [B, P, 4],
            ``class_logits`` [B, P, C+1], ``coefficients`` [B, P, k], ``prototypes``
            [B, Hp, Wp, k], ``priors`` [P, 4] (the batch dimension may be absent).

    Returns:
        :data:`NETWORK_OUTPUTS` (``prototypes`` only when ``raw`` has them). Softmax and
        decoding run in float32 whatever the network's precision (a bf16/fp16 softmax over
        81 classes loses the 0.05 candidate edge).
    """
    out = {
        "boxes": decode(raw["box_deltas"].float(), raw["priors"].float()),
        "scores": torch.softmax(raw["class_logits"].float(), dim=-1)[..., 1:],
        "coefficients": raw["coefficients"].float(),
    }
    if "prototypes" in raw:  # detection alone needs no prototypes
        out["prototypes"] = raw["prototypes"].float()
    return out


def outputs_for_image(outputs: Dict[str, Tensor], index: int) -> Dict[str, Tensor]:
    """Slice image ``index`` out of batched outputs (``priors`` is shared by the batch)."""
    return {
        key: (value if key == "priors" else value[index])
        for key, value in outputs.items()
        if isinstance(value, Tensor)
    }
