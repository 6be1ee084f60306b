"""Training hooks, one concern each (see :class:`yolact_lite.engine.loop.HookBase`).

The hooks read what the trainer exposes after a step: ``trainer.iter`` (iterations done),
``trainer.max_iter``, ``trainer.last_step`` (:class:`~yolact_lite.engine.step.StepResult`),
``trainer.last_row`` (the log row), ``trainer.latest_eval`` (``(step, metrics, mask_ap)`` of
the newest evaluation), ``trainer.eval_seconds`` (time spent evaluating) and
``trainer.reserve_s`` (seconds the end of the run needs to save).  Their
actions come in as callables, so each hook is tested on its own.
"""

from __future__ import annotations

import csv
import io
import math
import signal
import statistics
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ..errors import CheckpointError, YolactError
from ..io_utils import write_text_atomic
from .data import worker_death_error
from .loop import HookBase
from .step import LOSS_KEYS

__all__ = [
    "NonFiniteLossError", "LRScheduleHook", "EMAHook", "NonFiniteGuard", "EvalHook", "BestCheckpointHook",
    "CheckpointHook", "TimeBudgetHook", "StopSignalHook", "MetricsWriter", "ProgressHook", "LOG_FIELDS",
]

LOG_FIELDS = ["step", "epoch", "lr", "box", "class", "mask", "semantic", "mask_iou", "total",
              "num_positives", "skipped", "seconds"]
SHORT = {"box": "B", "class": "C", "mask": "M", "semantic": "S", "mask_iou": "I"}
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
    """Updates the weight average after every step that changed the weights."""

    def __init__(self, ema):
        self.ema = ema

    def after_step(self) -> None:
        if self.trainer.last_step.finite:
            self.ema.update(self.trainer.model)


class NonFiniteGuard(HookBase):
    """Warns on each skipped (non-finite) step; ``max_consecutive`` in a row stop the run."""

    def __init__(self, max_consecutive: int, note: Note):
        self.max_consecutive = int(max_consecutive)
        self.note = note
        self.consecutive = 0

    def after_step(self) -> None:
        step = self.trainer.iter
        result = self.trainer.last_step
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


class EvalHook(HookBase):
    """Evaluates every ``every`` steps and/or every ``every_minutes`` of wall time (0: off),
    and once after the last step.

    ``evaluate(step) -> (metrics or None, mask_ap or None)``; the result goes to
    ``trainer.latest_eval`` and the time it took is added to ``trainer.eval_seconds`` (a time
    budget counts training, not evaluation)."""

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
        self.trainer.latest_eval = (step, metrics, mask_ap)
        self.last_step = step
        self.last_time = self.clock()
        self.trainer.eval_seconds += self.last_time - t0

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
    """Keeps the weights with the best validation mask AP: ``save_best(step, metrics)``."""

    def __init__(self, save_best: Callable[[int, Optional[Dict[str, Any]]], None],
                 best_mask_ap: Optional[float] = None, best_step: Optional[int] = None):
        self.save_best = save_best
        self.best_mask_ap = best_mask_ap
        self.best_step = best_step
        self._seen: Optional[int] = None

    def _check(self) -> None:
        latest = getattr(self.trainer, "latest_eval", None)
        if latest is None or latest[0] == self._seen:
            return
        step, metrics, mask_ap = latest
        self._seen = step
        if mask_ap is not None and (self.best_mask_ap is None or mask_ap > self.best_mask_ap):
            self.best_mask_ap, self.best_step = float(mask_ap), int(step)
            self.save_best(step, metrics)

    def after_step(self) -> None:
        self._check()

    def after_train(self) -> None:
        if self.trainer.exception is None:
            self._check()


class CheckpointHook(HookBase):
    """``last.pt`` every ``every`` steps (0: only at the end), at the end, and when the run
    stops early (Ctrl-C, SIGTERM, a data error, the non-finite stop) at an iteration
    boundary, so no finished iteration is lost.  ``save(step)`` writes it."""

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
        self.trainer.reserve_s = max(self.trainer.reserve_s, self.clock() - t0)

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
        savable = isinstance(exc, (KeyboardInterrupt, YolactError)) or worker_death_error(exc, 0) is not None
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


