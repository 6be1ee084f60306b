"""Composable transforms on sample dicts (the training augmentation of the original YOLACT).

A sample entering the pipeline is what :class:`yolact_lite.data.coco.CocoDataset` returns:

* ``image``    uint8 or float32 [H, W, 3], BGR, 0-255
* ``masks``    uint8 or float32 [n, H, W]
* ``boxes``    float32 [n, 4], ABSOLUTE pixels x1, y1, x2, y2 (continuous coordinates:
  pixel column i spans [i, i+1))
* ``labels``   int64 [n], 0-based;  ``is_crowd`` bool [n], crowd rows LAST
* ``image_id``, ``orig_size`` (h, w) -- passed through untouched

Every transform is a small class called as ``t(sample, rng)`` and returns a NEW dict (the
input is never modified).  Random transforms draw only from the explicit
``numpy.random.Generator`` they are given -- never from a global RNG -- so a training run
that seeds one Generator per sample from (seed, epoch, index) is exactly reproducible; they
raise ``ValueError`` when called without one.  Per-gt arrays (boxes, masks, labels,
is_crowd) are always filtered together and keep their order, so crowds stay last.

After :class:`Resize` / :class:`Letterbox` the sample also has ``geometry`` (an
:class:`~yolact_lite.structures.InputGeometry` describing how the image that was resized
-- the augmented crop in training, the original image in evaluation -- sits in the S x S
input).  :class:`ToTrainingTensors` ends the pipeline: ``image`` float32 tensor [3, S, S]
(RGB, normalised), ``boxes`` float32 [n, 4] RELATIVE to S, ``masks`` float32 [n, S, S],
``labels`` int64, ``is_crowd`` bool.

Differences from / quirks kept of the original SSDAugmentation (docs/original_yolact.md, section 1):

* RandomSampleCrop keeps the original's broken min-IoU test: the modes 0.1/0.3/0.7/0.9 are
  drawn (so the "whole image" mode keeps probability 1/6) but the IoU constraint never
  rejects a crop -- the authors kept this because fixing it hurt early training.  The crop
  offset is drawn from U(0, W - w) (the SSD port's ``uniform(W - w)`` draws from between 1
  and W - w, a one-pixel difference).  Images without a non-crowd gt are left uncropped.
* Masks are resized as float32 (bilinear), so borders are fractional; the loss thresholds.
* :class:`MinBoxFilter` measures widths in input pixels after the resize (the original
  compared relative thresholds with pixel boxes, so its "< 4 px" filter did nothing).
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from ..config import AUGMENTATIONS, AugmentConfig
from ..structures import InputGeometry, letterbox_size

Sample = Dict[str, object]

PER_GT_KEYS = ("boxes", "masks", "labels", "is_crowd")


def _need_rng(rng: Optional[np.random.Generator], who: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{who} needs an explicit numpy.random.Generator (got {type(rng).__name__})")
    return rng


def _select(sample: Sample, keep: np.ndarray) -> Sample:
    """A copy of ``sample`` with the per-gt arrays restricted to the boolean mask ``keep``."""
    out = dict(sample)
    for key in PER_GT_KEYS:
        if key in out:
            out[key] = np.asarray(out[key])[keep]
    return out


def _num_gt(sample: Sample) -> int:
    return int(np.asarray(sample["boxes"]).reshape(-1, 4).shape[0])


def _resize_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of [n, h, w] masks to float32 [n, height, width]."""
    n = masks.shape[0]
    if n == 0:
        return np.zeros((0, height, width), dtype=np.float32)
    out = np.empty((n, height, width), dtype=np.float32)
    chunk = 256  # OpenCV handles at most 512 channels per call
    for start in range(0, n, chunk):
        part = masks[start:start + chunk].astype(np.float32).transpose(1, 2, 0)
        resized = cv2.resize(np.ascontiguousarray(part), (width, height),
                             interpolation=cv2.INTER_LINEAR)
        if resized.ndim == 2:
            resized = resized[:, :, None]
        out[start:start + chunk] = resized.transpose(2, 0, 1)
    return out


