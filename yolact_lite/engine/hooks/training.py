"""Hooks around the optimiser step: the lr schedule, the weight average, the guard that
stops a run whose loss keeps being non-finite and the warning for a mask branch that died."""

from __future__ import annotations

import warnings
from typing import Callable

import torch

from ...errors import YolactError
from ..loop import HookBase

__all__ = ["NonFiniteLossError", "LRScheduleHook", "EMAHook", "NonFiniteGuard", "DeadPrototypesWarning"]

Note = Callable[[str], None]

class NonFiniteLossError(YolactError):
    """Too many consecutive iterations had a non-finite loss."""


class LRScheduleHook(HookBase):
    """Advances a ``torch.optim.lr_scheduler`` (a LambdaLR over the schedule plan) per step."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler):
        self.scheduler = scheduler

    def after_step(self) -> None:
        with warnings.catch_warnings():
            # torch warns when no optimiser step preceded (every step so far was non-finite)
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            self.scheduler.step()


class EMAHook(HookBase):
    """Updates the weight average of ``model`` after every step that changed the weights."""

    reads = ("last_step",)

    def __init__(self, ema, model):
        self.ema = ema
        self.model = model

    def after_step(self) -> None:
        if self.state.last_step.finite:
            self.ema.update(self.model)


class NonFiniteGuard(HookBase):
    """Warns on each skipped (non-finite) step; ``max_consecutive`` in a row stop the run."""

    reads = ("last_step",)

    def __init__(self, max_consecutive: int, note: Note):
        self.max_consecutive = int(max_consecutive)
        self.note = note
        self.consecutive = 0

    def after_step(self) -> None:
        step = self.trainer.iter
        result = self.state.last_step
        if result.finite:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.note(f"warning: non-finite loss at step {step} (total={result.terms['total']}); "
                  f"optimiser step skipped ({self.consecutive} in a row)")
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(
                f"stopping: {self.consecutive} consecutive iterations with a non-finite loss "
                f"(train.max_nonfinite_steps={self.max_consecutive}) at step {step}; "
                f"try a lower train.lr or train.grad_clip > 0")


class DeadPrototypesWarning(HookBase):
    """Warns once when all ``num_prototypes`` prototypes have been zero on every pixel of the
    batch for ``patience`` steps in a row (the step's ``prototypes_alive`` count).

    Dead ReLUs get no gradient, so they stay dead: every mask is ``sigmoid(0)`` and nothing
    passes the mask threshold while boxes go on learning, which the loss curve alone hides.
    """

    reads = ("last_step",)

    def __init__(self, num_prototypes: int, note: Note, patience: int = 20):
        self.num_prototypes = int(num_prototypes)
        self.note = note
        self.patience = int(patience)
        self.dead_steps = 0
        self.warned = False

    def after_step(self) -> None:
        alive = self.state.last_step.terms.get("prototypes_alive")
        if alive is None or self.warned:
            return
        self.dead_steps = self.dead_steps + 1 if alive == 0 else 0
        if self.dead_steps >= self.patience:
            self.warned = True
            self.note(f"warning: step {self.trainer.iter}: all {self.num_prototypes} prototypes have been zero on "
                      f"every pixel for {self.patience} steps (dead ReLUs): masks will come out empty; "
                      f"see docs/training.md#dead-prototypes")
