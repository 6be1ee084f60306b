"""Training hooks, one concern each (see :class:`yolact_lite.engine.loop.HookBase`): around the
step (:mod:`.training`), ending a run early (:mod:`.stopping`), evaluating and saving
(:mod:`.saving`) and reporting (:mod:`.metrics`).

A hook reads the loop's counters (``trainer.iter``, ``max_iter``, ``start_iter``,
``stop_reason``, ``exception``, ``in_step``) and the shared :class:`~yolact_lite.engine.state.RunState`
fields it declares in ``reads`` / ``writes``; its actions come in as callables, so each hook
is tested on its own, without a trainer.
"""

from .metrics import LOG_FIELDS, MetricsWriter, ProgressHook
from .saving import BestCheckpointHook, CheckpointHook, EvalHook
from .stopping import StopSignalHook, TimeBudgetHook
from .training import DeadPrototypesWarning, EMAHook, LRScheduleHook, NonFiniteGuard, NonFiniteLossError

__all__ = [
    "NonFiniteLossError", "LRScheduleHook", "EMAHook", "NonFiniteGuard", "DeadPrototypesWarning", "EvalHook",
    "BestCheckpointHook", "CheckpointHook", "TimeBudgetHook", "StopSignalHook", "MetricsWriter", "ProgressHook",
    "LOG_FIELDS",
]
