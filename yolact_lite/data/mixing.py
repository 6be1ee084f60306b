"""Augmentations that draw other training images: copy-paste and the 4-image mosaic.

They run on DECODED samples (:meth:`yolact_lite.data.coco.CocoDataset.raw_sample`), before the
per-sample chain of :mod:`yolact_lite.data.transforms`:

* ``image``  uint8 [H, W, 3] BGR;  ``masks`` uint8 {0, 1} [n, H, W]
* ``boxes``  float32 [n, 4] absolute x1, y1, x2, y2 (pixel column i spans [i, i+1))
* ``labels`` int64 [n];  ``is_crowd`` bool [n], crowds LAST

and return the same layout.  Masks stay binary (a rescaled mask is bilinear, then >= 0.5);
every instance an op moves, rescales or occludes gets the tight box of its mask
(:func:`tight_boxes`); an instance left without a pixel is dropped.  Instances an op leaves
untouched keep their boxes.

Randomness comes only from the Generator passed in (seeded from (seed, epoch, index) by
:mod:`yolact_lite.data.sampling`), and the other images are drawn by index from it, so a
resumed run sees the same mixes.
"""

from __future__ import annotations

from typing import Any, Dict, List, Protocol, Sequence, Tuple

import cv2
import numpy as np

from .transforms import PER_GT_KEYS, _resize_masks, _select

Sample = Dict[str, Any]

__all__ = ["tight_boxes", "rescale", "paste", "mosaic4", "SampleMixer"]


class SampleSource(Protocol):
    """Where the other images come from (a :class:`~yolact_lite.data.coco.CocoDataset`)."""

    def __len__(self) -> int: ...

    def raw_sample(self, index: int) -> Sample: ...


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """float32 [n, 4]: x1, y1 = first column / row with a pixel, x2, y2 = last + 1 (0s when empty)."""
    masks = np.asarray(masks).astype(bool, copy=False)
    n = masks.shape[0]
    boxes = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return boxes
    cols, rows = masks.any(axis=1), masks.any(axis=2)  # [n, W], [n, H]
    filled = cols.any(axis=1)
    width, height = cols.shape[1], rows.shape[1]
    boxes[:, 0] = cols.argmax(axis=1)
    boxes[:, 1] = rows.argmax(axis=1)
    boxes[:, 2] = width - cols[:, ::-1].argmax(axis=1)
    boxes[:, 3] = height - rows[:, ::-1].argmax(axis=1)
    boxes[~filled] = 0.0
    return boxes


def _order_crowds_last(parts: Sequence[Sample]) -> Dict[str, np.ndarray]:
    """The per-gt arrays of ``parts`` concatenated: every part's non-crowds, then every part's crowds."""
    out: Dict[str, np.ndarray] = {}
    crowd = [np.asarray(p["is_crowd"], dtype=bool) for p in parts]
    for key in PER_GT_KEYS:
        arrays = [np.asarray(p[key]) for p in parts]
        out[key] = np.concatenate([a[~c] for a, c in zip(arrays, crowd)] + [a[c] for a, c in zip(arrays, crowd)])
    return out


def rescale(sample: Sample, height: int, width: int) -> Sample:
    """``sample`` resized to ``height`` x ``width`` (image bilinear, masks bilinear then >= 0.5,
    boxes re-fitted to the masks, emptied instances dropped).  Same size: returned as is."""
    image = np.asarray(sample["image"])
    if image.shape[:2] == (height, width):
        return sample
    masks = (_resize_masks(np.asarray(sample["masks"]), height, width) >= 0.5).astype(np.uint8)
    out = dict(sample)
    out["image"] = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    out["masks"] = masks
    out["boxes"] = tight_boxes(masks)
    return _select(out, masks.any(axis=(1, 2)))


Window = Tuple[slice, slice]


def _place(sample: Sample, top: int, left: int, height: int, width: int) -> Tuple[Sample, Window, Window]:
    """``sample`` shifted so its top-left pixel lands at (top, left) of a ``height`` x ``width``
    canvas and cut to it: masks [n, height, width], boxes re-fitted, emptied instances dropped;
    also the canvas and sample slices of the visible part (for the image)."""
    h, w = np.asarray(sample["image"]).shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, height), min(left + w, width)
    y1, x1 = max(y1, y0), max(x1, x0)
    canvas_part = (slice(y0, y1), slice(x0, x1))
    sample_part = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    src = np.asarray(sample["masks"])
    masks = np.zeros((src.shape[0], height, width), dtype=np.uint8)
    masks[:, canvas_part[0], canvas_part[1]] = src[:, sample_part[0], sample_part[1]]
    out = dict(sample)
    out["masks"] = masks
    out["boxes"] = tight_boxes(masks)
    out = _select(out, masks.any(axis=(1, 2)))
    return out, canvas_part, sample_part


def paste(target: Sample, source: Sample, top: int, left: int) -> Sample:
    """Every instance of ``source`` pasted onto ``target`` with the source's top-left at
    (top, left) (parts outside the target are cut): the pixels of the union of the pasted
    masks take the source's pixels; the target's masks lose those pixels (boxes re-fitted
    where they lost any, dropped when nothing is left).  Order: the target's non-crowds, the
    pasted instances, then crowds (the target's, then pasted crowds)."""
    image = np.array(target["image"], copy=True)
    height, width = image.shape[:2]
    placed, canvas_part, sample_part = _place(source, top, left, height, width)
    union = placed["masks"].any(axis=0)
    region = union[canvas_part]
    image[canvas_part][region] = np.asarray(source["image"])[sample_part][region]

    below = np.asarray(target["masks"])
    left_over = (below.astype(bool) & ~union).astype(np.uint8)
    occluded = (left_over != below).any(axis=(1, 2))
    boxes = np.asarray(target["boxes"], dtype=np.float32).reshape(-1, 4).copy()
    boxes[occluded] = tight_boxes(left_over[occluded])
    kept = dict(target)
    kept.update(masks=left_over, boxes=boxes)
    kept = _select(kept, left_over.any(axis=(1, 2)))

    out = dict(target)
    out.update(_order_crowds_last([kept, placed]))
    out["image"] = image
    return out