class TimeBudgetHook(HookBase):
    """Ends the run when ``budget_s`` of training (wall clock of this process, less the time
    spent in periodic evaluations; the final evaluation comes after) would be exceeded.

    Unless the run already has a plan (``planned``), it times steps ``warmup + 1 ..
    warmup + calib_steps`` of this process and calls ``on_plan(total_steps)`` once with the
    number of steps that fit the budget at the MEDIAN step time (first steps and stalls, e.g.
    kernel set-up or a busy machine, do not count); the trainer then fixes the lr schedule to
    end there.  ``should_stop(over)`` lets DDP ranks agree."""

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
        now = self.clock() - t.eval_seconds
        if not self.planned and done_here > self.warmup:
            self.durations.append(now - self.previous)
            if len(self.durations) == self.calib_steps:
                per_step = statistics.median(self.durations)
                left = self.budget_s - (now - self.started) - t.reserve_s
                more = int(left // per_step) if per_step > 0 else t.max_iter
                self.planned = True
                self.on_plan(max(t.iter + 1, min(t.max_iter, t.iter + more)))
        self.previous = now
        over = now - self.started + t.reserve_s >= self.budget_s
        if t.iter < t.max_iter and self.should_stop(over):
            t.stop_reason = "time_budget"


class StopSignalHook(HookBase):
    """SIGINT / SIGTERM (main thread, single process): the first signal asks the loop to stop
    at the next iteration boundary (where last.pt is saved); a second aborts at once."""

    def __init__(self, note: Note):
        self.note = note
        self.signum: Optional[int] = None
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
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        self.note("stopping after the current iteration to save last.pt (Ctrl-C again to abort at once)")

    def before_step(self) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt

    def after_train(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


class MetricsWriter(HookBase):
    """``log.csv`` (every step; on resume the rows up to the resume step are kept),
    ``eval.csv`` (every evaluation: step, training minutes, AP) and, when the ``tensorboard``
    package is installed, TensorBoard scalars in ``RUN_DIR/tb``."""

    EVAL_FIELDS = ["step", "train_minutes", "box_AP", "mask_AP", "box_AP50", "mask_AP50", "box_AP_small",
                   "mask_AP_small", "mask_AP_medium", "mask_AP_large"]

    def __init__(self, run_dir: Path, note: Note, tensorboard: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        self.path = Path(run_dir) / "log.csv"
        self.run_dir = Path(run_dir)
        self.note = note
        self.use_tb = tensorboard
        self.clock = clock
        self.tb = None
        self._file = None
        self._eval_seen: Optional[int] = None
        self.started = 0.0

    def before_train(self) -> None:
        start = self.trainer.start_iter
        self.started = self.clock()
        self._rewrite_kept(self.path, LOG_FIELDS, start)
        self._rewrite_kept(self.run_dir / "eval.csv", self.EVAL_FIELDS, start)
        try:
            self._file = open(self.path, "a", newline="", encoding="utf-8")
        except OSError as exc:
            raise CheckpointError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._writer = csv.DictWriter(self._file, fieldnames=LOG_FIELDS, extrasaction="ignore")
        if self.use_tb:
            self._open_tensorboard(start)

    @staticmethod
    def _rewrite_kept(path: Path, fields: List[str], start: int) -> None:
        """The file with its header and the rows up to ``start`` (a resumed run continues it)."""
        kept: List[Dict[str, str]] = []
        if start > 0 and path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                kept = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= start]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        write_text_atomic(path, buf.getvalue())

    def _open_tensorboard(self, start: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        except Exception:
            self.note("note: TensorBoard logging skipped (the 'tensorboard' package is not installed); "
                      "log.csv has every step")
        else:
            self.tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=start + 1)

    def after_step(self) -> None:
        row = self.trainer.last_row
        self._writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._file.flush()
        if self.tb is not None:
            for key in ("lr", "total") + LOSS_KEYS:
                v = row.get(key)
                if isinstance(v, float) and math.isfinite(v):
                    self.tb.add_scalar(f"train/{key}", v, int(row["step"]))
        self._write_eval()

    def _write_eval(self) -> None:
        latest = getattr(self.trainer, "latest_eval", None)
        if latest is None or latest[0] == self._eval_seen or latest[1] is None:
            return
        step, metrics, _ = latest
        self._eval_seen = step
        minutes = (self.clock() - self.started - self.trainer.eval_seconds) / 60.0
        row = {"step": step, "train_minutes": f"{minutes:.2f}"}
        for kind in ("box", "mask"):
            for key, v in (metrics.get(kind) or {}).items():
                name = f"{kind}_{key}"
                if name in self.EVAL_FIELDS and isinstance(v, (int, float)):
                    row[name] = f"{v:.3f}"
                if self.tb is not None and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"val/{name}", float(v), step)
        with open(self.run_dir / "eval.csv", "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.EVAL_FIELDS, extrasaction="ignore").writerow(row)

    def after_train(self) -> None:
        self._write_eval()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


class ProgressHook(HookBase):
    """A progress bar with the loss terms and lr (a live bar on a terminal, a line every 30 s in
    a log).  Under a time budget the bar shows the budget and the elapsed time (an ETA to
    ``max_iter`` would be false until the plan is known)."""

    def __init__(self, budget_minutes: Optional[float] = None):
        self.budget_minutes = budget_minutes
        self.bar = None

    def before_train(self) -> None:
        from ..progress import progress_bar

        t = self.trainer
        desc, bar_format = "train", None
        if self.budget_minutes is not None:
            desc = f"train ({self.budget_minutes:g} min budget)"
            bar_format = "{desc}: step {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"
        self.bar = progress_bar(total=t.max_iter, initial=t.start_iter, desc=desc, unit="it", bar_format=bar_format,
                                mininterval=1.0)

    def after_step(self) -> None:
        t = self.trainer
        if self.bar.total != t.max_iter:
            self.bar.total = t.max_iter
        terms, lr = t.last_step.terms, t.last_row["lr"]
        self.bar.set_postfix_str(" ".join(f"{SHORT[k]} {terms[k]:.3f}" for k in LOSS_KEYS if k in terms)
                                 + f" T {terms['total']:.3f} lr {lr:.2e}", refresh=False)
        self.bar.update(1)

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()
