"""COCO-format instance-segmentation datasets.

:class:`CocoDataset` reads a COCO annotation file (any category ids, in any order, any
count) and serves raw samples (see :meth:`CocoDataset.raw_sample`) that the transforms in
:mod:`yolact_lite.data.transforms` turn into network inputs.

Labels: category ids are sorted and mapped to contiguous labels ``0..C-1``;
``category_ids[label]`` gives the original id back (exact round trip, used when writing
COCO results) and ``class_names[label]`` the category name.  There is no user-editable
label map.

Validation: the whole json is checked once, up front, against the COCO schema of
:mod:`yolact_lite.data.coco_schema` (structure, types, unknown or duplicate ids, malformed
compressed RLE strings, image sides above its ``MAX_IMAGE_SIDE``), and the image files must
exist; the first problem raises :class:`DataError` with a one-line message naming the file and
the problem.

Degenerate annotations never crash loading; each is DROPPED and counted in
``dataset.dropped`` (a :class:`collections.Counter`) under the first reason that applies:

* ``non_finite_coordinates`` -- NaN/inf (or an integer beyond float range) in the bbox or
  a polygon;
* ``zero_area_box``          -- the bbox, clipped to the image, has no area;
* ``polygon_too_few_points`` -- no polygon with at least 3 points (polygons with fewer
  points, or an odd number of coordinates, are removed from multi-part annotations);
* ``rle_size_mismatch``      -- an RLE whose ``size``, or whose run lengths' total, differs
  from the image's;
* ``empty_mask``             -- the (clipped) mask has no pixel.

Coordinates outside the image are clipped to it (boxes and polygons).  Images without any
annotation are kept and yield ``n = 0`` samples, unless ``skip_empty=True``, which skips
images that have no valid NON-crowd annotation (crowd-only images give no positives).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ..errors import DataError
from .coco_schema import coco_problems, is_number, rle_string_counts
from .image_io import read_image
from .sampling import sample_rng

PathLike = Union[str, "os.PathLike[str]"]

DROP_REASONS = ("non_finite_coordinates", "zero_area_box", "polygon_too_few_points",
                "rle_size_mismatch", "empty_mask")


# --------------------------------------------------------------------------- validation


def validate_coco_dict(data: Any, source: str = "<dict>") -> None:
    """Raise the first problem of the COCO schema (:mod:`yolact_lite.data.coco_schema`) as a
    :class:`DataError` naming ``source``; return when there is none."""
    problem = next(coco_problems(data), None)
    if problem is not None:
        raise DataError(f"{source}: {problem.message}")


def read_json(path: PathLike) -> Any:
    """The parsed content of the json file ``path``, not checked; :class:`DataError` when it
    cannot be read or parsed."""
    name = os.fspath(path)
    p = Path(name)
    if p.is_dir():
        raise DataError(f"{name}: is a folder, not an annotation file (a COCO .json)")
    if not p.is_file():
        raise DataError(f"{name}: no such annotation file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: cannot read annotation file ({exc})") from None
    if not text.strip():
        raise DataError(f"{name}: empty annotation file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno} "
                        f"column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # e.g. a 5000-digit number, nesting too deep
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{name}: cannot parse JSON ({first})") from None


def load_coco_json(path: PathLike) -> dict:
    """Read and validate a COCO annotation file; raises :class:`DataError` at the first problem."""
    data = read_json(path)
    validate_coco_dict(data, os.fspath(path))
    return data


def coco_subset(data: dict, image_ids) -> dict:
    """The COCO dict restricted to ``image_ids``: their images and annotations, every other key
    (categories, info, licenses) unchanged, so category ids and names stay the same."""
    keep = set(image_ids)
    subset = dict(data)
    subset["images"] = [im for im in data["images"] if im["id"] in keep]
    subset["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    return subset


# --------------------------------------------------------------------------- geometry

def _clean_box(bbox: Sequence[float], h: int, w: int) -> Tuple[Optional[np.ndarray], Optional[str]]:
    try:
        x, y, bw, bh = (float(v) for v in bbox)
    except OverflowError:  # an integer beyond float range
        return None, "non_finite_coordinates"
    if not all(math.isfinite(v) for v in (x, y, bw, bh)):
        return None, "non_finite_coordinates"
    x1, y1 = min(max(x, 0.0), w), min(max(y, 0.0), h)
    x2, y2 = min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None, "zero_area_box"
    return np.array([x1, y1, x2, y2], dtype=np.float32), None


def _segmentation_rle(seg: Any, h: int, w: int) -> Tuple[Optional[dict], Optional[str]]:
    """The annotation's mask as one RLE, after cleaning; or (None, drop reason)."""
    if isinstance(seg, dict):
        if [int(v) for v in seg["size"]] != [h, w]:
            return None, "rle_size_mismatch"
        if isinstance(seg["counts"], list):
            if sum(seg["counts"]) != h * w:
                return None, "rle_size_mismatch"
            return mask_utils.frPyObjects(seg, h, w), None
        counts = rle_string_counts(seg["counts"])
        if counts is None or sum(counts) != h * w:
            return None, "rle_size_mismatch"
        return {"size": [h, w], "counts": seg["counts"]}, None

    parts, reason = _polygon_parts(seg)
    if parts is None:
        return None, reason
    polygons: List[List[float]] = []
    for coords in parts:
        coords = coords.reshape(-1, 2)
        coords[:, 0] = np.clip(coords[:, 0], 0.0, w)
        coords[:, 1] = np.clip(coords[:, 1], 0.0, h)
        polygons.append(coords.reshape(-1).tolist())
    return mask_utils.merge(mask_utils.frPyObjects(polygons, h, w)), None


