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
  class names (the format: :mod:`.checkpointer`); ``--resume`` continues from it bit for bit
  (CPU, same thread count).
* With a validation set: COCO evaluation every ``train.eval_every_iters`` and at the end;
  ``best.pt`` keeps the weights with the best mask AP.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..config import Config, require_config
from ..errors import CheckpointError, ConfigError, YolactError
from ..hardware import keep_freed_memory, resolve_device
from ..io_utils import write_text_atomic
from ..loss.criterion import YolactLoss, build_criterion
from ..model import build_model
from . import distributed as D
from . import hooks as H
from .checkpointer import Checkpointer, Resume
from .data import (
    StepBatchSampler,
    build_mixer,
    build_train_dataset,
    build_train_loader,
    check_val_set,
    mosaic_until,
    worker_death_error,
    worker_message,
)
from .ema import ModelEMA
from .evaluator import TrainingEvaluator, make_predictor
from .loop import HookBase, TrainLoop
from .options import TrainOptions, TrainResult, train_options
from .schedule import AnySchedule, build_schedule, fit_to_steps, move_scheduler_to
from .state import state_checksum
from .step import StepRunner, TrainStep, build_optimizer, channels_last_rule, choose_precision, should_freeze_bn

__all__ = ["TrainOptions", "TrainResult", "Trainer", "NonFiniteLossError", "make_predictor", "state_checksum",
           "YolactLoss"]

NonFiniteLossError = H.NonFiniteLossError


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write_test.", dir=run_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise CheckpointError(f"cannot write to run directory {run_dir}: {exc.strerror or exc}") from None


def _prepare_run_dir(run_dir: Path, is_main: bool) -> None:
    if is_main:
        _check_writable(run_dir)
        for stale in run_dir.glob(".*.pt.*.tmp"):
            try:  # left by a process killed while writing a checkpoint
                stale.unlink()
            except OSError:
                pass
    D.barrier()


