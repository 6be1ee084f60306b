"""Which sample is drawn when, and with which random numbers: the ONE seeding rule.

Training must give the same batches whatever the number of DataLoader workers or processes,
and a resumed run must continue exactly.  So every random choice about the data is a pure
function of integers:

* the order of epoch ``e``: a permutation drawn from ``(seed, e)`` (:func:`epoch_order`);
* the augmentation of sample ``i`` in epoch ``e``: a Generator seeded with ``(seed, e, i)``,
  and ``(seed, e, i, a)`` for re-draw ``a >= 1`` (:func:`sample_rng`).

An image whose non-crowd ground truths all vanish in augmentation is re-augmented up to
:data:`RETRIES` times, then the next image is tried (:class:`TrainSamples`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from ..errors import DataError, YolactError

__all__ = ["RETRIES", "sample_rng", "epoch_order", "shard_batch", "TrainSamples"]

RETRIES = 10  # re-augmentations of one image before moving on to the next image


def sample_rng(seed: int, epoch: int, index: int, attempt: int = 0) -> np.random.Generator:
    """The Generator for sample ``index`` of ``epoch`` (``attempt`` > 0: a re-draw)."""
    words = [int(seed), int(epoch), int(index)] + ([int(attempt)] if attempt else [])
    return np.random.default_rng(words)


def epoch_order(num_items: int, seed: int, epoch: int, length: int) -> np.ndarray:
    """The sample order of one epoch, ``[length]`` int64: a permutation of ``range(num_items)``
    drawn from ``(seed, epoch)``, repeated with fresh permutations ``(seed, epoch, r)`` until it
    holds ``length`` items, then cut to ``length``."""
    if num_items < 1:
        raise ValueError("epoch_order: the dataset is empty")
    parts: List[np.ndarray] = [np.random.default_rng([seed, epoch]).permutation(num_items)]
    total, repeat = num_items, 1
    while total < length:
        parts.append(np.random.default_rng([seed, epoch, repeat]).permutation(num_items))
        total += num_items
        repeat += 1
    return np.concatenate(parts)[:length].astype(np.int64)


def shard_batch(global_batch: Sequence[int], rank: int, world_size: int) -> List[int]:
    """This rank's contiguous share of one global batch (the batch size must divide evenly)."""
    n = len(global_batch)
    if n % world_size:
        raise ValueError(f"a global batch of {n} cannot be split evenly over {world_size} processes")
    per = n // world_size
    return [int(i) for i in global_batch[rank * per:(rank + 1) * per]]


class TrainSamples(torch.utils.data.Dataset):
    """``samples[(index, epoch)]`` or ``samples[(index, epoch, mosaic_open)]``: the augmented
    training sample, re-drawn as the module says (the mosaic is open unless the key says 0)."""

    def __init__(self, dataset, retries: int = RETRIES):
        self.dataset = dataset
        self.retries = int(retries)

    def __len__(self) -> int:
        return len(self.dataset)

    @staticmethod
    def _usable(sample: Dict[str, Any]) -> bool:
        crowd = sample["is_crowd"]
        return bool((~crowd).any()) if len(crowd) else False

    def __getitem__(self, key) -> Dict[str, Any]:
        index, epoch, *flags = (int(k) for k in key)
        extra = (bool(flags[0]),) if flags else ()  # mosaic_open, when the sampler says
        n = len(self.dataset)
        for shift in range(n):
            i = (index + shift) % n
            for attempt in range(self.retries):
                sample = self._sample(i, sample_rng(self.dataset.seed, epoch, i, attempt), extra)
                if self._usable(sample):
                    return sample
        raise DataError(f"{self.dataset.annotation_file}: no training image keeps a ground truth "
                        "after augmentation")

    def _sample(self, index: int, rng: np.random.Generator, extra: tuple = ()) -> Dict[str, Any]:
        """``dataset.sample``; any failure becomes a one-line DataError naming the image."""
        try:
            return self.dataset.sample(index, rng, *extra)
        except (YolactError, MemoryError, RecursionError):
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise DataError(f"{self.dataset.image_path(index)}: cannot load training sample {index} "
                            f"({type(exc).__name__}: {first})") from exc
