"""Hooks that evaluate and save: periodic evaluation, ``best.pt`` and ``last.pt``."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional, Tuple

from ...errors import CheckpointError, YolactError
from ..data import worker_death_error
from ..loop import HookBase
from ..state import EvalRecord

__all__ = ["EvalHook", "BestCheckpointHook", "CheckpointHook"]

Note = Callable[[str], None]

class EvalHook(HookBase):
    """Evaluates every ``every`` steps and/or every ``every_minutes`` of wall time (0: off),
    and once after the last step.

    ``evaluate(step) -> (metrics or None, mask_ap or None)``; the result goes to
    ``state.latest_eval`` and the time it took is added to ``state.eval_seconds`` (a time
    budget counts training, not evaluation)."""

    writes = ("latest_eval", "eval_seconds")

    def __init__(self, evaluate: Callable[[int], Tuple[Optional[Dict[str, Any]], Optional[float]]], every: int,
                 clock: Callable[[], float] = time.monotonic, every_minutes: float = 0.0):
        self.evaluate = evaluate
        self.every = int(every)
        self.every_s = float(every_minutes) * 60.0
        self.clock = clock
        self.last_step: Optional[int] = None
        self.last_time = 0.0

    def before_train(self) -> None:
        self.last_time = self.clock()

    def _run(self) -> None:
        t0 = self.clock()
        step = self.trainer.iter
        metrics, mask_ap = self.evaluate(step)
        self.state.latest_eval = EvalRecord(step, metrics, mask_ap)
        self.last_step = step
        self.last_time = self.clock()
        self.state.eval_seconds += self.last_time - t0

    def _due(self) -> bool:
        t = self.trainer
        by_steps = self.every > 0 and t.iter % self.every == 0
        by_time = self.every_s > 0 and self.clock() - self.last_time >= self.every_s
        return by_steps or by_time

    def after_step(self) -> None:
        t = self.trainer
        if t.iter < t.max_iter and t.stop_reason is None and self._due():
            self._run()

    def after_train(self) -> None:
        t = self.trainer
        if t.exception is None and t.iter > 0 and self.last_step != t.iter:
            self._run()


class BestCheckpointHook(HookBase):
    """Keeps the weights with the best validation mask AP: ``save_best(step, metrics)``.  The
    best so far is ``state.best_mask_ap`` / ``state.best_step`` (a resumed run starts from the
    checkpoint's)."""

    reads = ("latest_eval", "best_mask_ap")
    writes = ("best_mask_ap", "best_step")

    def __init__(self, save_best: Callable[[int, Optional[Dict[str, Any]]], None]):
        self.save_best = save_best
        self._seen: Optional[int] = None

    def _check(self) -> None:
        latest = self.state.latest_eval
        if latest is None or latest[0] == self._seen:
            return
        step, metrics, mask_ap = latest
        self._seen = step
        if mask_ap is not None and (self.state.best_mask_ap is None or mask_ap > self.state.best_mask_ap):
            self.state.best_mask_ap, self.state.best_step = float(mask_ap), int(step)
            self.save_best(step, metrics)

    def after_step(self) -> None:
        self._check()

    def after_train(self) -> None:
        if self.trainer.exception is None:
            self._check()


class CheckpointHook(HookBase):
    """``last.pt`` every ``every`` steps (0: only at the end), at the end, and when the run
    stops early (Ctrl-C, SIGTERM, a data error, the non-finite stop) at an iteration
    boundary or fails after its last step (the final evaluation), so no finished iteration
    is lost.  ``save(step)`` writes it."""

    writes = ("reserve_s",)

    def __init__(self, save: Callable[[int], None], every: int, note: Note, can_save_on_error: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        self.save = save
        self.every = int(every)
        self.note = note
        self.can_save_on_error = can_save_on_error
        self.clock = clock
        self.last_saved: Optional[int] = None

    def _save(self) -> None:
        t0 = self.clock()
        self.save(self.trainer.iter)
        self.last_saved = self.trainer.iter
        self.state.reserve_s = max(self.state.reserve_s, self.clock() - t0)

    def after_step(self) -> None:
        t = self.trainer
        if self.every > 0 and t.iter % self.every == 0 and t.iter < t.max_iter:
            self._save()

    def after_train(self) -> None:
        t, exc = self.trainer, self.trainer.exception
        if exc is None:
            if self.last_saved != t.iter:
                self._save()
            return
        # an error after the last step (the final evaluation) leaves finished weights behind
        savable = (isinstance(exc, (KeyboardInterrupt, YolactError)) or worker_death_error(exc, 0) is not None
                   or t.failed_after_train)
        if (not savable or not self.can_save_on_error or t.in_step or isinstance(exc, CheckpointError)
                or t.iter in (self.last_saved, t.start_iter)):
            return
        try:
            self._save()
        except CheckpointError as err:
            self.note(f"warning: could not save last.pt at step {t.iter}: {err}")
            return
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped by an error"
        self.note(f"{why} at step {t.iter}: saved last.pt (continue with --resume)")
