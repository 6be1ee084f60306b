"""The training data stream: which keys each process loads at each step, and the loader.

The order and augmentation rule is :mod:`yolact_lite.data.sampling`; this module cuts it into
per-step, per-process batches and turns DataLoader failures into one-line errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

import torch

from ..config import Config
from ..data.coco import CocoDataset, collate, load_coco_json
from ..data.mixing import SampleMixer
from ..data.sampling import TrainSamples, epoch_order, shard_batch
from ..data.transforms import build_train_transform
from ..errors import ConfigError, DataError

__all__ = ["StepBatchSampler", "build_train_loader", "worker_message", "worker_death_error", "build_train_dataset",
           "check_val_set", "build_mixer", "mosaic_until"]


def build_mixer(config: Config, note: Callable[[str], None]) -> Optional[SampleMixer]:
    """Copy-paste / mosaic from ``train.augment`` (None when both are off)."""
    a, m = config.train.augment, config.model
    if a.copy_paste <= 0 and a.mosaic <= 0:
        return None
    if not config.train.cache_samples:
        note("copy-paste / mosaic decode 2-4 images per sample: train.cache_samples=true keeps them decoded")
    return SampleMixer(a.copy_paste, a.paste_scale, a.mosaic, fill_bgr=tuple(reversed(m.pixel_mean)))


def mosaic_until(max_iter: int, mosaic_close: float) -> int:
    """The first step without mosaic for a plan of ``max_iter`` steps."""
    return int(max_iter) - int(round(mosaic_close * int(max_iter)))


def build_train_dataset(config: Config, train_json: str, train_images: str,
                        note: Callable[[str], None]) -> CocoDataset:
    """The training set with its augmentation chain (decoded into memory with
    ``train.cache_samples``); its categories must match ``model.num_classes``."""
    t, m = config.train, config.model
    dataset = CocoDataset(train_json, train_images, skip_empty=not t.empty_images, seed=t.seed)
    if len(dataset) == 0:
        raise DataError(f"{train_json}: no image has a non-crowd annotation to train on")
    dataset.transform = build_train_transform(
        m.input_size, m.pixel_mean, m.pixel_std, m.preserve_aspect_ratio, t.augment, t.min_box_pixels)
    if t.cache_samples:
        note(f"cached {len(dataset)} decoded training samples in memory "
             f"({dataset.cache_samples() / 2**20:.0f} MiB)")
    if m.num_classes != dataset.num_classes:
        raise ConfigError(f"model.num_classes is {m.num_classes} but {train_json} has "
                          f"{dataset.num_classes} categories")
    return dataset


def check_val_set(val_json: str, val_images: Optional[str], category_ids: List[int]) -> None:
    """Evaluation needs the training set's category ids and an image directory."""
    ids = sorted(int(c["id"]) for c in load_coco_json(val_json)["categories"])
    if ids != category_ids:
        raise DataError(f"{val_json}: its categories differ from the training set's "
                        f"({len(ids)} vs {len(category_ids)} ids); evaluation needs the same ids")
    if not Path(val_images or "").is_dir():
        raise DataError(f"{val_images}: validation image directory does not exist")


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields, for iterations ``start..end-1``, this process's keys ``[(index, epoch), ...]``.
    One epoch is ``num_items // global_batch`` iterations (at least 1).  When ``mosaic_until``
    is set (a step; the trainer moves it when a time budget fixes the plan) the keys are
    ``(index, epoch, 1 if step < mosaic_until else 0)``: whether the mosaic is open."""

    def __init__(self, num_items: int, global_batch: int, rank: int, world: int, seed: int,
                 start: int, end: int):
        self.num_items, self.global_batch = int(num_items), int(global_batch)
        self.rank, self.world, self.seed = int(rank), int(world), int(seed)
        self.start, self.end = int(start), int(end)
        self.epoch_size = max(1, self.num_items // self.global_batch)
        self.mosaic_until: Optional[int] = None

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self):
        cached_epoch, order = None, None
        for step in range(self.start, self.end):
            epoch, pos = divmod(step, self.epoch_size)
            if epoch != cached_epoch:
                order = epoch_order(self.num_items, self.seed, epoch, self.epoch_size * self.global_batch)
                cached_epoch = epoch
            batch = order[pos * self.global_batch:(pos + 1) * self.global_batch]
            flag = () if self.mosaic_until is None else (int(step < self.mosaic_until),)
            yield [(i, epoch, *flag) for i in shard_batch(batch, self.rank, self.world)]


def build_train_loader(dataset, sampler: StepBatchSampler, num_workers: int, pin_memory: bool,
                       seed: int) -> torch.utils.data.DataLoader:
    """One iterator serves the whole run (the sampler yields every step), so the workers end with
    it; its own torch Generator, so the global RNG is not consumed."""
    return torch.utils.data.DataLoader(
        TrainSamples(dataset), batch_sampler=sampler, num_workers=int(num_workers), collate_fn=collate,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed))


def worker_message(exc: BaseException) -> str:
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


def worker_death_error(exc: BaseException, step: int) -> Optional[DataError]:
    """A one-line DataError for torch's "DataLoader worker (pid N) exited unexpectedly ..."."""
    text = str(exc).strip()
    if not isinstance(exc, RuntimeError) or not text.startswith("DataLoader worker"):
        return None
    first = text.split(". ")[0].rstrip(".")
    return DataError(f"{first} near step {step + 1} (it crashed or was killed, e.g. out of memory); "
                     "rerun with --set train.num_workers=0 to see the error of the sample that caused it")
