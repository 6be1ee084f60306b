"""One training run: builds the data, model, optimiser and hooks, then runs the loop.

Behaviour (the original's where it has one; docs/training.md says what differs):

* SGD with momentum and weight decay, or AdamW, over every parameter not frozen by
  ``model.backbone.frozen_stages``; the lr of iteration ``i`` comes from the schedule plan
  (``train.schedule``: the original's warm-up + steps with batch autoscaling, or cosine),
  applied through ``torch.optim.lr_scheduler.LambdaLR``.  With ``--max-minutes`` the plan is
  fitted to the number of steps the budget allows (:class:`~.hooks.TimeBudgetHook`) and stored
  in the checkpoint, so a resumed run follows it exactly.
* ``train.batch_size`` is the total over all DDP processes.  BatchNorm is frozen when
  ``train.freeze_bn`` says so or, when it is None, when the per-process batch is < 6.
* Data: :mod:`yolact_lite.data.sampling` (deterministic in ``(seed, epoch, index)``, whatever
  the worker count; resumable).  Only images with a non-crowd annotation are used.
* Precision and the non-finite skip: :mod:`.step`.  EMA of the weights (``train.ema_decay``)
  is what evaluation, ``best.pt`` and the inference weights in ``last.pt`` use.
* ``RUN_DIR/last.pt`` (every ``train.checkpoint_every_iters``, at the end, and when stopped by
  Ctrl-C / SIGTERM / a data error / the non-finite stop) holds the inference weights under
  ``model`` (what the Predictor reads), the raw weights under ``train_model`` when EMA is on,
  optimiser, scheduler, plan, EMA, step, RNG states of every process, config, best metric and
  class names; ``--resume`` continues from it bit for bit (CPU, same thread count).
* With a validation set: COCO evaluation every ``train.eval_every_iters`` and at the end;
  ``best.pt`` keeps the weights with the best mask AP.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..checkpoint import load_weights, model_checkpoint, save_atomic
from ..config import Config
from ..data.coco import CocoDataset, load_coco_json
from ..data.mixing import SampleMixer
from ..data.transforms import build_train_transform
from ..errors import CheckpointError, ConfigError, DataError, YolactError
from ..hardware import resolve_device
from ..io_utils import write_text_atomic
from ..loss import YolactLoss, build_criterion
from ..model import build_model
from . import distributed as D
from . import hooks as H
from .data import StepBatchSampler, build_train_loader, worker_death_error, worker_message
from .ema import ModelEMA
from .loop import HookBase, TrainLoop
from .schedule import AnySchedule, build_schedule, fit_to_steps, schedule_from_dict, schedule_to_dict
from .state import capture_rng, restore_rng, state_checksum
from .step import StepRunner, TrainStep, channels_last_rule, choose_precision, should_freeze_bn

__all__ = ["TrainOptions", "TrainResult", "Trainer", "NonFiniteLossError", "make_predictor", "state_checksum",
           "YolactLoss"]

NonFiniteLossError = H.NonFiniteLossError


@dataclass
class TrainOptions:
    """Everything about a run that is not in the :class:`Config`."""

    train_json: str
    train_images: str
    out: str
    val_json: Optional[str] = None
    val_images: Optional[str] = None
    max_minutes: Optional[float] = None  # wall-clock budget of this process (training + periodic evals)
    max_iter: Optional[int] = None  # iterations to run (after autoscaling); None: the schedule's
    resume: bool = False
    device: str = "cpu"
    pretrained: bool = True
    init_weights: Optional[str] = None  # start from this checkpoint (ours or the original's)
    eval_max_images: Optional[int] = None
    deterministic: bool = False
    channels_last: Optional[bool] = None  # None: channels_last_rule(device, precision)
    progress: bool = True


@dataclass
class TrainResult:
    step: int
    reason: str  # "finished" | "time_budget"
    best_mask_ap: Optional[float]
    last_metrics: Optional[Dict[str, Any]]
    skipped_steps: int
    checksum: str
    run_dir: str


def make_predictor(model: nn.Module, config: Config, device: torch.device, class_names: Sequence[str] = (),
                   category_ids: Sequence[int] = ()):
    """A :class:`~yolact_lite.inference.predictor.Predictor` over a snapshot of ``model``'s current
    weights (the predictor builds, loads and fuses its own copy; ``model`` is not touched)."""
    from ..inference.predictor import Predictor  # imported lazily: it pulls in the NMS extension

    extra = {}
    if class_names:
        extra["class_names"] = list(class_names)
    if category_ids:
        extra["category_ids"] = list(category_ids)
    return Predictor(config, weights=model_checkpoint(model, config.to_dict(), **extra), device=str(device))


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write_test.", dir=run_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise CheckpointError(f"cannot write to run directory {run_dir}: {exc.strerror or exc}") from None


class Trainer(TrainLoop):
    """One training run: ``Trainer(config, options).fit()``.

    ``config.model.num_classes`` must already match the training set (the CLI sets it); with
    ``resume_state`` (a ``last.pt`` dict) the run continues from it.  ``extra_hooks`` run
    after the built-in ones.
    """

    def __init__(self, config: Config, options: TrainOptions, resume_state: Optional[Dict[str, Any]] = None,
                 dist_info: Optional[D.DistInfo] = None, extra_hooks: Sequence[HookBase] = (),
                 clock=time.monotonic):
        super().__init__()
        self.config, self.options, self.clock = config, options, clock
        self.dist = dist_info or D.DistInfo()
        self.run_dir = Path(options.out)
        self.device = resolve_device(options.device, self.dist.local_rank if self.dist.enabled else None)
        if config.train.batch_size % self.dist.world_size:
            raise ConfigError(f"train.batch_size ({config.train.batch_size}) must be divisible by the number "
                              f"of processes ({self.dist.world_size})")
        self.autocast_dtype, self.precision = choose_precision(self.device, config.train.amp)
        self._set_determinism(options.deterministic)
        self._setup_data(resume_state)
        self._setup_schedule(resume_state)
        self._prepare_run_dir()
        self._setup_model(resume_state)
        self._setup_optimizer(resume_state)
        self.sampler = StepBatchSampler(len(self.dataset), config.train.batch_size, self.dist.rank,
                                        self.dist.world_size, config.train.seed, self.start_iter_from_state,
                                        self.schedule.max_iter)
        self.dataset.mixer = self._build_mixer()
        self.loader = build_train_loader(self.dataset, self.sampler, config.train.num_workers,
                                         self.device.type == "cuda", config.train.seed)
        self.latest_eval = None
        self.last_metrics: Optional[Dict[str, Any]] = None
        self.register_hooks(self._build_hooks(resume_state) + list(extra_hooks))

    # ----------------------------------------------------------------- set-up

    def _set_determinism(self, deterministic: bool) -> None:
        if deterministic:
            torch.use_deterministic_algorithms(True)
            if self.device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.backends.cudnn.benchmark = False

    def _setup_data(self, resume_state) -> None:
        o, t, m = self.options, self.config.train, self.config.model
        self.dataset = CocoDataset(o.train_json, o.train_images, skip_empty=not t.empty_images, seed=t.seed)
        if len(self.dataset) == 0:
            raise DataError(f"{o.train_json}: no image has a non-crowd annotation to train on")
        self.dataset.transform = build_train_transform(
            m.input_size, m.pixel_mean, m.pixel_std, m.preserve_aspect_ratio, t.augment, t.min_box_pixels)
        if t.cache_samples:
            self.note(f"cached {len(self.dataset)} decoded training samples in memory "
                      f"({self.dataset.cache_samples() / 2**20:.0f} MiB)")
        if m.num_classes != self.dataset.num_classes:
            raise ConfigError(f"model.num_classes is {m.num_classes} but {o.train_json} has "
                              f"{self.dataset.num_classes} categories")
        self.class_names = list(self.dataset.class_names)
        self.category_ids = list(self.dataset.category_ids)
        self.has_val = bool(o.val_json)
        if self.has_val:
            ids = sorted(int(c["id"]) for c in load_coco_json(o.val_json)["categories"])
            if ids != self.category_ids:
                raise DataError(f"{o.val_json}: its categories differ from the training set's "
                                f"({len(ids)} vs {len(self.category_ids)} ids); evaluation needs the same ids")
            if not Path(o.val_images or "").is_dir():
                raise DataError(f"{o.val_images}: validation image directory does not exist")
        saved_ids = list((resume_state or {}).get("category_ids") or [])
        if saved_ids and saved_ids != self.category_ids:
            raise CheckpointError(f"{self.run_dir / 'last.pt'} was trained on other categories than {o.train_json}")

    def _build_mixer(self) -> Optional[SampleMixer]:
        """Copy-paste / mosaic from ``train.augment`` (None when both are off); the sampler
        marks the steps of the last ``mosaic_close`` of the plan as mosaic-closed."""
        a, m = self.config.train.augment, self.config.model
        if a.copy_paste <= 0 and a.mosaic <= 0:
            return None
        if a.mosaic > 0:
            self.sampler.mosaic_until = self._mosaic_until(self.schedule.max_iter)
        if not self.config.train.cache_samples:
            self.note("copy-paste / mosaic decode 2-4 images per sample: train.cache_samples=true keeps them decoded")
        return SampleMixer(a.copy_paste, a.paste_scale, a.mosaic, fill_bgr=tuple(reversed(m.pixel_mean)))

    def _mosaic_until(self, max_iter: int) -> int:
        """The first step without mosaic for a plan of ``max_iter`` steps."""
        return int(max_iter) - int(round(self.config.train.augment.mosaic_close * int(max_iter)))

    def _setup_schedule(self, resume_state) -> None:
        """The plan: the stored one on resume, else the config's; ``--max-iter`` cuts either."""
        state = resume_state or {}
        self.planned = bool(state.get("plan_fixed", False))
        if state.get("schedule_plan"):
            self.schedule: AnySchedule = schedule_from_dict(state["schedule_plan"])
        else:
            self.schedule = build_schedule(self.config.train)
            if state.get("target_iter") is not None:  # a format-1 checkpoint: no stored plan
                self.schedule = self.schedule.with_max_iter(int(state["target_iter"]))
        if self.options.max_iter is not None:
            self.schedule = self.schedule.with_max_iter(int(self.options.max_iter))
        self.start_iter_from_state = int(resume_state["step"]) if resume_state is not None else 0

    def _prepare_run_dir(self) -> None:
        if self.dist.is_main:
            _check_writable(self.run_dir)
            for stale in self.run_dir.glob(".*.pt.*.tmp"):
                try:  # left by a process killed while writing a checkpoint
                    stale.unlink()
                except OSError:
                    pass
        D.barrier()

    def _setup_model(self, resume_state) -> None:
        t, o = self.config.train, self.options
        torch.manual_seed(t.seed)
        np.random.seed(t.seed % 2**32)
        random.seed(t.seed)
        self.model = build_model(self.config, pretrained=o.pretrained and resume_state is None and not o.init_weights)
        if o.init_weights and resume_state is None:
            from ..init_weights import init_from_checkpoint

            self.note(str(init_from_checkpoint(self.model, o.init_weights)))
        # Parameters frozen by model.backbone.frozen_stages get no optimiser state.
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if resume_state is not None:
            load_weights(self.model, {**resume_state, "model": resume_state.get("train_model", resume_state["model"])})
        self.model.to(self.device)
        self.channels_last = (channels_last_rule(self.device, self.autocast_dtype)
                              if o.channels_last is None else o.channels_last)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.freeze_bn = should_freeze_bn(self.config, self.dist.world_size)
        criterion = build_criterion(self.config, self.dataset.coco.dataset)
        self.step_module = TrainStep(self.model, criterion, self.freeze_bn, self.autocast_dtype).to(self.device)
        self.step_module.train()
        self.ema = ModelEMA(self.model, t.ema_decay, t.ema_ramp_steps) if t.ema_decay > 0 else None
        if self.ema is not None and resume_state is not None and resume_state.get("ema"):
            self.ema.load_state_dict({"updates": resume_state["ema"]["updates"], "model": resume_state["model"]})
        if self.dist.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.model.mask_iou_head is not None)
        else:
            self.ddp = self.step_module

    def _setup_optimizer(self, resume_state) -> None:
        t = self.config.train
        lr = self.schedule.lr
        if t.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.params, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=t.weight_decay)
        use_scaler = self.autocast_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler) if use_scaler else None
        self.skipped_total = 0
        self.best = (None, None)
        if resume_state is not None:
            self._load_training_state(resume_state)
        # The lambda reads self.schedule, so a budget plan fixed later takes effect at once.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: self.schedule.lr_at(it) / self.schedule.lr)
        if resume_state is not None:
            if resume_state.get("scheduler"):
                self.scheduler.load_state_dict(resume_state["scheduler"])
            self._apply_lr(int(resume_state["step"]))
        self.runner = StepRunner(self.ddp, self.optimizer, self.params, t.grad_clip, self.scaler)

    def _apply_lr(self, step: int) -> None:
        """Put the scheduler at ``step`` and set the lr it gives (resume, a new plan)."""
        self.scheduler.last_epoch = int(step)
        factor = self.schedule.lr_at(step) / self.schedule.lr
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _load_training_state(self, state: Dict[str, Any]) -> None:
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"cannot restore the optimiser from last.pt: {exc}") from None
        for group in self.optimizer.param_groups:  # LambdaLR multiplies the base lr
            group.setdefault("initial_lr", self.schedule.lr)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.best = (state.get("best_mask_ap"), state.get("best_step"))
        self.skipped_total = int(state.get("skipped_steps", 0))
        rngs = state.get("rng") or []
        if len(rngs) == self.dist.world_size:
            restore_rng(rngs[self.dist.rank], self.device)
        else:
            self.note(f"note: last.pt holds RNG states for {len(rngs)} process(es), this run has "
                      f"{self.dist.world_size}; mask-subset sampling will differ from an uninterrupted run")
            torch.manual_seed(self.config.train.seed + int(state["step"]) + self.dist.rank)

    def _build_hooks(self, resume_state) -> List[HookBase]:
        t, o = self.config.train, self.options
        single = not self.dist.enabled
        self.best_hook = H.BestCheckpointHook(self._save_best, *self.best)
        return [
            H.StopSignalHook(self.note) if single else None,
            H.LRScheduleHook(self.scheduler),
            H.EMAHook(self.ema) if self.ema is not None else None,
            H.EvalHook(self.evaluate, t.eval_every_iters, self.clock, t.eval_every_minutes) if self.has_val else None,
            self.best_hook,
            H.MetricsWriter(self.run_dir, self.note, clock=self.clock) if self.dist.is_main else None,
            H.ProgressHook(o.max_minutes) if (o.progress and self.dist.is_main) else None,
            H.NonFiniteGuard(t.max_nonfinite_steps, self.note),
            H.CheckpointHook(self.save_last, t.checkpoint_every_iters, self.note, can_save_on_error=single,
                             clock=self.clock),
            H.TimeBudgetHook(o.max_minutes * 60.0, self._fix_plan, planned=self.planned, clock=self.clock,
                             should_stop=D.broadcast_object) if o.max_minutes is not None else None,
        ]

    # ----------------------------------------------------------------- the step

    def run_step(self) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        self.in_step = False  # a failure while loading the batch leaves the state at a boundary
        images, targets = self._next_batch()
        self.in_step = True
        t0 = time.perf_counter()
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        keys = ("boxes", "labels", "masks", "is_crowd")
        targets = [{k: tg[k].to(self.device, non_blocking=True) for k in keys} for tg in targets]
        self.last_step = self.runner(images, targets)
        self.skipped_total += int(not self.last_step.finite)
        step = self.iter + 1
        self.last_row = {"step": step, "epoch": (step - 1) // self.sampler.epoch_size, "lr": lr,
                         "skipped": int(not self.last_step.finite), "seconds": time.perf_counter() - t0,
                         **{k: float(v) for k, v in self.last_step.terms.items()}}

    def _next_batch(self):
        """The next batch, with one-line errors for failures in DataLoader workers."""
        try:
            return next(self._data_iter)
        except YolactError as exc:
            raise type(exc)(worker_message(exc)) from None

    def _fix_plan(self, num_steps: int) -> None:
        """The time budget fits ``num_steps`` steps: warm-up and decay end there."""
        self.schedule = fit_to_steps(self.schedule, num_steps)
        self.max_iter = num_steps  # the loop stops there; the sampler may have prefetched beyond
        if self.sampler.mosaic_until is not None:
            self.sampler.mosaic_until = self._mosaic_until(num_steps)
        self.planned = True
        self._apply_lr(self.iter)
        self.note(f"plan: ~{num_steps} steps fit in {self.options.max_minutes:g} min "
                  f"({self.config.train.schedule} schedule, warm-up {self.schedule.warmup_iters} steps, "
                  f"decay ends at step {num_steps})")

    # ----------------------------------------------------------------- fit

    def fit(self) -> TrainResult:
        self._announce()
        self._data_iter = iter(self.loader)
        try:
            self.train(self.start_iter_from_state, self.schedule.max_iter)
        except (KeyboardInterrupt, YolactError, RuntimeError) as exc:
            error = worker_death_error(exc, self.iter) if isinstance(exc, RuntimeError) else exc
            if error is None:  # any other RuntimeError is a bug: keep its traceback
                raise
            stop = next((h for h in self.hooks if isinstance(h, H.StopSignalHook)), None)
            if stop is not None and stop.signum is not None and not isinstance(error, KeyboardInterrupt):
                raise KeyboardInterrupt from None  # e.g. workers that died of the same Ctrl-C
            if error is exc:
                raise
            raise error from None
        finally:
            del self._data_iter
        return self._finish()

    def _announce(self) -> None:
        t, d = self.config.train, self.dist
        if self.dist.is_main:
            import yaml

            write_text_atomic(self.run_dir / "config.yaml", yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        if self.dataset.num_empty_images or self.dataset.dropped:
            use = "used as negatives" if t.empty_images else "not used for training (train.empty_images)"
            self.note(f"note: {self.dataset.num_empty_images} image(s) without a non-crowd annotation are "
                      f"{use}; dropped annotations: {dict(self.dataset.dropped) or 'none'}")
        start, end = self.start_iter_from_state, self.schedule.max_iter
        if start >= end:
            self.note(f"nothing to do: the run is already at step {start} of {end}")
        frozen = sum(p.numel() for p in self.model.parameters()) - sum(p.numel() for p in self.params)
        self.note(
            f"training {self.config.name}: {len(self.dataset)} images, {self.dataset.num_classes} classes, "
            f"batch {t.batch_size} ({t.batch_size // d.world_size} per process x {d.world_size}), "
            f"iterations {start}->{end}, lr {self.schedule.lr:.3g} ({t.schedule} schedule, autoscale "
            f"x{self.schedule.factor:g}), BN {'frozen' if self.freeze_bn else 'trained'}, "
            f"{frozen / 1e6:.2f} M backbone parameters frozen, device {self.device}, precision {self.precision}"
            f"{', channels_last' if self.channels_last else ''}, EMA {t.ema_decay if self.ema else 'off'}")

    def _finish(self) -> TrainResult:
        checksum = state_checksum(self.model)
        print(f"weights sha256 (rank {self.dist.rank}): {checksum}", flush=True)
        step = self.iter
        if self.stop_reason == "time_budget":
            self.note(f"stopped at the time budget ({self.options.max_minutes:g} min) after step {step} of "
                      f"{self.max_iter}; saved {self.run_dir / 'last.pt'} (continue with --resume)")
        else:
            self.note(f"finished {step} iterations; saved {self.run_dir / 'last.pt'}")
        best_ap, best_step = self.best_hook.best_mask_ap, self.best_hook.best_step
        if best_ap is not None:
            self.note(f"best mask AP {best_ap:.2f} at step {best_step} ({self.run_dir / 'best.pt'})")
        return TrainResult(step=step, reason=self.stop_reason or "finished", best_mask_ap=best_ap,
                           last_metrics=self.last_metrics, skipped_steps=self.skipped_total,
                           checksum=checksum, run_dir=str(self.run_dir))

    def note(self, message: str) -> None:
        if self.dist.is_main:
            print(message, file=sys.stderr, flush=True)

    # ----------------------------------------------------------------- checkpoints

    def inference_model(self) -> nn.Module:
        """The weights evaluation and inference use: the EMA when on."""
        return self.ema.module if self.ema is not None else self.model

    def _gather_rng(self) -> List[Dict[str, Any]]:
        mine = capture_rng(self.device)
        if not self.dist.enabled:
            return [mine]
        everyone: List[Any] = [None] * self.dist.world_size
        dist.all_gather_object(everyone, mine)
        return everyone

    def save_last(self, step: int) -> None:
        rngs = self._gather_rng()  # collective: every rank calls save_last
        if not self.dist.is_main:
            return
        epoch, position = divmod(step, self.sampler.epoch_size)
        extra = {}
        if self.ema is not None:
            extra = {"train_model": model_checkpoint(self.model, {})["model"],
                     "ema": {"updates": self.ema.updates, "decay": self.ema.decay}}
        best_ap, best_step = self.best_hook.best_mask_ap, self.best_hook.best_step
        ckpt = model_checkpoint(
            self.inference_model(), self.config.to_dict(), **extra,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            schedule_plan=schedule_to_dict(self.schedule), plan_fixed=bool(self.planned),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            step=int(step), epoch=int(epoch), position_in_epoch=int(position),
            epoch_size=int(self.sampler.epoch_size), target_iter=int(self.schedule.max_iter),
            rng=rngs, world_size=int(self.dist.world_size), best_mask_ap=best_ap, best_step=best_step,
            skipped_steps=int(self.skipped_total), class_names=list(self.class_names),
            category_ids=list(self.category_ids))
        save_atomic(ckpt, self.run_dir / "last.pt")

    def _save_best(self, step: int, metrics: Optional[Dict[str, Any]]) -> None:
        if not self.dist.is_main:
            return
        summary = {kind: {k: v for k, v in ((metrics or {}).get(kind) or {}).items() if isinstance(v, (int, float))}
                   for kind in ("box", "mask")}
        ckpt = model_checkpoint(self.inference_model(), self.config.to_dict(), step=int(step), metrics=summary,
                                class_names=list(self.class_names), category_ids=list(self.category_ids))
        save_atomic(ckpt, self.run_dir / "best.pt")

    # ----------------------------------------------------------------- evaluation

    def evaluate(self, step: int):
        """COCO evaluation of the inference weights on the main process (others wait);
        returns ``(metrics or None, mask AP)`` with the mask AP on every process."""
        metrics, mask_ap = None, None
        if self.dist.is_main:
            metrics = self._evaluate_here()
            self.last_metrics = metrics
            mask_ap = (metrics.get("mask") or {}).get("AP")
            box_ap = (metrics.get("box") or {}).get("AP")
            fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
            self.note(f"[eval @ step {step}] box AP {fmt(box_ap)} | mask AP {fmt(mask_ap)} "
                      f"({metrics.get('num_images')} images)")
        return metrics, D.broadcast_object(mask_ap)

    def _evaluate_here(self) -> Dict[str, Any]:
        from ..evaluation import evaluate

        was_training = self.step_module.training
        self.step_module.eval()
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                with torch.no_grad():
                    predictor = make_predictor(self.inference_model(), self.config, self.device,
                                               self.class_names, self.category_ids)
                    return evaluate(predictor, self.options.val_json, self.options.val_images,
                                    max_images=self.options.eval_max_images, progress=False)
        finally:
            self.step_module.train(was_training)
