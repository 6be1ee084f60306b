"""Exponential moving average of a model's weights (the weights evaluation and inference use).

After update ``n`` (1-based) every floating-point tensor of the state dict becomes
``ema = d_n * ema + (1 - d_n) * current`` with ``d_n = decay * (1 - exp(-n / ramp_steps))``:
early on the average follows the fast-moving weights closely, later it averages over about
``1 / (1 - decay)`` steps.  Integer buffers (BatchNorm's batch counters) are copied.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict

import torch
from torch import nn

__all__ = ["ModelEMA", "ema_decay_at"]


def ema_decay_at(updates: int, decay: float, ramp_steps: int) -> float:
    """The decay used by update number ``updates`` (1-based)."""
    if ramp_steps <= 0:
        return float(decay)
    return float(decay) * (1.0 - math.exp(-updates / ramp_steps))


class ModelEMA:
    """``ema.module`` is an eval-mode copy of ``model`` whose weights are the running average."""

    def __init__(self, model: nn.Module, decay: float, ramp_steps: int = 2000):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.ramp_steps = int(ramp_steps)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = ema_decay_at(self.updates, self.decay, self.ramp_steps)
        current = model.state_dict()
        for name, avg in self.module.state_dict().items():
            value = current[name].detach()
            if avg.is_floating_point():
                avg.lerp_(value.to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(value)

    def state_dict(self) -> Dict[str, Any]:
        return {"updates": self.updates, "model": self.module.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"])