def _polygon_parts(seg: list) -> Tuple[Optional[List[np.ndarray]], Optional[str]]:
    """The parts of a polygon segmentation (one flat polygon or a list of them) with at least 3
    points and an even number of coordinates, as float64 arrays; or (None, drop reason)."""
    parts = [seg] if seg and all(is_number(v) for v in seg) else seg
    kept: List[np.ndarray] = []
    for part in parts:
        try:
            coords = np.asarray(part, dtype=np.float64)
        except OverflowError:  # an integer beyond float range
            return None, "non_finite_coordinates"
        if not np.all(np.isfinite(coords)):
            return None, "non_finite_coordinates"
        if coords.size >= 6 and coords.size % 2 == 0:
            kept.append(coords)
    if not kept:
        return None, "polygon_too_few_points"
    return kept, None


def _finite_number(v: Any) -> bool:
    try:
        return is_number(v) and math.isfinite(v)
    except OverflowError:  # an integer beyond float range
        return False


def scorable_ground_truth(data: dict) -> Tuple[dict, Counter]:
    """``data`` made safe for COCOeval, and the annotations left out, counted by reason.

    COCOeval scores annotations as given (a zero-area box or an empty mask stays a ground
    truth that no detection can match), but it crashes on a polygon part with fewer than 3
    points or on a single flat polygon, and it scores a NaN box as matched.  Left out, under
    the first reason that applies: ``non_finite_coordinates`` (box or polygon),
    ``polygon_too_few_points`` (no part with 3 points) and ``rle_size_mismatch``.  Parts with
    fewer than 3 points are removed from the polygons that keep one, a flat polygon becomes a
    list of one, and a missing ``area`` is the mask's.  Other annotations pass unchanged, so
    the AP of a clean file is COCOeval's own; ``data`` itself is not modified.
    """
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    kept: List[dict] = []
    dropped: Counter = Counter()
    for ann in data["annotations"]:
        h, w = sizes[ann["image_id"]]
        _, reason = _clean_box(ann["bbox"], h, w)
        if reason == "zero_area_box":
            reason = None
        seg = ann["segmentation"]
        if reason is None and isinstance(seg, list):
            parts, reason = _polygon_parts(seg)
            if reason is None and (len(parts) != len(seg) or not isinstance(seg[0], list)):
                ann = dict(ann, segmentation=[p.tolist() for p in parts])
        elif reason is None:
            reason = _segmentation_rle(seg, h, w)[1]
        if reason is not None:
            dropped[reason] += 1
            continue
        if not _finite_number(ann.get("area")):
            rle = mask_utils.frPyObjects(ann["segmentation"], h, w)
            ann = dict(ann, area=float(mask_utils.area(mask_utils.merge(rle) if isinstance(rle, list) else rle)))
        kept.append(ann)
    return dict(data, annotations=kept), dropped


