"""The training checkpoint format, in one place: what ``last.pt`` and ``best.pt`` hold, the
RNG states in them, and every read of a resume dict (:class:`Resume`).

``last.pt`` is the file format of :mod:`yolact_lite.checkpoint.files` (format tag, format
version, config with its ``config_version``, inference weights under ``model``) plus:
``train_model`` (raw weights when EMA is on), ``ema`` (``updates``, ``decay``), ``optimizer``,
``scheduler``, ``schedule_plan`` / ``plan_fixed`` (the lr plan, fixed by a time budget),
``scaler``, ``step``, ``epoch``, ``position_in_epoch``, ``epoch_size``, ``target_iter``,
``rng`` (one state per process), ``world_size``, ``best_mask_ap``, ``best_step``,
``skipped_steps``, ``class_names`` and ``category_ids``.  Format-1 files lack the plan (their
``target_iter`` gives the plan's length).  ``best.pt`` holds the inference weights, ``step``,
a summary of the ``metrics``, ``class_names`` and ``category_ids``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..checkpoint.files import load_weights, model_checkpoint, read_state_file, save_atomic
from ..errors import CheckpointError
from .distributed import DistInfo
from .schedule import AnySchedule, schedule_from_dict, schedule_to_dict
from .state import RunState

__all__ = ["Checkpointer", "Resume", "read_resume", "capture_rng", "restore_rng"]

Note = Callable[[str], None]


def capture_rng(device: torch.device) -> Dict[str, Any]:
    """This process's RNG states in weights_only-loadable form (tensors, ints, lists)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(py_version), "state": [int(v) for v in py_state],
                   "gauss_next": py_gauss},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: Dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class Resume:
    """A ``last.pt`` dict, read: the fields a resumed run uses, and the actions that put the
    saved state back into the run's parts."""

    data: Dict[str, Any]
    step: int
    config: Dict[str, Any]
    category_ids: List[int]
    best_mask_ap: Optional[float]
    best_step: Optional[int]
    skipped_steps: int
    plan_fixed: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: Union[str, Path] = "last.pt") -> "Resume":
        """One-line :class:`CheckpointError` for a dict that is not a training checkpoint of ours."""
        if not isinstance(data.get("config"), dict) or "optimizer" not in data:
            raise CheckpointError(f"{where} is not a training checkpoint of this library")
        return cls(data=dict(data), step=int(data["step"]), config=data["config"],
                   category_ids=list(data.get("category_ids") or []), best_mask_ap=data.get("best_mask_ap"),
                   best_step=data.get("best_step"), skipped_steps=int(data.get("skipped_steps", 0)),
                   plan_fixed=bool(data.get("plan_fixed", False)))

    def schedule(self, default: AnySchedule) -> AnySchedule:
        """The stored lr plan; a format-1 checkpoint has none: ``default`` cut to its target."""
        if self.data.get("schedule_plan"):
            return schedule_from_dict(self.data["schedule_plan"])
        if self.data.get("target_iter") is not None:
            return default.with_max_iter(int(self.data["target_iter"]))
        return default

    def load_model(self, model: nn.Module) -> None:
        """The weights training continues from: the raw ones (``train_model``) when EMA was on."""
        load_weights(model, {**self.data, "model": self.data.get("train_model", self.data["model"])})

    def load_ema(self, ema) -> None:
        if self.data.get("ema"):
            ema.load_state_dict({"updates": self.data["ema"]["updates"], "model": self.data["model"]})

    def load_optimizer(self, optimizer: torch.optim.Optimizer, base_lr: float, scaler=None) -> None:
        try:
            optimizer.load_state_dict(self.data["optimizer"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"cannot restore the optimiser from last.pt: {exc}") from None
        for group in optimizer.param_groups:  # LambdaLR multiplies the base lr
            group.setdefault("initial_lr", base_lr)
        if scaler is not None and self.data.get("scaler"):
            scaler.load_state_dict(self.data["scaler"])

    def load_scheduler(self, scheduler) -> None:
        if self.data.get("scheduler"):
            scheduler.load_state_dict(self.data["scheduler"])

    def restore_rng(self, dist_info: DistInfo, device: torch.device, seed: int, note: Note) -> None:
        """This process's RNG states; with another process count, a seed from the step instead."""
        rngs = self.data.get("rng") or []
        if len(rngs) == dist_info.world_size:
            restore_rng(rngs[dist_info.rank], device)
            return
        note(f"note: last.pt holds RNG states for {len(rngs)} process(es), this run has "
             f"{dist_info.world_size}; mask-subset sampling will differ from an uninterrupted run")
        torch.manual_seed(seed + self.step + dist_info.rank)


def read_resume(path: Union[str, Path]) -> Resume:
    """``last.pt`` at ``path``, read and checked."""
    return Resume.from_dict(read_state_file(path), where=path)


class Checkpointer:
    """Writes ``RUN_DIR/last.pt`` and ``RUN_DIR/best.pt`` of one run (the main process writes;
    every process takes part in gathering the RNG states)."""

    def __init__(self, run_dir: Path, config_dict: Dict[str, Any], class_names: List[str],
                 category_ids: List[int], dist_info: DistInfo, device: torch.device):
        self.run_dir = Path(run_dir)
        self.config_dict = config_dict
        self.labels = {"class_names": list(class_names), "category_ids": list(category_ids)}
        self.dist, self.device = dist_info, device

    def _gather_rng(self) -> List[Dict[str, Any]]:
        mine = capture_rng(self.device)
        if not self.dist.enabled:
            return [mine]
        everyone: List[Any] = [None] * self.dist.world_size
        dist.all_gather_object(everyone, mine)
        return everyone

    def save_last(self, step: int, *, model: nn.Module, ema, optimizer, scheduler, schedule: AnySchedule,
                  planned: bool, scaler, epoch_size: int, state: RunState, skipped_steps: int) -> None:
        """``last.pt`` after ``step`` iterations (a collective: every process calls it)."""
        rngs = self._gather_rng()
        if not self.dist.is_main:
            return
        epoch, position = divmod(step, epoch_size)
        extra = {}
        if ema is not None:
            extra = {"train_model": model_checkpoint(model, {})["model"],
                     "ema": {"updates": ema.updates, "decay": ema.decay}}
        ckpt = model_checkpoint(
            ema.module if ema is not None else model, self.config_dict, **extra,
            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            schedule_plan=schedule_to_dict(schedule), plan_fixed=bool(planned),
            scaler=scaler.state_dict() if scaler is not None else None,
            step=int(step), epoch=int(epoch), position_in_epoch=int(position), epoch_size=int(epoch_size),
            target_iter=int(schedule.max_iter), rng=rngs, world_size=int(self.dist.world_size),
            best_mask_ap=state.best_mask_ap, best_step=state.best_step, skipped_steps=int(skipped_steps),
            **self.labels)
        save_atomic(ckpt, self.run_dir / "last.pt")

    def save_best(self, step: int, model: nn.Module, metrics: Optional[Dict[str, Any]]) -> None:
        """``best.pt``: the inference weights ``model`` and a summary of ``metrics``."""
        if not self.dist.is_main:
            return
        summary = {kind: {k: v for k, v in ((metrics or {}).get(kind) or {}).items() if isinstance(v, (int, float))}
                   for kind in ("box", "mask")}
        ckpt = model_checkpoint(model, self.config_dict, step=int(step), metrics=summary, **self.labels)
        save_atomic(ckpt, self.run_dir / "best.pt")
