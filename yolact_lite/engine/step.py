"""One optimisation step: forward, loss, backward, clipping, the non-finite skip, precision.

Precision (``train.amp``): fp16 autocast + GradScaler on CUDA; bf16 autocast on a CPU with
native bf16 (AMX or AVX512-BF16, see :mod:`yolact_lite.hardware`); fp32 elsewhere.  The loss is
always computed in fp32 from fp32 copies of the network outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..hardware import bf16_supported
from ..loss.criterion import YolactLoss
from . import distributed as D

__all__ = ["build_optimizer", "lr_groups", "TrainStep", "StepRunner", "StepResult", "choose_precision",
           "channels_last_rule", "LOSS_KEYS", "STAT_KEYS", "set_bn_frozen", "should_freeze_bn"]

LOSS_KEYS = ("box", "class", "mask", "semantic", "mask_iou")
STAT_KEYS = ("num_positives", "prototypes_alive")  # counts the criterion reports beside the losses


# --------------------------------------------------------------------------- precision


def lr_groups(named_params: Sequence[Tuple[str, nn.Parameter]], multipliers: Dict[str, float],
              lr: float) -> List[Dict]:
    """Optimiser parameter groups: first every parameter at ``lr``, then one group per
    ``multipliers`` entry (module path -> lr factor) for the parameters under that path; the
    longest matching path wins.  A path that matches no parameter is a ConfigError."""
    def owner(name: str) -> Optional[str]:
        matches = [path for path in multipliers if name == path or name.startswith(path + ".")]
        return max(matches, key=len) if matches else None

    by_path: Dict[Optional[str], List[nn.Parameter]] = {None: [], **{path: [] for path in multipliers}}
    for name, param in named_params:
        by_path[owner(name)].append(param)
    unused = sorted(path for path in multipliers if not by_path[path])
    if unused:
        tops = sorted({name.split(".")[0] for name, _ in named_params})
        raise ConfigError(f"train.lr_multipliers: {', '.join(unused)} names no trained module of this model "
                          f"(top-level modules: {', '.join(tops)})")
    return [{"params": by_path[None], "lr": lr}] + [
        {"params": by_path[path], "lr": lr * multipliers[path]} for path in multipliers]


def build_optimizer(named_params: Sequence[Tuple[str, nn.Parameter]], t, lr: float) -> torch.optim.Optimizer:
    """SGD with momentum, or AdamW (``train.optimizer``), with the config's weight decay and
    ``train.lr_multipliers`` (param group 0 holds the parameters at the base lr)."""
    groups = lr_groups(named_params, t.lr_multipliers, lr)
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=t.weight_decay)


def choose_precision(device: torch.device, amp: bool) -> Tuple[Optional[torch.dtype], str]:
    """``(autocast dtype or None for fp32, a one-line description for the log)``."""
    if not amp:
        return None, "fp32"
    if device.type == "cuda":
        return torch.float16, "fp16 autocast + GradScaler (CUDA)"
    if bf16_supported(device):
        return torch.bfloat16, "bf16 autocast (this CPU has native bf16)"
    return None, "fp32 (--amp ignored: this CPU has no native bf16, AMX or AVX512-BF16, and CPU fp16 is slow)"


def channels_last_rule(device: torch.device, autocast_dtype: Optional[torch.dtype]) -> bool:
    """channels_last weights and inputs: on CUDA, and on CPU with bf16 (oneDNN's bf16 kernels
    want NHWC); not for CPU fp32, where it made a training step slower
    (benchmarks/results/train_speed.md)."""
    return device.type == "cuda" or autocast_dtype == torch.bfloat16


# --------------------------------------------------------------------------- BatchNorm


def _bn_modules(model: nn.Module) -> List[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def should_freeze_bn(config, world_size: int = 1) -> bool:
    """``train.freeze_bn`` if set, else the original's rule: per-process batch < 6."""
    if config.train.freeze_bn is not None:
        return bool(config.train.freeze_bn)
    return config.train.batch_size // max(world_size, 1) < 6


def set_bn_frozen(model: nn.Module, frozen: bool) -> None:
    """Frozen: every BatchNorm in eval mode (running stats fixed), weight/bias without grad."""
    for bn in _bn_modules(model):
        if frozen:
            bn.eval()
        elif model.training:
            bn.train()
        for p in bn.parameters(recurse=False):
            p.requires_grad_(not frozen)


# --------------------------------------------------------------------------- the module DDP wraps


class TrainStep(nn.Module):
    """Model + loss in one module (what DDP wraps), so that the YOLACT++ mask-IoU head, which
    the loss calls, runs inside the DDP forward.  ``train()`` re-applies the BN freeze."""

    def __init__(self, model: nn.Module, criterion: YolactLoss, freeze_bn: bool,
                 autocast_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.freeze_bn = bool(freeze_bn)
        self.autocast_dtype = autocast_dtype
        set_bn_frozen(self.model, self.freeze_bn)

    def train(self, mode: bool = True) -> "TrainStep":
        super().train(mode)
        if mode and self.freeze_bn:
            set_bn_frozen(self.model, True)
        return self

    def forward(self, images: Tensor, targets: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        """images ``[B, 3, H, W]``; returns the loss terms (fp32 scalars) and ``num_positives``."""
        device_type = images.device.type
        with torch.autocast(device_type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            outputs = self.model(images)
        if self.autocast_dtype is not None:
            outputs = {k: v.float() if v.is_floating_point() else v for k, v in outputs.items()}
        with torch.autocast(device_type, enabled=False):
            return self.criterion(outputs, targets, mask_iou_head=getattr(self.model, "mask_iou_head", None))


# --------------------------------------------------------------------------- one step


@dataclass
class StepResult:
    terms: Dict[str, float]  # loss terms, "total" and STAT_KEYS, averaged over processes
    finite: bool             # False: the optimiser step was skipped


class StepRunner:
    """``runner(images, targets) -> StepResult``: forward + loss, backward, optional global
    grad-norm clipping, optimiser step unless the loss (on any process) or the norm is
    non-finite (backward still runs, as the original)."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter],
                 grad_clip: float = 0.0, scaler: Optional[torch.amp.GradScaler] = None):
        self.module = module
        self.optimizer = optimizer
        self.params = list(params)
        self.grad_clip = float(grad_clip)
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None

    def __call__(self, images: Tensor, targets: List[Dict[str, Tensor]]) -> StepResult:
        losses = self.module(images, targets)
        total = losses["total"]
        (self.scaler.scale(total) if self.scaler else total).backward()
        names = [k for k in LOSS_KEYS if k in losses] + ["total"] + [k for k in STAT_KEYS if k in losses]
        local = torch.stack([losses[k].detach().float() for k in names])
        terms = dict(zip(names, D.all_reduce_mean(local).tolist()))
        finite = math.isfinite(terms["total"])
        if finite and self.grad_clip > 0:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_([p for p in self.params if p.grad is not None], self.grad_clip)
            finite = bool(self.scaler) or bool(torch.isfinite(norm))  # the scaler skips inf grads itself
        if finite:
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(terms=terms, finite=finite)