# --------------------------------------------------------------------------- dataset

class CocoDataset(torch.utils.data.Dataset):
    """A COCO-format dataset (see the module docstring for the rules).

    ``transform`` is called as ``transform(sample, rng)`` with a ``numpy.random.Generator``
    seeded from ``(seed, epoch, index)``; set the epoch with :meth:`set_epoch` or index the
    dataset with a tuple ``(index, epoch)`` (handy with persistent DataLoader workers).
    """

    def __init__(self, annotation_json: PathLike, image_dir: PathLike,
                 transform=None, skip_empty: bool = False, seed: int = 0):
        self.annotation_file = os.fspath(annotation_json)
        self.image_dir = os.fspath(image_dir)
        self.transform = transform
        self.mixer = None  # multi-image augmentation before the transform (data.mixing.SampleMixer)
        self.skip_empty = bool(skip_empty)
        self.seed = int(seed)
        self.epoch = 0
        self._cache: Dict[int, Dict[str, Any]] = {}

        data = load_coco_json(self.annotation_file)
        if not Path(self.image_dir).is_dir():
            raise DataError(f"{self.image_dir}: image directory does not exist")
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = data
            coco.createIndex()
        self.coco = coco

        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids: List[int] = [int(c["id"]) for c in cats]
        self.class_names: List[str] = [str(c["name"]) for c in cats]
        self.category_to_label: Dict[int, int] = {cid: i for i, cid in enumerate(self.category_ids)}

        missing = [img["file_name"] for img in data["images"]
                   if not os.path.isfile(os.path.join(self.image_dir, img["file_name"]))]
        if missing:
            raise DataError(f"{self.image_dir}: {len(missing)} of {len(data['images'])} images "
                            f"listed in {self.annotation_file} are missing (first: {missing[0]})")

        self.dropped: Counter = Counter()
        anns_by_image: Dict[int, List[dict]] = {}
        for ann in data["annotations"]:
            anns_by_image.setdefault(ann["image_id"], []).append(ann)

        self._records: List[Tuple[dict, List[dict]]] = []
        self.num_empty_images = 0
        for img in data["images"]:
            h, w = img["height"], img["width"]
            valid = []
            for ann in anns_by_image.get(img["id"], []):
                box, reason = _clean_box(ann["bbox"], h, w)
                if reason is None:
                    rle, reason = _segmentation_rle(ann["segmentation"], h, w)
                    if reason is None and int(mask_utils.area(rle)) == 0:
                        reason = "empty_mask"
                if reason is not None:
                    self.dropped[reason] += 1
                    continue
                valid.append(ann)
            if not any(not a.get("iscrowd", 0) for a in valid):
                self.num_empty_images += 1
                if self.skip_empty:
                    continue
            # non-crowd first, crowds LAST (stable within each group)
            valid.sort(key=lambda a: bool(a.get("iscrowd", 0)))
            self._records.append((img, valid))

    # ---------------------------------------------------------------- info
    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def image_ids(self) -> List[int]:
        return [int(img["id"]) for img, _ in self._records]

    def label_to_category_id(self, label: int) -> int:
        return self.category_ids[int(label)]

    def category_id_to_label(self, category_id: int) -> int:
        try:
            return self.category_to_label[int(category_id)]
        except KeyError:
            raise DataError(f"{self.annotation_file}: unknown category id {category_id}") from None

    def image_info(self, index: int) -> dict:
        return self._records[index][0]

    def image_path(self, index: int) -> str:
        return os.path.join(self.image_dir, self._records[index][0]["file_name"])

    def num_instances(self, index: int) -> int:
        return len(self._records[index][1])

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return (f"CocoDataset({self.annotation_file!r}, images={len(self)}, "
                f"classes={self.num_classes}, dropped={dict(self.dropped)})")

    # ---------------------------------------------------------------- samples
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng_for(self, index: int, epoch: Optional[int] = None) -> np.random.Generator:
        """The Generator used for sample ``index`` in ``epoch`` (default: the current one)."""
        return sample_rng(self.seed, self.epoch if epoch is None else epoch, index)

    def raw_sample(self, index: int) -> Dict[str, Any]:
        """The untransformed sample: ``image`` uint8 BGR [H, W, 3], ``masks`` uint8
        [n, H, W], ``boxes`` float32 [n, 4] absolute x1y1x2y2, ``labels`` int64 [n],
        ``is_crowd`` bool [n] (crowds last), ``image_id`` and ``orig_size`` (h, w).
        Transforms never modify it, so a cached sample is returned as it is."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        img, anns = self._records[index]
        path = os.path.join(self.image_dir, img["file_name"])
        image = read_image(path)
        h, w = img["height"], img["width"]
        if image.shape[:2] != (h, w):
            raise DataError(f"{path}: image is {image.shape[1]}x{image.shape[0]} but "
                            f"{self.annotation_file} says {w}x{h}")
        n = len(anns)
        masks = np.zeros((n, h, w), dtype=np.uint8)
        boxes = np.zeros((n, 4), dtype=np.float32)
        labels = np.zeros((n,), dtype=np.int64)
        is_crowd = np.zeros((n,), dtype=bool)
        with warnings.catch_warnings():
            # pycocotools' decode trips numpy 2's __array__(copy=...) deprecation warning
            warnings.simplefilter("ignore", DeprecationWarning)
            for k, ann in enumerate(anns):
                boxes[k], _ = _clean_box(ann["bbox"], h, w)
                rle, _ = _segmentation_rle(ann["segmentation"], h, w)
                masks[k] = mask_utils.decode(rle)
                labels[k] = self.category_to_label[ann["category_id"]]
                is_crowd[k] = bool(ann.get("iscrowd", 0))
        return {"image": image, "masks": masks, "boxes": boxes, "labels": labels,
                "is_crowd": is_crowd, "image_id": int(img["id"]), "orig_size": (h, w)}

    def cache_samples(self) -> int:
        """Decode every sample once and keep it in memory (DataLoader workers forked later
        share it); returns the bytes held."""
        for index in range(len(self)):
            self._cache[index] = self.raw_sample(index)
        return sum(v.nbytes for s in self._cache.values() for v in s.values() if isinstance(v, np.ndarray))

    def sample(self, index: int, rng: Optional[np.random.Generator] = None,
               mosaic_open: bool = True) -> Dict[str, Any]:
        """``transform(mixer(raw_sample(index), rng, self, mosaic_open), rng)``: the mixer
        (:class:`yolact_lite.data.mixing.SampleMixer`, which draws other images) and the
        transform when set; ``rng`` defaults to the current epoch's."""
        rng = rng if rng is not None else self.rng_for(index)
        sample = self.raw_sample(index)
        if self.mixer is not None:
            sample = self.mixer(sample, rng, self, mosaic_open)
        if self.transform is not None:
            sample = self.transform(sample, rng)
        return sample

    def __getitem__(self, key) -> Dict[str, Any]:
        if isinstance(key, tuple):
            index, epoch = key
            return self.sample(int(index), self.rng_for(int(index), int(epoch)))
        index = int(key)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {key} out of range for {len(self)} images")
        return self.sample(index)


def collate(batch: Sequence[Dict[str, Any]]) -> Tuple[torch.Tensor, List[Dict[str, Any]]]:
    """Stack transformed samples: images -> [B, 3, S, S]; the per-image targets stay a list
    of dicts with ``boxes``, ``labels``, ``masks``, ``is_crowd``, ``image_id``,
    ``orig_size`` and ``geometry``."""
    if len(batch) == 0:
        raise ValueError("collate: empty batch")
    images = []
    targets = []
    for s in batch:
        if not isinstance(s["image"], torch.Tensor):
            raise ValueError("collate expects transformed samples (run ToTrainingTensors first)")
        images.append(s["image"])
        targets.append({k: s.get(k) for k in ("boxes", "labels", "masks", "is_crowd",
                                              "image_id", "orig_size", "geometry")})
    return torch.stack(images, 0), targets
