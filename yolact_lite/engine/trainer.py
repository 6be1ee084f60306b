"""The training loop: data, optimiser, schedule, checkpoints, resume, evaluation, DDP.

Behaviour (see ``ORIGINAL_YOLACT.md`` section 6 for the original's):

* SGD with momentum and weight decay on ALL parameters (BN and biases included), or AdamW;
  the lr of iteration ``i`` is :meth:`Schedule.lr_at` ``(i)`` (warm-up, steps, autoscale).
* ``train.batch_size`` is the total batch over all processes; each of the ``W`` DDP
  processes gets ``batch_size // W`` images of every global batch.  BatchNorm is frozen
  (modules in eval mode, affine parameters ``requires_grad=False``) when
  ``train.freeze_bn`` says so or, when it is None, when the per-process batch is < 6; the
  freeze is re-applied after every ``train()`` call.
* Data: one epoch = ``len(dataset) // batch_size`` iterations (at least 1) over an order
  drawn from ``(seed, epoch)``; sample ``index`` of ``epoch`` is augmented with a numpy
  Generator seeded from ``(seed, epoch, index)``.  An image whose non-crowd ground truths
  all vanish in augmentation is re-augmented with the seeds ``(seed, epoch, index, 1)``,
  ``(..., 2)``, ... (up to :data:`RETRIES`), then the next image is tried: deterministic,
  independent of the number of DataLoader workers, and resumable.  Training uses only
  images with a non-crowd annotation (as the original).
* A non-finite loss (on any process) skips the optimiser step (backward still runs, as the
  original); ``train.max_nonfinite_steps`` consecutive skips stop the run with
  :class:`NonFiniteLossError`.  ``train.grad_clip > 0`` clips the global gradient norm; a
  non-finite norm is treated like a non-finite loss.
* ``RUN_DIR/last.pt`` (every ``train.checkpoint_every_iters`` and at the end) holds the
  model, optimiser, (AMP) scaler, step, epoch and position, the RNG states of every process,
  the config, best metric, class names and category ids; ``--resume`` continues from it and,
  on CPU with the same thread count, reproduces an uninterrupted run bit for bit.
* Stopping early keeps the finished iterations (single process): Ctrl-C or SIGTERM stops the
  loop at the next iteration boundary and saves ``last.pt`` (a second signal aborts at once);
  a data error (one line naming the image, also from DataLoader workers, whose death is
  reported too) or the non-finite stop saves ``last.pt`` before the error is raised.  A
  process killed outright loses at most the iterations since the last checkpoint: writes are
  atomic, and temp files left by a kill are removed at the next start.
* With a validation set: COCO evaluation every ``train.eval_every_iters`` and at the end;
  ``best.pt`` keeps the weights with the best mask AP.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..cli import add_config_args
from ..checkpoint import model_checkpoint, read_state_file, save_atomic
from ..config import Config, config_from_dict, load_config, with_overrides
from ..data.coco import CocoDataset, collate
from ..data.transforms import build_train_transform
from ..errors import CheckpointError, ConfigError, DataError, YolactError
from ..loss import YolactLoss, mask_size_weight_fn
from ..model import build_model
from . import distributed as D
from .schedule import Schedule, build_schedule

__all__ = [
    "TrainOptions", "TrainResult", "Trainer", "NonFiniteLossError", "TrainStep",
    "make_predictor", "set_bn_frozen", "should_freeze_bn", "state_checksum", "build_parser", "main", "RETRIES",
]

RETRIES = 10  # re-augmentations of one image before moving on to the next image
LOSS_KEYS = ("box", "class", "mask", "semantic", "mask_iou")
SHORT = {"box": "B", "class": "C", "mask": "M", "semantic": "S", "mask_iou": "I"}
LOG_FIELDS = ["step", "epoch", "lr", "box", "class", "mask", "semantic", "mask_iou", "total",
              "num_positives", "skipped", "seconds"]


class NonFiniteLossError(YolactError):
    """Too many consecutive iterations had a non-finite loss."""


# --------------------------------------------------------------------------- options


@dataclass
class TrainOptions:
    """Everything about a run that is not in the :class:`Config`."""

    train_json: str
    train_images: str
    out: str
    val_json: Optional[str] = None
    val_images: Optional[str] = None
    max_minutes: Optional[float] = None
    max_iter: Optional[int] = None  # iterations to run (after autoscaling); None: schedule's
    resume: bool = False
    device: str = "cpu"
    pretrained: bool = True
    eval_max_images: Optional[int] = None
    deterministic: bool = False
    # None: channels_last on CUDA only. On CPU it made a training step slower (quiet 2-core
    # machine, benchmarks/train_speed.py: 0.78x ResNet-50, 0.93x EfficientNet-Lite0).
    channels_last: Optional[bool] = None
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


# --------------------------------------------------------------------------- BatchNorm


def _bn_modules(model: nn.Module) -> List[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def should_freeze_bn(config: Config, world_size: int = 1) -> bool:
    """``train.freeze_bn`` if set, else the original's rule: per-process batch < 6."""
    if config.train.freeze_bn is not None:
        return bool(config.train.freeze_bn)
    return config.train.batch_size // max(world_size, 1) < 6


