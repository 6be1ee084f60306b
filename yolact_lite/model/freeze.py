"""Frozen backbone stages (``model.backbone.frozen_stages``) for fine-tuning.

A backbone lists its stages in ``stage_names()``: the stem, then the parts ending at C2, C3,
C4 and C5 (docs/frozen_stages.md has the table per backbone). ``frozen_stages = k`` freezes
the first k of them (1 = the stem, 2 = stem + the C2 stage, ...), -1 all of them.

Freezing a module sets ``requires_grad=False`` on its parameters, so an optimizer built from
the trainable parameters holds no state for them and autograd records nothing for the frozen
prefix (its input, the image, needs no gradient either). Its BatchNorms are replaced by
:class:`FrozenBatchNorm2d`, which has no training mode, so ``model.train()`` cannot make them
use batch statistics or update their running estimates. State-dict keys and values are the
same before and after freezing: checkpoints load strictly into a frozen or an unfrozen model.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["FrozenBatchNorm2d", "freeze_backbone_stages", "freeze_batchnorms"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all stored as buffers.

    Computes what an eval-mode ``nn.BatchNorm2d`` computes, ``(x - mean) / sqrt(var + eps) *
    weight + bias``, whatever the module's mode. Unlike ``torchvision.ops.FrozenBatchNorm2d``
    it keeps the source's ``eps`` and its ``num_batches_tracked`` buffer, so the state-dict
    keys are those of ``nn.BatchNorm2d``. Input and output: [B, C, H, W].
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        # Registered in nn.BatchNorm2d's state-dict order.
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    @classmethod
    @torch.no_grad()
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> "FrozenBatchNorm2d":
        """A frozen copy of ``bn`` (same values, dtypes and device)."""
        if bn.weight is None or bn.running_mean is None or bn.num_batches_tracked is None:
            raise ValueError("only affine BatchNorm2d layers that track running statistics can be frozen")
        frozen = cls(bn.num_features, bn.eps)
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            setattr(frozen, name, getattr(bn, name).detach().clone())
        return frozen

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, momentum=0.0, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_batchnorms(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` (or ``module`` itself) by a frozen copy.

    Children are replaced in place; the return value is ``module`` or, when ``module`` is
    itself a BatchNorm, its frozen copy.
    """
    if isinstance(module, nn.BatchNorm2d):
        return FrozenBatchNorm2d.from_batchnorm(module)
    for name, child in module.named_children():
        replaced = freeze_batchnorms(child)
        if replaced is not child:
            module._modules[name] = replaced
    return module


def _count_to_freeze(frozen_stages: int, num_stages: int, backbone: nn.Module) -> int:
    if frozen_stages == -1:
        return num_stages
    if not 0 <= frozen_stages <= num_stages:
        raise ConfigError(
            f"model.backbone.frozen_stages={frozen_stages}: {type(backbone).__name__} has "
            f"{num_stages} stages (stem + {num_stages - 1}); use 0..{num_stages}, or -1 for all"
        )
    return frozen_stages


def freeze_backbone_stages(backbone: nn.Module, frozen_stages: int) -> List[str]:
    """Freeze the first ``frozen_stages`` stages of ``backbone`` (-1: all), in place.

    ``backbone`` must have ``stage_names()`` (every backbone in ``backbones.py`` has).
    Returns the frozen submodule names, relative to ``backbone``, in forward order.
    Raises ConfigError when ``frozen_stages`` exceeds the backbone's stage count.
    """
    stages = backbone.stage_names()
    count = _count_to_freeze(frozen_stages, len(stages), backbone)
    names = [name for stage in stages[:count] for name in stage]
    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        parent = backbone.get_submodule(parent_name) if parent_name else backbone
        module = freeze_batchnorms(parent.get_submodule(leaf))
        parent._modules[leaf] = module
        for p in module.parameters():
            p.requires_grad_(False)
    return names
