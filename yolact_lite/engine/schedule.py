"""Learning-rate schedules as pure functions of the iteration: the original YOLACT one and a cosine.

The original ``train.py`` does, once at start-up, when ``batch_size != 8`` (autoscale on)::

    factor = batch_size / 8
    lr *= factor
    max_iter //= factor                          # float floor division
    lr_steps = [s // factor for s in lr_steps]

and then, at the top of every iteration ``it`` (before the forward pass)::

    if warmup_until > 0 and it <= warmup_until:
        set_lr((lr - warmup_init) * (it / warmup_until) + warmup_init)
    while step_index < len(lr_steps) and it >= lr_steps[step_index]:
        step_index += 1
        set_lr(lr * gamma ** step_index)

The warm-up start value and length are NOT scaled.  :meth:`Schedule.lr_at` returns the lr in
force for iteration ``it`` of an uninterrupted run of that procedure, computed without state,
so a resumed run gets exactly the same value (the original re-runs the ``while`` at the resume
iteration, which only differs from an uninterrupted run when an lr step falls inside the
warm-up; we follow the uninterrupted run).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Tuple, Union

from ..config import autoscaled
from ..errors import ConfigError

__all__ = ["Schedule", "CosineSchedule", "AnySchedule", "build_schedule", "fit_to_steps",
           "schedule_to_dict", "schedule_from_dict"]


@dataclass(frozen=True)
class Schedule:
    """An lr schedule after autoscaling. Iterations are 0-based; training runs ``0..max_iter-1``."""

    lr: float
    max_iter: int
    lr_steps: Tuple[int, ...]
    gamma: float
    warmup_init: float
    warmup_iters: int
    factor: float = 1.0  # the autoscale factor that was applied (1.0 when none)

    def _applied_at(self) -> Tuple[int, ...]:
        """The iteration at which each lr step takes effect in the original's ``while`` loop
        (a step waits for the earlier ones; steps <= 0 apply at iteration 0)."""
        out, running = [], 0
        for s in self.lr_steps:
            running = max(running, int(s))
            out.append(running)
        return tuple(out)

    def num_steps_passed(self, it: int) -> int:
        """How many lr steps have been applied by iteration ``it`` (inclusive)."""
        return sum(1 for a in self._applied_at() if it >= a)

    def lr_at(self, it: int) -> float:
        """Learning rate used for iteration ``it`` (see the module docstring)."""
        it = int(it)
        if it < 0:
            raise ValueError(f"iteration must be >= 0; got {it}")
        applied = self._applied_at()
        k = sum(1 for a in applied if it >= a)
        last_step_at = applied[k - 1] if k > 0 else None
        warm = self.warmup_iters
        if warm > 0 and it <= warm:
            if k > 0 and last_step_at == it:  # the step's set_lr runs after the warm-up's
                return self.lr * self.gamma**k
            return self._warmup(it)
        if k > 0 and (warm <= 0 or last_step_at >= warm):
            return self.lr * self.gamma**k
        # Either no step yet, or every applied step fell inside the warm-up, whose last
        # set_lr (at it == warmup_iters) left its end value in force.
        return self._warmup(warm) if warm > 0 else self.lr

    def _warmup(self, it: int) -> float:
        return (self.lr - self.warmup_init) * (it / self.warmup_iters) + self.warmup_init

    def with_max_iter(self, max_iter: int) -> "Schedule":
        """The same lr curve, stopping after ``max_iter`` iterations."""
        if max_iter < 1:
            raise ConfigError(f"max_iter must be >= 1; got {max_iter}")
        return replace(self, max_iter=int(max_iter))


@dataclass(frozen=True)
class CosineSchedule:
    """Linear warm-up from ``warmup_init`` to ``lr`` over ``warmup_iters``, then a half cosine
    from ``lr`` down to ``lr * final_lr_ratio`` at the last iteration ``max_iter - 1``."""

    lr: float
    max_iter: int
    warmup_init: float
    warmup_iters: int
    final_lr_ratio: float
    factor: float = 1.0

    def lr_at(self, it: int) -> float:
        it = int(it)
        if it < 0:
            raise ValueError(f"iteration must be >= 0; got {it}")
        warm = self.warmup_iters
        if warm > 0 and it <= warm:
            return (self.lr - self.warmup_init) * (it / warm) + self.warmup_init
        span = max(1, self.max_iter - 1 - max(warm, 0))
        progress = min(1.0, (it - max(warm, 0)) / span)
        low = self.lr * self.final_lr_ratio
        return low + (self.lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def with_max_iter(self, max_iter: int) -> "CosineSchedule":
        if max_iter < 1:
            raise ConfigError(f"max_iter must be >= 1; got {max_iter}")
        return replace(self, max_iter=int(max_iter))


AnySchedule = Union[Schedule, CosineSchedule]


def build_schedule(train_config) -> AnySchedule:
    """The schedule for a :class:`~yolact_lite.config.TrainConfig` (``train.schedule``).

    ``train_config.batch_size`` is the TOTAL batch over all devices (as in the original, where
    one process drove every GPU); the batch autoscaling rule is :func:`yolact_lite.config.autoscaled`.
    """
    t = train_config
    lr, max_iter, steps, factor = autoscaled(t)
    if max_iter < 1:  # ConfigError is a ValueError: a one-line user error in the scripts
        raise ConfigError(f"train.max_iter is {max_iter} after autoscaling by batch_size / reference_batch "
                          f"= {factor:g}; it must be >= 1")
    if any(not math.isfinite(v) for v in (lr, t.gamma, t.warmup_init)):
        raise ConfigError("train.lr (after autoscaling), train.gamma and train.warmup_init must be finite")
    if t.schedule == "cosine":
        return CosineSchedule(lr=lr, max_iter=max_iter, warmup_init=float(t.warmup_init),
                              warmup_iters=int(t.warmup_iters), final_lr_ratio=float(t.final_lr_ratio),
                              factor=factor)
    return Schedule(lr=lr, max_iter=max_iter, lr_steps=tuple(steps), gamma=float(t.gamma),
                    warmup_init=float(t.warmup_init), warmup_iters=int(t.warmup_iters), factor=factor)


def fit_to_steps(schedule: AnySchedule, num_steps: int) -> AnySchedule:
    """The same schedule squeezed into ``num_steps`` iterations (a time-budget plan): the
    warm-up becomes at most 5% of the run, and the decay (the step positions, or the cosine)
    ends at the last iteration."""
    num_steps = max(1, int(num_steps))
    warm = min(schedule.warmup_iters, max(1, num_steps // 20)) if schedule.warmup_iters > 0 else 0
    if isinstance(schedule, CosineSchedule):
        return replace(schedule, max_iter=num_steps, warmup_iters=warm)
    scale = num_steps / schedule.max_iter
    steps = tuple(int(s * scale) for s in schedule.lr_steps)
    return replace(schedule, max_iter=num_steps, warmup_iters=warm, lr_steps=steps)


def schedule_to_dict(schedule: AnySchedule) -> Dict[str, Any]:
    """A checkpoint-friendly description (plain numbers) that :func:`schedule_from_dict` reads."""
    data = asdict(schedule)
    data["kind"] = "cosine" if isinstance(schedule, CosineSchedule) else "steps"
    if "lr_steps" in data:
        data["lr_steps"] = list(data["lr_steps"])
    return data


def schedule_from_dict(data: Dict[str, Any]) -> AnySchedule:
    data = dict(data)
    kind = data.pop("kind", "steps")
    if kind == "cosine":
        return CosineSchedule(**data)
    data["lr_steps"] = tuple(data["lr_steps"])
    return Schedule(**data)


def move_scheduler_to(scheduler, schedule: AnySchedule, step: int) -> None:
    """Put a LambdaLR over ``schedule`` at ``step`` and set the lr it gives to its optimiser's
    groups (a resumed run, or a plan fixed by the time budget)."""
    scheduler.last_epoch = int(step)
    factor = schedule.lr_at(step) / schedule.lr
    for group in scheduler.optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