class Compose:
    """Apply transforms in order: ``Compose([...])(sample, rng)``."""

    def __init__(self, transforms: Iterable[Callable]):
        self.transforms: List[Callable] = list(transforms)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class ConvertToFloat:
    """Image to float32 (values unchanged)."""

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        out = dict(sample)
        out["image"] = np.asarray(sample["image"]).astype(np.float32)
        return out

    def __repr__(self) -> str:
        return "ConvertToFloat()"


class PhotometricDistort:
    """Colour jitter on a float BGR 0-255 image, in the original's order, no clipping.

    Brightness (p=.5, add U(-32, 32)); then with p=.5 either
    [contrast, ->HSV, saturation, hue, ->BGR] or [->HSV, saturation, hue, ->BGR, contrast].
    Contrast: p=.5, multiply U(0.5, 1.5); saturation: p=.5, S *= U(0.5, 1.5); hue: p=.5,
    H += U(-18, 18) degrees wrapped into [0, 360].  (The original's channel-swap lighting
    noise is disabled there too.)
    """

    def __init__(self, brightness_delta: float = 32.0, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta: float = 18.0):
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = (float(contrast_range[0]), float(contrast_range[1]))
        self.saturation_range = (float(saturation_range[0]), float(saturation_range[1]))
        self.hue_delta = float(hue_delta)

    def _contrast(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            image = image * np.float32(rng.uniform(*self.contrast_range))
        return image

    def _hsv_jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        if rng.integers(2):
            hsv[:, :, 1] *= np.float32(rng.uniform(*self.saturation_range))
        if rng.integers(2):
            hue = hsv[:, :, 0]
            hue += np.float32(rng.uniform(-self.hue_delta, self.hue_delta))
            hue[hue > 360.0] -= 360.0
            hue[hue < 0.0] += 360.0
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        rng = _need_rng(rng, "PhotometricDistort")
        image = np.array(sample["image"], dtype=np.float32, copy=True)
        if rng.integers(2):
            image += np.float32(rng.uniform(-self.brightness_delta, self.brightness_delta))
        if rng.integers(2):
            image = self._contrast(image, rng)
            image = self._hsv_jitter(image, rng)
        else:
            image = self._hsv_jitter(image, rng)
            image = self._contrast(image, rng)
        out = dict(sample)
        out["image"] = np.ascontiguousarray(image, dtype=np.float32)
        return out

    def __repr__(self) -> str:
        return "PhotometricDistort()"


class Expand:
    """With probability ``p``: place the image at a random offset on a canvas ``ratio`` times
    larger (ratio ~ U(1, max_ratio)) filled with ``mean_bgr``; masks are zero-padded."""

    def __init__(self, mean_bgr: Sequence[float] = (103.94, 116.78, 123.68), p: float = 0.5,
                 max_ratio: float = 4.0):
        self.mean_bgr = tuple(float(v) for v in mean_bgr)
        self.p = float(p)
        self.max_ratio = float(max_ratio)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        rng = _need_rng(rng, "Expand")
        if rng.random() >= self.p:
            return dict(sample)
        image = np.asarray(sample["image"])
        h, w = image.shape[:2]
        ratio = rng.uniform(1.0, self.max_ratio)
        left = int(rng.uniform(0.0, w * ratio - w))
        top = int(rng.uniform(0.0, h * ratio - h))
        canvas_h, canvas_w = int(h * ratio), int(w * ratio)

        canvas = np.empty((canvas_h, canvas_w, 3), dtype=np.float32)
        canvas[:, :] = np.asarray(self.mean_bgr, dtype=np.float32)
        canvas[top:top + h, left:left + w] = image

        masks = np.asarray(sample["masks"])
        new_masks = np.zeros((masks.shape[0], canvas_h, canvas_w), dtype=masks.dtype)
        new_masks[:, top:top + h, left:left + w] = masks

        boxes = np.asarray(sample["boxes"], dtype=np.float32).copy()
        boxes[:, 0::2] += left
        boxes[:, 1::2] += top

        out = dict(sample)
        out.update(image=canvas, masks=new_masks, boxes=boxes)
        return out

    def __repr__(self) -> str:
        return f"Expand(p={self.p}, max_ratio={self.max_ratio})"


class RandomSampleCrop:
    """The SSD-style random crop of the original (see the module docstring for its quirks).

    Loop: pick a mode uniformly from {whole image, min-IoU 0.1, 0.3, 0.7, 0.9, any}; "whole"
    returns the sample unchanged; otherwise up to ``max_trials`` trials of a crop with
    w, h ~ U(min_scale, 1) * (W, H), rejected if h / w is outside [0.5, 2]; the gts whose box
    centre lies strictly inside the crop are kept, the crop is rejected unless at least one
    kept gt is not a crowd; kept boxes are clipped to the crop and masks cropped.
    """

    MODES = (None, 0.1, 0.3, 0.7, 0.9, "any")

    def __init__(self, max_trials: int = 50, min_scale: float = 0.3,
                 aspect_range=(0.5, 2.0), max_mode_draws: int = 1000):
        self.max_trials = int(max_trials)
        self.min_scale = float(min_scale)
        self.aspect_range = (float(aspect_range[0]), float(aspect_range[1]))
        self.max_mode_draws = int(max_mode_draws)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        rng = _need_rng(rng, "RandomSampleCrop")
        is_crowd = np.asarray(sample["is_crowd"], dtype=bool)
        if not np.any(~is_crowd):
            return dict(sample)  # no crop can satisfy the constraint: leave the image usable
        image = np.asarray(sample["image"])
        height, width = image.shape[:2]
        boxes = np.asarray(sample["boxes"], dtype=np.float32)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0

        for _ in range(self.max_mode_draws):
            mode = self.MODES[int(rng.integers(len(self.MODES)))]
            if mode is None:
                return dict(sample)
            # min-IoU modes: the original's test `max IoU < min and inf < min IoU` can never
            # be true, so the constraint is not applied (quirk kept on purpose).
            for _ in range(self.max_trials):
                w = rng.uniform(self.min_scale * width, width)
                h = rng.uniform(self.min_scale * height, height)
                if not (self.aspect_range[0] <= h / w <= self.aspect_range[1]):
                    continue
                left = rng.uniform(0.0, width - w)
                top = rng.uniform(0.0, height - h)
                x1, y1, x2, y2 = int(left), int(top), int(left + w), int(top + h)
                if x2 <= x1 or y2 <= y1:
                    continue
                keep = ((centres[:, 0] > x1) & (centres[:, 1] > y1)
                        & (centres[:, 0] < x2) & (centres[:, 1] < y2))
                if not np.any(keep & ~is_crowd):
                    continue
                return self._crop(sample, keep, x1, y1, x2, y2)
        return dict(sample)

    @staticmethod
    def _crop(sample: Sample, keep: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> Sample:
        out = _select(sample, keep)
        out["image"] = np.ascontiguousarray(np.asarray(sample["image"])[y1:y2, x1:x2])
        out["masks"] = np.ascontiguousarray(out["masks"][:, y1:y2, x1:x2])
        boxes = out["boxes"].astype(np.float32).copy()
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], x1, x2) - x1
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], y1, y2) - y1
        out["boxes"] = boxes
        return out

    def __repr__(self) -> str:
        return f"RandomSampleCrop(max_trials={self.max_trials})"