def _prepare_process(options: TrainOptions, device: torch.device) -> None:
    """Process-wide settings of a run: deterministic algorithms, and freed memory kept for
    reuse (else every step faults its activations in anew: docs/training.md)."""
    if options.keep_freed_memory:
        keep_freed_memory()
    if options.deterministic:
        torch.use_deterministic_algorithms(True)
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class Trainer(TrainLoop):
    """One training run: ``Trainer(config, options).fit()``.

    ``config.model.num_classes`` must already match the training set (the CLI sets it); with
    ``resume_state`` (a ``last.pt`` dict, or its :class:`~.checkpointer.Resume`) the run
    continues from it.  ``extra_hooks`` run after the built-in ones.
    """

    def __init__(self, config: Config, options: TrainOptions,
                 resume_state: Optional[Union[Resume, Mapping[str, Any]]] = None,
                 dist_info: Optional[D.DistInfo] = None, extra_hooks: Sequence[HookBase] = (),
                 clock=time.monotonic):
        super().__init__()
        self.config, self.options, self.clock = require_config(config, "Trainer"), train_options(options), clock
        self.dist = dist_info or D.DistInfo()
        self.run_dir = Path(options.out)
        resume = resume_state if resume_state is None or isinstance(resume_state, Resume) else \
            Resume.from_dict(resume_state, self.run_dir / "last.pt")
        self.device = resolve_device(options.device, self.dist.local_rank if self.dist.enabled else None)
        if config.train.batch_size % self.dist.world_size:
            raise ConfigError(f"train.batch_size ({config.train.batch_size}) must be divisible by the number "
                              f"of processes ({self.dist.world_size})")
        self.autocast_dtype, self.precision = choose_precision(self.device, config.train.amp)
        _prepare_process(options, self.device)
        self._setup_data(resume)
        self._setup_schedule(resume)
        _prepare_run_dir(self.run_dir, self.dist.is_main)
        self._setup_model(resume)
        self._setup_optimizer(resume)
        self.sampler = StepBatchSampler(len(self.dataset), config.train.batch_size, self.dist.rank,
                                        self.dist.world_size, config.train.seed, self.start_iter_from_state,
                                        self.schedule.max_iter)
        self.dataset.mixer = build_mixer(config, self.note)
        if config.train.augment.mosaic > 0:  # the steps of the last mosaic_close of the plan close it
            self.sampler.mosaic_until = mosaic_until(self.schedule.max_iter, config.train.augment.mosaic_close)
        self.loader = build_train_loader(self.dataset, self.sampler, config.train.num_workers,
                                         self.device.type == "cuda", config.train.seed)
        self.checkpointer = Checkpointer(self.run_dir, config.to_dict(), self.class_names, self.category_ids,
                                         self.dist, self.device)
        self.evaluate = TrainingEvaluator(config, self.device, self.inference_model, self.step_module,
                                          options.val_json, options.val_images, options.eval_max_images,
                                          self.class_names, self.category_ids, self.dist.is_main, self.note)
        self.register_hooks(self._build_hooks() + list(extra_hooks))

    # ----------------------------------------------------------------- set-up

    def _setup_data(self, resume: Optional[Resume]) -> None:
        o = self.options
        self.dataset = build_train_dataset(self.config, o.train_json, o.train_images, self.note)
        self.class_names = list(self.dataset.class_names)
        self.category_ids = list(self.dataset.category_ids)
        self.has_val = bool(o.val_json)
        if self.has_val:
            check_val_set(o.val_json, o.val_images, self.category_ids)
        if resume is not None and resume.category_ids and resume.category_ids != self.category_ids:
            raise CheckpointError(f"{self.run_dir / 'last.pt'} was trained on other categories than {o.train_json}")

    def _setup_schedule(self, resume: Optional[Resume]) -> None:
        """The plan: the stored one on resume, else the config's; ``--max-iter`` cuts either."""
        self.planned = resume is not None and resume.plan_fixed
        self.schedule: AnySchedule = build_schedule(self.config.train)
        if resume is not None:
            self.schedule = resume.schedule(self.schedule)
        if self.options.max_iter is not None:
            self.schedule = self.schedule.with_max_iter(int(self.options.max_iter))
        self.start_iter_from_state = resume.step if resume is not None else 0

    def _setup_model(self, resume: Optional[Resume]) -> None:
        t, o = self.config.train, self.options
        _seed_everything(t.seed)
        self.model = build_model(self.config, pretrained=o.pretrained and resume is None and not o.init_weights)
        if o.init_weights and resume is None:
            from ..checkpoint.init_weights import init_from_checkpoint

            self.note(str(init_from_checkpoint(self.model, o.init_weights)))
        # Parameters frozen by model.backbone.frozen_stages get no optimiser state.
        self.named_params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named_params]
        if resume is not None:
            resume.load_model(self.model)
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
        if self.ema is not None and resume is not None:
            resume.load_ema(self.ema)
        self.ddp = self.step_module
        if self.dist.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.model.mask_iou_head is not None)

    def _setup_optimizer(self, resume: Optional[Resume]) -> None:
        t = self.config.train
        self.optimizer = build_optimizer(self.named_params, t, self.schedule.lr)
        use_scaler = self.autocast_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler) if use_scaler else None
        self.skipped_total = 0
        if resume is not None:
            resume.load_optimizer(self.optimizer, self.schedule.lr, self.scaler)
            self.state.best_mask_ap, self.state.best_step = resume.best_mask_ap, resume.best_step
            self.skipped_total = resume.skipped_steps
            resume.restore_rng(self.dist, self.device, t.seed, self.note)
        # The lambda reads self.schedule, so a budget plan fixed later takes effect at once.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: self.schedule.lr_at(it) / self.schedule.lr)
        if resume is not None:
            resume.load_scheduler(self.scheduler)
            move_scheduler_to(self.scheduler, self.schedule, resume.step)
        self.runner = StepRunner(self.ddp, self.optimizer, self.params, t.grad_clip, self.scaler)

    def _build_hooks(self) -> List[HookBase]:
        t, o = self.config.train, self.options
        single = not self.dist.enabled
        return [
            H.StopSignalHook(self.note) if single else None,
            H.LRScheduleHook(self.scheduler),
            H.EMAHook(self.ema, self.model) if self.ema is not None else None,
            H.EvalHook(self.evaluate, t.eval_every_iters, self.clock, t.eval_every_minutes) if self.has_val else None,
            H.BestCheckpointHook(lambda step, metrics: self.checkpointer.save_best(step, self.inference_model(),
                                                                                   metrics)),
            H.MetricsWriter(self.run_dir, self.note, clock=self.clock) if self.dist.is_main else None,
            H.ProgressHook(o.max_minutes) if (o.progress and self.dist.is_main) else None,
            H.NonFiniteGuard(t.max_nonfinite_steps, self.note),
            H.DeadPrototypesWarning(self.config.model.num_prototypes, self.note) if self.dist.is_main else None,
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
        result = self.state.last_step = self.runner(images, targets)
        self.skipped_total += int(not result.finite)
        step = self.iter + 1
        self.state.last_row = {"step": step, "epoch": (step - 1) // self.sampler.epoch_size, "lr": lr,
                               "skipped": int(not result.finite), "seconds": time.perf_counter() - t0,
                               **{k: float(v) for k, v in result.terms.items()}}

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
            self.sampler.mosaic_until = mosaic_until(num_steps, self.config.train.augment.mosaic_close)
        self.planned = True
        move_scheduler_to(self.scheduler, self.schedule, self.iter)
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
            if self.state.signal is not None and not isinstance(error, KeyboardInterrupt):
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
        best_ap, best_step = self.state.best_mask_ap, self.state.best_step
        if best_ap is not None:
            self.note(f"best mask AP {best_ap:.2f} at step {best_step} ({self.run_dir / 'best.pt'})")
        return TrainResult(step=step, reason=self.stop_reason or "finished", best_mask_ap=best_ap,
                           last_metrics=self.evaluate.last_metrics, skipped_steps=self.skipped_total,
                           checksum=checksum, run_dir=str(self.run_dir))

    def note(self, message: str) -> None:
        if self.dist.is_main:
            print(message, file=sys.stderr, flush=True)

    # ----------------------------------------------------------------- checkpoints

    def inference_model(self) -> nn.Module:
        """The weights evaluation and inference use: the EMA when on."""
        return self.ema.module if self.ema is not None else self.model

    def save_last(self, step: int) -> None:
        """``last.pt`` after ``step`` iterations (every process calls it)."""
        self.checkpointer.save_last(step, model=self.model, ema=self.ema, optimizer=self.optimizer,
                                    scheduler=self.scheduler, schedule=self.schedule, planned=self.planned,
                                    scaler=self.scaler, epoch_size=self.sampler.epoch_size, state=self.state,
                                    skipped_steps=self.skipped_total)
