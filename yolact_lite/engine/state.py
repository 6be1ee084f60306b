"""The state a run's parts share: :class:`RunState` (what hooks read and write, declared), and
a checksum of the weights (the RNG states in checkpoints are :mod:`.checkpointer`'s)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, NamedTuple, Optional

import torch
from torch import nn

__all__ = ["RunState", "EvalRecord", "state_checksum"]


class EvalRecord(NamedTuple):
    """One evaluation: after ``step`` iterations, its metrics (None off the main process) and mask AP."""

    step: int
    metrics: Optional[Dict[str, Any]]
    mask_ap: Optional[float]


@dataclass
class RunState:
    """What the step and the hooks share beyond the loop's counters (``iter``, ``max_iter``,
    ``stop_reason``...).  Each hook names the fields it reads and writes (``reads`` /
    ``writes``); the step writes ``last_step`` and ``last_row``."""

    last_step: Any = None  # StepResult of the newest step: terms and whether it was finite
    last_row: Optional[Dict[str, Any]] = None  # the log row of the newest step
    latest_eval: Optional[EvalRecord] = None  # EvalHook
    eval_seconds: float = 0.0  # time spent in periodic evaluation (EvalHook); budgets leave it out
    reserve_s: float = 0.0  # seconds the end of a run needs to save (CheckpointHook), for budgets
    best_mask_ap: Optional[float] = None  # BestCheckpointHook (restored on resume)
    best_step: Optional[int] = None
    signal: Optional[int] = None  # a SIGINT / SIGTERM received (StopSignalHook)


def state_checksum(module: nn.Module) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes and bytes), for cross-rank checks."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