class RandomMirror:
    """Horizontal flip with probability ``p`` (p=1 always flips)."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        if self.p < 1.0:
            rng = _need_rng(rng, "RandomMirror")
            if rng.random() >= self.p:
                return dict(sample)
        image = np.asarray(sample["image"])
        width = image.shape[1]
        boxes = np.asarray(sample["boxes"], dtype=np.float32)
        flipped = boxes.copy()
        flipped[:, 0] = width - boxes[:, 2]
        flipped[:, 2] = width - boxes[:, 0]
        out = dict(sample)
        out["image"] = np.ascontiguousarray(image[:, ::-1])
        out["masks"] = np.ascontiguousarray(np.asarray(sample["masks"])[:, :, ::-1])
        out["boxes"] = flipped
        return out

    def __repr__(self) -> str:
        return f"RandomMirror(p={self.p})"


class RandomBrightnessContrast:
    """``image * c + b`` with contrast c ~ U(lo, hi) and brightness b ~ U(-delta, delta), each
    with probability ``p`` (a cheap photometric jitter; no clipping, as PhotometricDistort)."""

    def __init__(self, delta: float = 32.0, contrast=(0.7, 1.3), p: float = 0.5):
        self.delta, self.contrast, self.p = float(delta), (float(contrast[0]), float(contrast[1])), float(p)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        rng = _need_rng(rng, "RandomBrightnessContrast")
        c = rng.uniform(*self.contrast) if rng.random() < self.p else 1.0
        b = rng.uniform(-self.delta, self.delta) if rng.random() < self.p else 0.0
        out = dict(sample)
        if c != 1.0 or b != 0.0:
            out["image"] = np.asarray(sample["image"], dtype=np.float32) * np.float32(c) + np.float32(b)
        return out

    def __repr__(self) -> str:
        return f"RandomBrightnessContrast(delta={self.delta}, contrast={self.contrast}, p={self.p})"


class RandomZoom:
    """Scale jitter, zoom z log-uniform in ``[min_zoom, max_zoom]``.

    z >= 1 zooms in: a window of ``1/z`` of the image at a random position (the gts whose box
    centre lies inside are kept and clipped; at least one must be a non-crowd, else up to
    ``trials`` other positions, else the image is left whole).  z < 1 zooms out: the image
    shrunk by z is placed at a random position on a canvas of its original size, filled with
    ``fill_bgr`` (masks with 0).  Neither makes the image larger, so the cost stays about
    that of the final resize.
    """

    def __init__(self, min_zoom: float = 0.6, max_zoom: float = 2.0, fill_bgr: Sequence[float] = (0.0, 0.0, 0.0),
                 trials: int = 10):
        self.min_zoom, self.max_zoom = float(min_zoom), float(max_zoom)
        self.fill_bgr = tuple(float(v) for v in fill_bgr)
        self.trials = int(trials)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        rng = _need_rng(rng, "RandomZoom")
        z = float(np.exp(rng.uniform(np.log(self.min_zoom), np.log(self.max_zoom))))
        return self._zoom_in(sample, z, rng) if z >= 1.0 else self._zoom_out(sample, z, rng)

    def _zoom_in(self, sample: Sample, z: float, rng: np.random.Generator) -> Sample:
        height, width = np.asarray(sample["image"]).shape[:2]
        w, h = max(1, int(round(width / z))), max(1, int(round(height / z)))
        boxes = np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
        is_crowd = np.asarray(sample["is_crowd"], dtype=bool)
        for _ in range(self.trials):
            x1, y1 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            keep = ((centres[:, 0] > x1) & (centres[:, 1] > y1)
                    & (centres[:, 0] < x1 + w) & (centres[:, 1] < y1 + h))
            if np.any(keep & ~is_crowd):
                return RandomSampleCrop._crop(sample, keep, x1, y1, x1 + w, y1 + h)
        return dict(sample)

    def _zoom_out(self, sample: Sample, z: float, rng: np.random.Generator) -> Sample:
        image = np.asarray(sample["image"], dtype=np.float32)
        height, width = image.shape[:2]
        h, w = max(1, int(round(height * z))), max(1, int(round(width * z)))
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        canvas = np.empty_like(image)
        canvas[:, :] = np.asarray(self.fill_bgr, dtype=np.float32)
        canvas[top:top + h, left:left + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        small = _resize_masks(np.asarray(sample["masks"]), h, w)
        masks = np.zeros((small.shape[0], height, width), dtype=np.float32)
        masks[:, top:top + h, left:left + w] = small
        boxes = np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4).copy()
        boxes[:, 0::2] = boxes[:, 0::2] * np.float32(w / width) + np.float32(left)
        boxes[:, 1::2] = boxes[:, 1::2] * np.float32(h / height) + np.float32(top)
        out = dict(sample)
        out.update(image=canvas, masks=masks, boxes=boxes)
        return out

    def __repr__(self) -> str:
        return f"RandomZoom({self.min_zoom}, {self.max_zoom})"


def _resize_to(sample: Sample, content_h: int, content_w: int, size: int,
               fill_bgr: Sequence[float]) -> Sample:
    image = np.asarray(sample["image"])
    h, w = image.shape[:2]
    geometry = InputGeometry(int(h), int(w), int(size), int(content_h), int(content_w))
    resized = cv2.resize(image.astype(np.float32, copy=False), (content_w, content_h),
                         interpolation=cv2.INTER_LINEAR)
    masks = _resize_masks(np.asarray(sample["masks"]), content_h, content_w)
    if (content_h, content_w) != (size, size):
        canvas = np.empty((size, size, 3), dtype=np.float32)
        canvas[:, :] = np.asarray(fill_bgr, dtype=np.float32)
        canvas[:content_h, :content_w] = resized
        resized = canvas
        padded = np.zeros((masks.shape[0], size, size), dtype=np.float32)
        padded[:, :content_h, :content_w] = masks
        masks = padded
    boxes = np.asarray(sample["boxes"], dtype=np.float32).copy()
    boxes[:, 0::2] *= np.float32(geometry.scale_x)
    boxes[:, 1::2] *= np.float32(geometry.scale_y)
    out = dict(sample)
    out.update(image=np.ascontiguousarray(resized, dtype=np.float32), masks=masks,
               boxes=boxes, geometry=geometry)
    return out


class Resize:
    """Square stretch to ``size`` x ``size`` (cv2 bilinear); masks resized as float32."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        return _resize_to(sample, self.size, self.size, self.size, (0.0, 0.0, 0.0))

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class Letterbox:
    """Aspect-preserving resize of the longer side to ``size``; the image is anchored at the
    top-left and the right/bottom are padded with ``mean_bgr`` (masks with 0)."""

    def __init__(self, size: int, mean_bgr: Sequence[float] = (103.94, 116.78, 123.68)):
        self.size = int(size)
        self.mean_bgr = tuple(float(v) for v in mean_bgr)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        h, w = np.asarray(sample["image"]).shape[:2]
        ch, cw = letterbox_size(h, w, self.size)
        return _resize_to(sample, ch, cw, self.size, self.mean_bgr)

    def __repr__(self) -> str:
        return f"Letterbox({self.size})"