def set_bn_frozen(model: nn.Module, frozen: bool) -> None:
    """Frozen: every BatchNorm in eval mode (running stats fixed), weight/bias without grad."""
    for bn in _bn_modules(model):
        if frozen:
            bn.eval()
        elif model.training:
            bn.train()
        for p in bn.parameters(recurse=False):
            p.requires_grad_(not frozen)


class TrainStep(nn.Module):
    """Model + loss in one module (what DDP wraps), so that the YOLACT++ mask-IoU head, which
    the loss calls, runs inside the DDP forward.  ``train()`` re-applies the BN freeze."""

    def __init__(self, model: nn.Module, criterion: YolactLoss, freeze_bn: bool):
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.freeze_bn = bool(freeze_bn)
        set_bn_frozen(self.model, self.freeze_bn)

    def train(self, mode: bool = True) -> "TrainStep":
        super().train(mode)
        if mode and self.freeze_bn:
            set_bn_frozen(self.model, True)
        return self

    def forward(self, images: Tensor, targets: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        outputs = self.model(images)
        return self.criterion(outputs, targets, mask_iou_head=getattr(self.model, "mask_iou_head", None))


# --------------------------------------------------------------------------- data


class TrainSamples(torch.utils.data.Dataset):
    """``dataset[(index, epoch)]`` with the re-augmentation rule of the module docstring."""

    def __init__(self, dataset: CocoDataset, retries: int = RETRIES):
        self.dataset = dataset
        self.retries = int(retries)

    def __len__(self) -> int:
        return len(self.dataset)

    @staticmethod
    def _usable(sample: Dict[str, Any]) -> bool:
        crowd = sample["is_crowd"]
        return bool((~crowd).any()) if len(crowd) else False

    def __getitem__(self, key) -> Dict[str, Any]:
        index, epoch = (int(k) for k in key)
        n = len(self.dataset)
        seed = self.dataset.seed
        for shift in range(n):
            i = (index + shift) % n
            for attempt in range(self.retries):
                words = [seed, epoch, i] + ([attempt] if attempt else [])
                sample = self._sample(i, np.random.default_rng(words))
                if self._usable(sample):
                    return sample
        raise DataError(f"{self.dataset.annotation_file}: no training image keeps a ground truth "
                        "after augmentation")

    def _sample(self, index: int, rng: np.random.Generator) -> Dict[str, Any]:
        """``dataset.sample``; any failure becomes a one-line DataError naming the image."""
        try:
            return self.dataset.sample(index, rng)
        except (YolactError, MemoryError, RecursionError):
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise DataError(f"{self.dataset.image_path(index)}: cannot load training sample {index} "
                            f"({type(exc).__name__}: {first})") from exc


def _worker_message(exc: BaseException) -> str:
    """The one-line message of an error re-raised from a DataLoader worker (torch appends
    the worker's traceback; the original message is its last line)."""
    text = str(exc).strip()
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1].strip()
    name = type(exc).__name__
    head, sep, rest = last.partition(": ")
    if sep and (head == name or head.endswith("." + name)):
        last = rest
    return f"{last} (in a DataLoader worker)"


class _StopRequest:
    """SIGINT / SIGTERM while training (main thread, single process): the first signal asks
    the loop to stop at the next iteration boundary, where last.pt is saved; a second signal
    aborts at once."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    @classmethod
    def install(cls) -> Optional["_StopRequest"]:
        if threading.current_thread() is not threading.main_thread():
            return None
        self = cls()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):  # pragma: no cover - exotic platforms
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print("stopping after the current iteration to save last.pt (Ctrl-C again to abort at once)",
              file=sys.stderr, flush=True)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields, for iterations ``start..end-1``, this process's keys ``[(index, epoch), ...]``."""

    def __init__(self, num_items: int, global_batch: int, rank: int, world: int, seed: int,
                 start: int, end: int):
        self.num_items, self.global_batch = int(num_items), int(global_batch)
        self.rank, self.world, self.seed = int(rank), int(world), int(seed)
        self.start, self.end = int(start), int(end)
        self.epoch_size = max(1, self.num_items // self.global_batch)

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self):
        cached_epoch, order = None, None
        for step in range(self.start, self.end):
            epoch, pos = divmod(step, self.epoch_size)
            if epoch != cached_epoch:
                order = D.epoch_order(self.num_items, self.seed, epoch, self.epoch_size * self.global_batch)
                cached_epoch = epoch
            batch = order[pos * self.global_batch:(pos + 1) * self.global_batch]
            yield [(i, epoch) for i in D.shard_batch(batch, self.rank, self.world)]