def mosaic4(samples: Sequence[Sample], side: int, centre_x: int, centre_y: int,
            fill_bgr: Sequence[float] = (0.0, 0.0, 0.0)) -> Sample:
    """A ``side`` x ``side`` mosaic: each of the 4 samples is rescaled (aspect kept) so its
    longer side is ``side // 2`` and put in one corner of the point (centre_x, centre_y):
    sample 0 above-left of it, 1 above-right, 2 below-left, 3 below-right; what falls off the
    canvas is cut, the rest of the canvas is ``fill_bgr``.  Ids and sizes are sample 0's."""
    if len(samples) != 4:
        raise ValueError(f"mosaic4 needs 4 samples; got {len(samples)}")
    half = max(1, side // 2)
    canvas = np.empty((side, side, 3), dtype=np.asarray(samples[0]["image"]).dtype)
    canvas[:, :] = np.round(np.asarray(fill_bgr, dtype=np.float64)).astype(canvas.dtype)
    parts: List[Sample] = []
    for k, sample in enumerate(samples):
        h, w = np.asarray(sample["image"]).shape[:2]
        factor = half / max(h, w)
        sample = rescale(sample, max(1, int(round(h * factor))), max(1, int(round(w * factor))))
        h, w = np.asarray(sample["image"]).shape[:2]
        top = centre_y - h if k < 2 else centre_y
        left = centre_x - w if k % 2 == 0 else centre_x
        placed, canvas_part, sample_part = _place(sample, top, left, side, side)
        canvas[canvas_part] = np.asarray(sample["image"])[sample_part]
        parts.append(placed)
    out = dict(samples[0])
    out.update(_order_crowds_last(parts))
    out["image"] = canvas
    return out


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


class SampleMixer:
    """Mosaic (probability ``mosaic``, unless the caller says it is closed), then copy-paste
    (probability ``copy_paste``): ``mixer(sample, rng, source, mosaic_open)``.

    Copy-paste draws a source image, keeps each of its non-crowd instances with probability
    1/2 (at least one), rescales it to fit the target times s ~ log-uniform(``paste_scale``)
    and pastes those instances at a uniform random position (Simple Copy-Paste, Ghiasi et al.
    2021).  The mosaic is as large as the sample's longer side, its centre uniform in the
    middle half.
    """

    def __init__(self, copy_paste: float = 0.0, paste_scale: Sequence[float] = (0.25, 1.0),
                 mosaic: float = 0.0, fill_bgr: Sequence[float] = (0.0, 0.0, 0.0)):
        self.copy_paste, self.mosaic = float(copy_paste), float(mosaic)
        self.paste_scale = (float(paste_scale[0]), float(paste_scale[1]))
        self.fill_bgr = tuple(float(v) for v in fill_bgr)

    @property
    def active(self) -> bool:
        return self.copy_paste > 0 or self.mosaic > 0

    def __call__(self, sample: Sample, rng: np.random.Generator, source: SampleSource,
                 mosaic_open: bool = True) -> Sample:
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"SampleMixer needs an explicit numpy.random.Generator (got {type(rng).__name__})")
        if self.mosaic > 0 and mosaic_open and rng.random() < self.mosaic:
            others = [source.raw_sample(int(j)) for j in rng.integers(len(source), size=3)]
            side = max(np.asarray(sample["image"]).shape[:2])
            cx, cy = (int(v) for v in rng.integers(side // 4, 3 * side // 4 + 1, size=2))
            sample = mosaic4([sample] + others, side, cx, cy, self.fill_bgr)
        if self.copy_paste > 0 and rng.random() < self.copy_paste:
            sample = self._copy_paste(sample, rng, source.raw_sample(int(rng.integers(len(source)))))
        return sample

    def _copy_paste(self, target: Sample, rng: np.random.Generator, source: Sample) -> Sample:
        candidates = np.flatnonzero(~np.asarray(source["is_crowd"], dtype=bool))
        if candidates.size == 0:
            return target
        chosen = candidates[rng.random(candidates.size) < 0.5]
        if chosen.size == 0:
            chosen = candidates[int(rng.integers(candidates.size))][None]
        keep = np.zeros(len(source["is_crowd"]), dtype=bool)
        keep[chosen] = True
        source = _select(source, keep)
        height, width = np.asarray(target["image"]).shape[:2]
        h, w = np.asarray(source["image"]).shape[:2]
        factor = min(height / h, width / w) * _log_uniform(rng, *self.paste_scale)
        source = rescale(source, max(1, int(round(h * factor))), max(1, int(round(w * factor))))
        if len(source["is_crowd"]) == 0:
            return target
        h, w = np.asarray(source["image"]).shape[:2]
        top = int(rng.integers(min(0, height - h), max(0, height - h) + 1))
        left = int(rng.integers(min(0, width - w), max(0, width - w) + 1))
        return paste(target, source, top, left)

    def __repr__(self) -> str:
        return (f"SampleMixer(copy_paste={self.copy_paste}, paste_scale={self.paste_scale}, "
                f"mosaic={self.mosaic})")