class MinBoxFilter:
    """Drop gts whose box width or height is <= ``min_pixels`` in the CURRENT pixel units
    (use it after the resize, so the unit is network-input pixels).  0 disables it."""

    def __init__(self, min_pixels: float = 0.0):
        self.min_pixels = float(min_pixels)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        if self.min_pixels <= 0:
            return dict(sample)
        boxes = np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4)
        keep = ((boxes[:, 2] - boxes[:, 0]) > self.min_pixels) & \
               ((boxes[:, 3] - boxes[:, 1]) > self.min_pixels)
        return _select(sample, keep)

    def __repr__(self) -> str:
        return f"MinBoxFilter({self.min_pixels})"


class ToTrainingTensors:
    """BGR -> RGB, ``(x - mean) / std`` and torch tensors; boxes become relative [0, 1]."""

    def __init__(self, pixel_mean_rgb: Sequence[float], pixel_std_rgb: Sequence[float]):
        self.mean = np.asarray(pixel_mean_rgb, dtype=np.float32).reshape(3)
        self.std = np.asarray(pixel_std_rgb, dtype=np.float32).reshape(3)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        image = np.asarray(sample["image"], dtype=np.float32)
        h, w = image.shape[:2]
        rgb = image[:, :, ::-1]
        normed = (rgb - self.mean) / self.std
        boxes = np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4).copy()
        boxes[:, 0::2] /= np.float32(w)
        boxes[:, 1::2] /= np.float32(h)
        np.clip(boxes, 0.0, 1.0, out=boxes)
        masks = np.asarray(sample["masks"], dtype=np.float32)
        out = dict(sample)
        out["image"] = torch.from_numpy(np.ascontiguousarray(normed.transpose(2, 0, 1)))
        out["boxes"] = torch.from_numpy(boxes)
        out["masks"] = torch.from_numpy(np.ascontiguousarray(masks))
        out["labels"] = torch.from_numpy(np.asarray(sample["labels"], dtype=np.int64).copy())
        out["is_crowd"] = torch.from_numpy(np.asarray(sample["is_crowd"], dtype=bool).copy())
        if "geometry" not in out:
            out["geometry"] = InputGeometry(int(h), int(w), int(max(h, w)), int(h), int(w))
        return out

    def __repr__(self) -> str:
        return "ToTrainingTensors()"


