"""Hooks that end a run early: the time budget (which also fixes the plan) and SIGINT / SIGTERM."""

from __future__ import annotations

import signal
import statistics
import threading
import time
from typing import Any, Callable, Dict, List

from ..loop import HookBase

__all__ = ["TimeBudgetHook", "StopSignalHook"]

Note = Callable[[str], None]

class TimeBudgetHook(HookBase):
    """Ends the run when ``budget_s`` of training (wall clock of this process, less the time
    spent in periodic evaluations; the final evaluation comes after) would be exceeded.

    Unless the run already has a plan (``planned``), it times steps ``warmup + 1 ..
    warmup + calib_steps`` of this process and calls ``on_plan(total_steps)`` once with the
    number of steps that fit the budget at the MEDIAN step time (first steps and stalls, e.g.
    kernel set-up or a busy machine, do not count); the trainer then fixes the lr schedule to
    end there.  ``should_stop(over)`` lets DDP ranks agree."""

    reads = ("eval_seconds", "reserve_s")

    def __init__(self, budget_s: float, on_plan: Callable[[int], None], planned: bool = False,
                 clock: Callable[[], float] = time.monotonic, warmup: int = 5, calib_steps: int = 10,
                 should_stop: Callable[[bool], bool] = bool):
        self.budget_s = float(budget_s)
        self.on_plan = on_plan
        self.planned = planned
        self.clock = clock
        self.warmup, self.calib_steps = int(warmup), int(calib_steps)
        self.should_stop = should_stop
        self.started = self.previous = 0.0
        self.durations: List[float] = []

    def before_train(self) -> None:
        self.started = self.previous = self.clock()

    def after_step(self) -> None:
        t = self.trainer
        done_here = t.iter - t.start_iter
        now = self.clock() - self.state.eval_seconds
        if not self.planned and done_here > self.warmup:
            self.durations.append(now - self.previous)
            if len(self.durations) == self.calib_steps:
                per_step = statistics.median(self.durations)
                left = self.budget_s - (now - self.started) - self.state.reserve_s
                more = int(left // per_step) if per_step > 0 else t.max_iter
                self.planned = True
                self.on_plan(max(t.iter + 1, min(t.max_iter, t.iter + more)))
        self.previous = now
        over = now - self.started + self.state.reserve_s >= self.budget_s
        if t.iter < t.max_iter and self.should_stop(over):
            t.stop_reason = "time_budget"


class StopSignalHook(HookBase):
    """SIGINT / SIGTERM (main thread, single process): the first signal asks the loop to stop
    at the next iteration boundary (where last.pt is saved); a second aborts at once.  The
    signal is ``state.signal`` (the trainer tells a Ctrl-C from a worker's death by it)."""

    reads = ("signal",)
    writes = ("signal",)

    def __init__(self, note: Note):
        self.note = note
        self._previous: Dict[int, Any] = {}

    def before_train(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):  # pragma: no cover - exotic platforms
                pass

    def _handle(self, signum, frame) -> None:
        if self.state.signal is not None:
            raise KeyboardInterrupt
        self.state.signal = signum
        self.note("stopping after the current iteration to save last.pt (Ctrl-C again to abort at once)")

    def before_step(self) -> None:
        if self.state.signal is not None:
            raise KeyboardInterrupt

    def after_train(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