# --------------------------------------------------------------------------- RNG states


def _capture_rng(device: torch.device) -> Dict[str, Any]:
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


def _restore_rng(state: Dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def state_checksum(module: nn.Module) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes and bytes), for cross-rank checks."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --------------------------------------------------------------------------- small I/O


def _write_text_atomic(path: Path, text: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CheckpointError(f"cannot write to run directory {path.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}") from None


def _save(obj: Any, path: Path) -> None:
    """:func:`save_atomic`, with every OS error reported as a one-line CheckpointError."""
    try:
        save_atomic(obj, path)
    except OSError as exc:
        raise CheckpointError(f"could not write checkpoint {path}: {exc.strerror or exc}") from None


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write_test.", dir=run_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise CheckpointError(f"cannot write to run directory {run_dir}: {exc.strerror or exc}") from None


class _Log:
    """``log.csv`` (every iteration) and optional TensorBoard, on the main process only."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool, note):
        self.enabled = enabled
        self.path = run_dir / "log.csv"
        self.tb = None
        self._file = None
        if not enabled:
            return
        kept: List[Dict[str, str]] = []
        if start_step > 0 and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                kept = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= start_step]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        _write_text_atomic(self.path, buf.getvalue())
        try:
            self._file = open(self.path, "a", newline="", encoding="utf-8")
        except OSError as exc:
            raise CheckpointError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._writer = csv.DictWriter(self._file, fieldnames=LOG_FIELDS, extrasaction="ignore")
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        except Exception:
            note("note: TensorBoard logging skipped (the 'tensorboard' package is not installed); "
                 "log.csv has every step")
        else:
            self.tb = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=start_step + 1)

    def row(self, values: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()})
        self._file.flush()
        if self.tb is not None:
            step = int(values["step"])
            for key in ("lr", "total") + LOSS_KEYS:
                v = values.get(key)
                if isinstance(v, float) and math.isfinite(v):
                    self.tb.add_scalar(f"train/{key}", v, step)

    def metrics(self, step: int, metrics: Dict[str, Any]) -> None:
        if self.tb is None:
            return
        for kind in ("box", "mask"):
            for key, v in (metrics.get(kind) or {}).items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"val/{kind}_{key}", float(v), step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


# --------------------------------------------------------------------------- evaluation


def make_predictor(model: nn.Module, config: Config, device: torch.device, class_names: Sequence[str] = (),
                   category_ids: Sequence[int] = ()):
    """A :class:`~yolact_lite.predictor.Predictor` over a snapshot of ``model``'s current
    weights (an in-memory checkpoint; the predictor builds, loads and fuses its own copy, so
    the live training model is not touched)."""
    from ..predictor import Predictor  # imported lazily: it pulls in the NMS extension

    extra = {}
    if class_names:
        extra["class_names"] = list(class_names)
    if category_ids:
        extra["category_ids"] = list(category_ids)
    return Predictor(config, weights=model_checkpoint(model, config.to_dict(), **extra), device=str(device))


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """One training run.  ``Trainer(config, options).fit()``.

    ``config.model.num_classes`` must already match the training set (``main`` sets it);
    with ``options.resume`` and an existing ``out/last.pt`` the run continues from it (the
    caller passes the checkpoint's config, see :func:`resolve_config`).
    """

    def __init__(self, config: Config, options: TrainOptions, resume_state: Optional[Dict[str, Any]] = None,
                 dist_info: Optional[D.DistInfo] = None):
        self.options = options
        self.dist = dist_info or D.DistInfo()
        self.run_dir = Path(options.out)
        t = config.train
        world = self.dist.world_size
        if t.batch_size % world:
            raise ConfigError(f"train.batch_size ({t.batch_size}) must be divisible by the number "
                              f"of processes ({world})")
        self.device = self._device(options.device)
        self.amp = bool(t.amp) and self.device.type == "cuda"
        if t.amp and self.device.type != "cuda":
            self._note("note: --amp / train.amp is ignored on CPU (mixed precision needs CUDA)")
        if options.deterministic:
            torch.use_deterministic_algorithms(True)
            if self.device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.backends.cudnn.benchmark = False

        # ---- data (validated before anything is written)
        self.dataset = CocoDataset(options.train_json, options.train_images, skip_empty=True, seed=t.seed)
        if len(self.dataset) == 0:
            raise DataError(f"{options.train_json}: no image has a non-crowd annotation to train on")
        m = config.model
        self.dataset.transform = build_train_transform(
            m.input_size, m.pixel_mean, m.pixel_std, m.preserve_aspect_ratio, t.augment, t.min_box_pixels)
        if m.num_classes != self.dataset.num_classes:
            raise ConfigError(f"model.num_classes is {m.num_classes} but {options.train_json} has "
                              f"{self.dataset.num_classes} categories")
        self.class_names = list(self.dataset.class_names)
        self.category_ids = list(self.dataset.category_ids)
        self.has_val = bool(options.val_json)
        if self.has_val:
            self._check_val_categories()

        if resume_state is not None:
            saved_ids = list(resume_state.get("category_ids") or [])
            if saved_ids and saved_ids != self.category_ids:
                raise CheckpointError(f"{self.run_dir / 'last.pt'} was trained on other categories "
                                      f"than {options.train_json}")
        self.config = config

        # ---- schedule
        self.schedule: Schedule = build_schedule(t)
        target = options.max_iter
        if target is None and resume_state is not None:
            target = resume_state.get("target_iter")
        if target is not None:
            self.schedule = self.schedule.with_max_iter(int(target))
        self.start_step = int(resume_state["step"]) if resume_state is not None else 0

        # ---- run directory
        if self.dist.is_main:
            _check_writable(self.run_dir)
            for stale in list(self.run_dir.glob(".last.pt.*.tmp")) + list(self.run_dir.glob(".best.pt.*.tmp")):
                try:  # left by a process killed while writing a checkpoint
                    stale.unlink()
                except OSError:
                    pass
        D.barrier()

        # ---- model, loss, optimiser
        torch.manual_seed(t.seed)
        np.random.seed(t.seed % 2**32)
        random.seed(t.seed)
        self.model = build_model(config, pretrained=options.pretrained and resume_state is None)
        self.model.to(self.device)
        self.channels_last = (self.device.type == "cuda") if options.channels_last is None else options.channels_last
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.freeze_bn = should_freeze_bn(config, world)
        criterion = YolactLoss(config.loss, m.num_classes, t.masks_to_train, t.masks_selection,
                               class_weights=self._class_weights(config),
                               mask_instance_weight=mask_size_weight_fn(config.loss.mask_size_weight_power))
        self.step_module = TrainStep(self.model, criterion, self.freeze_bn).to(self.device)
        self.step_module.train()
        self.params = list(self.model.parameters())
        if resume_state is not None:
            from ..checkpoint import load_weights

            load_weights(self.model, resume_state)
        self.optimizer = self._optimizer(t)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp) if self.device.type == "cuda" else None
        if self.dist.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.step_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.model.mask_iou_head is not None,
            )
        else:
            self.ddp = self.step_module

        self.best_mask_ap: Optional[float] = None
        self.best_step: Optional[int] = None
        self.skipped_total = 0
        self.last_metrics: Optional[Dict[str, Any]] = None
        if resume_state is not None:
            self._load_training_state(resume_state)

        # ---- data loader (its own torch Generator: the global RNG is not consumed)
        self.sampler = StepBatchSampler(len(self.dataset), t.batch_size, self.dist.rank, world, t.seed,
                                        self.start_step, self.schedule.max_iter)
        workers = int(t.num_workers)
        self.loader = torch.utils.data.DataLoader(
            TrainSamples(self.dataset), batch_sampler=self.sampler, num_workers=workers,
            collate_fn=collate, persistent_workers=workers > 0, pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(t.seed),
        )

    # ----------------------------------------------------------------- set-up helpers

    def _device(self, name: str) -> torch.device:
        if str(name).startswith("cuda"):
            if not torch.cuda.is_available():
                raise ConfigError("--device cuda was requested but CUDA is not available")
            index = self.dist.local_rank if self.dist.enabled else (torch.device(name).index or 0)
            return torch.device("cuda", index)
        if name != "cpu":
            raise ConfigError(f"unknown device {name!r} (use cpu or cuda)")
        return torch.device("cpu")

    def _class_weights(self, config: Config) -> Optional[Tensor]:
        """``loss.class_balance``: None ("none"), or ``[C + 1]`` classification weights from
        the training set's non-crowd instance counts ("effective_number"; background 1.0)."""
        if config.loss.class_balance == "none":
            return None
        from ..data.stats import class_balanced_weights, class_counts

        foreground = class_balanced_weights(class_counts(self.dataset.coco.dataset), config.loss.class_balance_beta)
        self._note(f"class-balanced loss weights (beta {config.loss.class_balance_beta:g}): "
                   f"min {min((w for w in foreground if w > 0), default=0.0):.3g}, max {max(foreground):.3g}")
        return torch.tensor([1.0] + foreground, dtype=torch.float32)

    def _check_val_categories(self) -> None:
        from ..data.coco import load_coco_json

        val = load_coco_json(self.options.val_json)
        ids = sorted(int(c["id"]) for c in val["categories"])
        if ids != self.category_ids:
            raise DataError(f"{self.options.val_json}: its categories differ from the training set's "
                            f"({len(ids)} vs {len(self.category_ids)} ids); evaluation needs the same ids")
        if not Path(self.options.val_images or "").is_dir():
            raise DataError(f"{self.options.val_images}: validation image directory does not exist")

    def _optimizer(self, t) -> torch.optim.Optimizer:
        lr = self.schedule.lr_at(self.start_step)
        if t.optimizer == "sgd":
            return torch.optim.SGD(self.params, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)
        return torch.optim.AdamW(self.params, lr=lr, weight_decay=t.weight_decay)

    def _load_training_state(self, state: Dict[str, Any]) -> None:
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"cannot restore the optimiser from last.pt: {exc}") from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.best_mask_ap = state.get("best_mask_ap")
        self.best_step = state.get("best_step")
        self.skipped_total = int(state.get("skipped_steps", 0))
        rngs = state.get("rng") or []
        if len(rngs) == self.dist.world_size:
            _restore_rng(rngs[self.dist.rank], self.device)
        else:
            self._note(f"note: last.pt holds RNG states for {len(rngs)} process(es), this run has "
                       f"{self.dist.world_size}; mask-subset sampling will differ from an uninterrupted run")
            torch.manual_seed(self.config.train.seed + self.start_step + self.dist.rank)

    def _note(self, message: str) -> None:
        if self.dist.is_main:
            print(message, file=sys.stderr, flush=True)

    # ----------------------------------------------------------------- checkpoints

    def _gather_rng(self) -> List[Dict[str, Any]]:
        mine = _capture_rng(self.device)
        if not self.dist.enabled:
            return [mine]
        everyone: List[Any] = [None] * self.dist.world_size
        dist.all_gather_object(everyone, mine)
        return everyone

    def _next_batch(self, data_iter, step: int):
        """``next(data_iter)`` with one-line errors for failures in DataLoader workers."""
        try:
            return next(data_iter)
        except YolactError as exc:
            raise type(exc)(_worker_message(exc)) from None

    @staticmethod
    def _worker_death(exc: RuntimeError, step: int) -> Optional[DataError]:
        """A one-line DataError for torch's "DataLoader worker (pid N) exited unexpectedly ..."
        (raised by ``next()`` or, through torch's SIGCHLD handler, anywhere in the loop)."""
        text = str(exc).strip()
        if not text.startswith("DataLoader worker"):
            return None
        first = text.split(". ")[0].rstrip(".")
        return DataError(f"{first} near step {step + 1} (it crashed or was killed, e.g. out of memory); "
                         "rerun with --set train.num_workers=0 to see the error of the sample that caused it")

    def _save_before_exit(self, step: int, exc: BaseException) -> None:
        """Keep the iterations done since the last checkpoint when the run stops early."""
        try:
            self.save_last(step)
        except CheckpointError as err:
            self._note(f"warning: could not save last.pt at step {step}: {err}")
            return
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped by an error"
        self._note(f"{why} at step {step}: saved {self.run_dir / 'last.pt'} (continue with --resume)")

    def save_last(self, step: int) -> None:
        rngs = self._gather_rng()  # collective: every rank calls save_last
        if not self.dist.is_main:
            return
        epoch, position = divmod(step, self.sampler.epoch_size)
        ckpt = model_checkpoint(
            self.model, self.config.to_dict(),
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None and self.amp else None,
            step=int(step), epoch=int(epoch), position_in_epoch=int(position),
            epoch_size=int(self.sampler.epoch_size), target_iter=int(self.schedule.max_iter),
            rng=rngs, world_size=int(self.dist.world_size),
            best_mask_ap=self.best_mask_ap, best_step=self.best_step,
            skipped_steps=int(self.skipped_total),
            class_names=list(self.class_names), category_ids=list(self.category_ids),
        )
        _save(ckpt, self.run_dir / "last.pt")

    def _save_best(self, step: int, metrics: Dict[str, Any]) -> None:
        summary = {kind: {k: v for k, v in (metrics.get(kind) or {}).items() if isinstance(v, (int, float))}
                   for kind in ("box", "mask")}
        ckpt = model_checkpoint(self.model, self.config.to_dict(), step=int(step), metrics=summary,
                                class_names=list(self.class_names), category_ids=list(self.category_ids))
        _save(ckpt, self.run_dir / "best.pt")

    # ----------------------------------------------------------------- evaluation

    def evaluate(self, step: int) -> Optional[float]:
        """COCO evaluation on the main process (others wait); returns the mask AP everywhere."""
        if not self.has_val:
            return None
        mask_ap: Optional[float] = None
        if self.dist.is_main:
            from ..evaluation import evaluate

            was_training = self.step_module.training
            self.step_module.eval()
            try:
                with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                    with torch.no_grad():
                        predictor = make_predictor(self.model, self.config, self.device,
                                                   self.class_names, self.category_ids)
                        metrics = evaluate(predictor, self.options.val_json, self.options.val_images,
                                           max_images=self.options.eval_max_images, progress=False)
            finally:
                self.step_module.train(was_training)
            self.last_metrics = metrics
            mask_ap = (metrics.get("mask") or {}).get("AP")
            box_ap = (metrics.get("box") or {}).get("AP")
            self._note(f"[eval @ step {step}] box AP {_fmt_ap(box_ap)} | mask AP {_fmt_ap(mask_ap)} "
                       f"({metrics.get('num_images')} images)")
            self.log.metrics(step, metrics)
            if mask_ap is not None and (self.best_mask_ap is None or mask_ap > self.best_mask_ap):
                self.best_mask_ap, self.best_step = float(mask_ap), int(step)
                self._save_best(step, metrics)
        mask_ap = D.broadcast_object(mask_ap)
        self.best_mask_ap = D.broadcast_object(self.best_mask_ap)
        self.best_step = D.broadcast_object(self.best_step)
        return mask_ap

    # ----------------------------------------------------------------- the loop

    def _targets_to_device(self, targets: List[Dict[str, Any]]) -> List[Dict[str, Tensor]]:
        keys = ("boxes", "labels", "masks", "is_crowd")
        return [{k: t[k].to(self.device, non_blocking=True) for k in keys} for t in targets]

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def fit(self) -> TrainResult:
        opts, t = self.options, self.config.train
        end = self.schedule.max_iter
        step = self.start_step
        if self.dist.is_main:
            import yaml

            _write_text_atomic(self.run_dir / "config.yaml",
                               yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        self.log = _Log(self.run_dir, self.start_step, self.dist.is_main, self._note)
        if self.dataset.num_empty_images or self.dataset.dropped:
            self._note(f"note: {self.dataset.num_empty_images} image(s) without a non-crowd annotation are "
                       f"not used for training; dropped annotations: {dict(self.dataset.dropped) or 'none'}")
        if self.start_step >= end:
            self._note(f"nothing to do: the run is already at step {self.start_step} of {end}")
        self._note(
            f"training {self.config.name}: {len(self.dataset)} images, {self.dataset.num_classes} classes, "
            f"batch {t.batch_size} ({t.batch_size // self.dist.world_size} per process x "
            f"{self.dist.world_size}), iterations {self.start_step}->{end}, "
            f"lr {self.schedule.lr:.3g} (autoscale x{self.schedule.factor:g}), BN "
            f"{'frozen' if self.freeze_bn else 'trained'}, device {self.device}"
            + (", AMP" if self.amp else ""))

        from tqdm import tqdm

        desc, bar_format = "train", None  # None: tqdm's default bar with an ETA
        if opts.max_minutes is not None:
            # The time budget, not the iteration count, usually ends such a run: an ETA to
            # ``end`` would be false, so show the budget and the elapsed time instead.
            desc = f"train (stops after {opts.max_minutes:g} min or at step {end})"
            bar_format = "{desc}: step {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"
        bar = tqdm(total=end, initial=self.start_step, disable=not (self.dist.is_main and opts.progress),
                   dynamic_ncols=True, desc=desc, bar_format=bar_format, unit="it", mininterval=1.0)
        started = time.monotonic()
        reserve_s = 0.0  # time kept for the final save + evaluation under --max-minutes
        reason = "finished"
        consecutive = 0
        last_saved = last_eval = None
        data_iter = iter(self.loader)
        # Stopping early (Ctrl-C, SIGTERM, a data error, non-finite losses) saves last.pt when
        # the state is at an iteration boundary (single process: no collective needed).
        can_save = not self.dist.enabled
        stop = _StopRequest.install() if can_save else None
        in_step = False
        try:
            while step < end:
                if stop is not None and stop.signum is not None:
                    raise KeyboardInterrupt
                lr = self.schedule.lr_at(step)
                self._set_lr(lr)
                images, targets = self._next_batch(data_iter, step)
                in_step = True  # from here the model (BN statistics) and optimiser change
                images = images.to(self.device, non_blocking=True)
                if self.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                targets = self._targets_to_device(targets)
                t0 = time.perf_counter()
                with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
                    losses = self.ddp(images, targets)
                total = losses["total"]
                if self.amp:
                    self.scaler.scale(total).backward()
                else:
                    total.backward()
                present = [k for k in LOSS_KEYS if k in losses]
                local = torch.stack([losses[k].detach().float() for k in present]
                                    + [total.detach().float(), losses["num_positives"].detach().float()])
                values = D.all_reduce_mean(local).tolist()
                terms = dict(zip(present + ["total", "num_positives"], values))
                finite = math.isfinite(terms["total"])
                if finite and t.grad_clip > 0:
                    if self.amp:
                        self.scaler.unscale_(self.optimizer)
                    norm = torch.nn.utils.clip_grad_norm_(
                        [p for p in self.params if p.grad is not None], t.grad_clip)
                    finite = self.amp or bool(torch.isfinite(norm))  # the scaler skips inf grads itself
                if finite:
                    if self.amp:
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                    else:
                        self.optimizer.step()
                    consecutive = 0
                else:
                    consecutive += 1
                    self.skipped_total += 1
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                seconds = time.perf_counter() - t0
                epoch = (step - 1) // self.sampler.epoch_size
                row = {"step": step, "epoch": epoch, "lr": lr, "skipped": int(not finite),
                       "seconds": seconds, **{k: float(v) for k, v in terms.items()}}
                self.log.row(row)
                in_step = False
                if self.dist.is_main:
                    bar.set_postfix_str(" ".join(f"{SHORT[k]} {terms[k]:.3f}" for k in present)
                                        + f" T {terms['total']:.3f} lr {lr:.2e}", refresh=False)
                    bar.update(1)
                if not finite:
                    self._note(f"warning: non-finite loss at step {step} (total={terms['total']}); "
                               f"optimiser step skipped ({consecutive} in a row)")
                    if consecutive >= t.max_nonfinite_steps:
                        raise NonFiniteLossError(
                            f"stopping: {consecutive} consecutive iterations with a non-finite loss "
                            f"(train.max_nonfinite_steps={t.max_nonfinite_steps}) at step {step}; "
                            f"try a lower train.lr or train.grad_clip > 0")

                if t.eval_every_iters > 0 and step % t.eval_every_iters == 0 and step < end and self.has_val:
                    e0 = time.monotonic()
                    self.evaluate(step)
                    last_eval = step
                    reserve_s = max(reserve_s, time.monotonic() - e0)
                if t.checkpoint_every_iters > 0 and step % t.checkpoint_every_iters == 0 and step < end:
                    s0 = time.monotonic()
                    self.save_last(step)
                    last_saved = step
                    reserve_s = max(reserve_s, time.monotonic() - s0)
                if opts.max_minutes is not None and step < end:
                    over = time.monotonic() - started + reserve_s >= opts.max_minutes * 60.0
                    if D.broadcast_object(over):
                        reason = "time_budget"
                        break
        except (KeyboardInterrupt, YolactError, RuntimeError) as exc:
            error = self._worker_death(exc, step) if isinstance(exc, RuntimeError) else exc
            if error is None:  # any other RuntimeError is a bug: keep its traceback
                raise
            if (can_save and not in_step and not isinstance(error, CheckpointError)
                    and step not in (last_saved, self.start_step)):
                self._save_before_exit(step, error)
            if stop is not None and stop.signum is not None and not isinstance(error, KeyboardInterrupt):
                raise KeyboardInterrupt from None  # e.g. workers that died of the same Ctrl-C
            if error is exc:
                raise
            raise error from None
        finally:
            if stop is not None:
                stop.uninstall()
            bar.close()
            del data_iter

        if last_saved != step:
            self.save_last(step)
        if self.has_val and last_eval != step and step > 0:
            before = self.best_mask_ap
            self.evaluate(step)
            if self.best_mask_ap != before:
                self.save_last(step)  # record the new best metric in last.pt too
        self.log.close()
        checksum = state_checksum(self.model)
        print(f"weights sha256 (rank {self.dist.rank}): {checksum}", flush=True)
        if reason == "time_budget":
            self._note(f"stopped at the time budget ({opts.max_minutes:g} min) after step {step} of {end}; "
                       f"saved {self.run_dir / 'last.pt'} (continue with --resume)")
        else:
            self._note(f"finished {step} iterations; saved {self.run_dir / 'last.pt'}")
        if self.best_mask_ap is not None:
            self._note(f"best mask AP {self.best_mask_ap:.2f} at step {self.best_step} "
                       f"({self.run_dir / 'best.pt'})")
        return TrainResult(step=step, reason=reason, best_mask_ap=self.best_mask_ap,
                           last_metrics=self.last_metrics, skipped_steps=self.skipped_total,
                           checksum=checksum, run_dir=str(self.run_dir))


def _fmt_ap(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.2f}"


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train YOLACT on a COCO-format dataset (single process, or DDP under torchrun).")
    add_config_args(p, required=False)  # --config NAME_OR_PATH, --set KEY=VALUE (repeatable)
    p.add_argument("--train-json", required=True, help="COCO annotation file of the training set")
    p.add_argument("--train-images", required=True, help="image folder of the training set")
    p.add_argument("--val-json", help="COCO annotation file for periodic evaluation")
    p.add_argument("--val-images", help="image folder of the validation set")
    p.add_argument("--out", required=True, help="run directory (last.pt, best.pt, log.csv, config.yaml, tb/)")
    p.add_argument("--max-minutes", type=float, help="stop cleanly (save, evaluate) at this wall-clock budget")
    p.add_argument("--max-iter", type=int,
                   help="iterations to run, overriding the (autoscaled) train.max_iter; the lr curve is unchanged")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt (starts fresh when absent)")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--no-pretrained", action="store_true", help="random backbone init (no ImageNet weights)")
    p.add_argument("--eval-max-images", type=int, help="evaluate on at most this many validation images")
    p.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms(True)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last weights and inputs (default: on CUDA only; slower for CPU training)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def resolve_config(args: argparse.Namespace, num_classes: int):
    """(config, resume_state): the checkpoint's config on resume (``--config`` is then
    ignored), else the named config; then ``--set`` overrides, ``--amp`` and ``model.num_classes`` from the dataset."""
    last = Path(args.out) / "last.pt"
    state = None
    if args.resume and last.is_file():
        state = read_state_file(last)
        if not isinstance(state.get("config"), dict) or "optimizer" not in state:
            raise CheckpointError(f"{last} is not a training checkpoint of this library")
        config = config_from_dict(state["config"])
        config = with_overrides(config, args.overrides)
    else:
        if last.is_file():
            raise CheckpointError(f"{last} already exists: pass --resume to continue that run, "
                                  "or choose another --out")
        if not args.config:
            raise ConfigError("--config is required (a name such as yolact_effl0, or a YAML path)")
        config = load_config(args.config, args.overrides)
    extra = [f"model.num_classes={num_classes}"]
    if args.amp:
        extra.append("train.amp=true")
    return with_overrides(config, extra), state


def _count_classes(train_json: str) -> int:
    from ..data.coco import load_coco_json

    return len(load_coco_json(train_json)["categories"])


def run(args: argparse.Namespace) -> TrainResult:
    if bool(args.val_json) != bool(args.val_images):
        raise ConfigError("--val-json and --val-images go together")
    info = D.init_distributed(args.device)
    try:
        if args.resume and not (Path(args.out) / "last.pt").is_file() and info.is_main:
            print(f"note: {Path(args.out) / 'last.pt'} not found; starting a new run", file=sys.stderr)
        config, state = resolve_config(args, _count_classes(args.train_json))
        options = TrainOptions(
            train_json=args.train_json, train_images=args.train_images, out=args.out,
            val_json=args.val_json, val_images=args.val_images, max_minutes=args.max_minutes,
            max_iter=args.max_iter, resume=args.resume, device=args.device,
            pretrained=not args.no_pretrained, eval_max_images=args.eval_max_images,
            deterministic=args.deterministic, channels_last=args.channels_last,
            progress=not args.no_progress,
        )
        trainer = Trainer(config, options, resume_state=state, dist_info=info)
        del state
        return trainer.fit()
    finally:
        D.cleanup()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``scripts/train.py``: parse, train, return 0.  User errors raise :class:`YolactError`
    (the script wraps this in :func:`yolact_lite.cli.run_cli`: one ``error:`` line, exit 2)."""
    run(build_parser().parse_args(argv))
    return 0