def _fit(input_size: int, preserve_aspect_ratio: bool, mean_bgr: Sequence[float]):
    return Letterbox(input_size, mean_bgr) if preserve_aspect_ratio else Resize(input_size)


def build_train_transform(input_size: int, pixel_mean: Sequence[float],
                          pixel_std: Sequence[float], preserve_aspect_ratio: bool = False,
                          augment: Union[str, AugmentConfig] = "ssd", min_box_pixels: float = 0.0) -> Compose:
    """The per-sample training pipeline; ``pixel_mean``/``pixel_std`` in RGB order (as in the config).

    ``augment`` is ``train.augment`` or just its chain name: "ssd" (the original's chain:
    PhotometricDistort, Expand filled with the mean, RandomSampleCrop, RandomMirror), "light"
    (RandomMirror, RandomZoom over ``scale_range``, brightness / contrast jitter: a fraction of
    the cost) or "none"; then ConvertToFloat first and Resize (or Letterbox), MinBoxFilter,
    ToTrainingTensors last.  (Copy-paste and mosaic draw other images, so they run before this,
    in :mod:`yolact_lite.data.mixing`.)
    """
    config = augment if isinstance(augment, AugmentConfig) else AugmentConfig(chain=augment)
    augment = config.chain
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {augment!r}")
    mean_bgr = tuple(float(v) for v in reversed(list(pixel_mean)))
    steps: List[Callable] = [ConvertToFloat()]
    if augment == "ssd":
        steps += [PhotometricDistort(), Expand(mean_bgr), RandomSampleCrop(), RandomMirror()]
    elif augment == "light":
        low, high = config.scale_range
        steps += [RandomMirror(), RandomZoom(low, high, fill_bgr=mean_bgr), RandomBrightnessContrast()]
    steps += [_fit(input_size, preserve_aspect_ratio, mean_bgr), MinBoxFilter(min_box_pixels),
              ToTrainingTensors(pixel_mean, pixel_std)]
    return Compose(steps)


def build_eval_transform(input_size: int, pixel_mean: Sequence[float],
                         pixel_std: Sequence[float], preserve_aspect_ratio: bool = False,
                         min_box_pixels: float = 0.0) -> Compose:
    """No augmentation: ConvertToFloat, Resize (or Letterbox), MinBoxFilter, ToTrainingTensors.

    The image tensor equals :func:`yolact_lite.data.preprocess.preprocess_image` up to
    interpolation rounding (cv2 here, torch there).
    """
    mean_bgr = tuple(float(v) for v in reversed(list(pixel_mean)))
    return Compose([ConvertToFloat(), _fit(input_size, preserve_aspect_ratio, mean_bgr),
                    MinBoxFilter(min_box_pixels), ToTrainingTensors(pixel_mean, pixel_std)])
