"""Hooks that report: ``log.csv`` / ``eval.csv`` / TensorBoard, and the progress bar."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ...errors import CheckpointError
from ...io_utils import write_text_atomic
from ..loop import HookBase
from ..step import LOSS_KEYS

__all__ = ["MetricsWriter", "ProgressHook"]

LOG_FIELDS = ["step", "epoch", "lr", "box", "class", "mask", "semantic", "mask_iou", "total",
              "num_positives", "prototypes_alive", "skipped", "seconds"]
SHORT = {"box": "B", "class": "C", "mask": "M", "semantic": "S", "mask_iou": "I"}
Note = Callable[[str], None]

class MetricsWriter(HookBase):
    """``log.csv`` (every step; on resume the rows up to the resume step are kept),
    ``eval.csv`` (every evaluation: step, training minutes, AP) and, when the ``tensorboard``
    package is installed, TensorBoard scalars in ``RUN_DIR/tb``."""

    EVAL_FIELDS = ["step", "train_minutes", "box_AP", "mask_AP", "box_AP50", "mask_AP50", "box_AP_small",
                   "mask_AP_small", "mask_AP_medium", "mask_AP_large"]

    reads = ("last_row", "latest_eval", "eval_seconds")

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
        row = self.state.last_row
        self._writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._file.flush()
        if self.tb is not None:
            for key in ("lr", "total") + LOSS_KEYS:
                v = row.get(key)
                if isinstance(v, float) and math.isfinite(v):
                    self.tb.add_scalar(f"train/{key}", v, int(row["step"]))
        self._write_eval()

    def _write_eval(self) -> None:
        latest = self.state.latest_eval
        if latest is None or latest[0] == self._eval_seen or latest[1] is None:
            return
        step, metrics, _ = latest
        self._eval_seen = step
        minutes = (self.clock() - self.started - self.state.eval_seconds) / 60.0
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

    reads = ("last_step", "last_row")

    def __init__(self, budget_minutes: Optional[float] = None):
        self.budget_minutes = budget_minutes
        self.bar = None

    def before_train(self) -> None:
        from ...progress import progress_bar

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
        terms, lr = self.state.last_step.terms, self.state.last_row["lr"]
        self.bar.set_postfix_str(" ".join(f"{SHORT[k]} {terms[k]:.3f}" for k in LOSS_KEYS if k in terms)
                                 + f" T {terms['total']:.3f} lr {lr:.2e}", refresh=False)
        self.bar.update(1)

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()
