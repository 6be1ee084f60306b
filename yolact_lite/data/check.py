"""Find what would break or silently hurt training in a COCO dataset, before training.

:func:`check_dataset` is the "all problems" mode of the COCO schema
(:mod:`yolact_lite.data.coco_schema`; :func:`~yolact_lite.data.coco.load_coco_json` is its
"first error" mode): it collects every structural problem, looks at every image file, and runs
the annotation checks of :func:`yolact_lite.data.stats.annotation_anomalies` on the annotations
that are well formed.  Every problem kind found is reported once, with a count and the first few
examples.  The command is ``yolact-lite data check`` (:mod:`yolact_lite.cli.data_check`).

Levels (:data:`LEVELS`):

* ``break``: :class:`~yolact_lite.data.coco.CocoDataset` refuses the file, training crashes,
  or targets are wrong (e.g. a mask drawn at another size than its image);
* ``hurt``: training runs but loses or mis-learns data without saying so (annotations the
  dataset drops, duplicate targets, classes the model never sees...);
* ``note``: worth knowing, harmless for training (e.g. images without annotations, which
  serve as background-only negatives).

:attr:`Report.exit_code`: 0 nothing at ``break`` or ``hurt`` level, 1 at least one such problem.
An input that cannot be read at all (no such file, not JSON, not a COCO object, no image
folder) raises :class:`~yolact_lite.errors.DataError` instead.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..errors import DataError
from .coco import read_json
from .coco_schema import FATAL, SCHEMA_CHECKS, Problem, check_coco_schema
from .image_io import read_image
from .stats import ANOMALY_KINDS, annotation_anomalies, crowd_only_images, mask_formats, split_category_differences

__all__ = ["LEVELS", "CHECKS", "Finding", "Report", "check_dataset"]

PathLike = Union[str, "os.PathLike[str]"]

LEVELS = ("break", "hurt", "note")

#: Every problem kind: (level, what it means for training).  Report order.
CHECKS: Dict[str, Tuple[str, str]] = {
    **SCHEMA_CHECKS,  # the structure of the json
    # image files
    "missing_image": ("break", "the image file does not exist under --images"),
    "unreadable_image": ("break", "the image file cannot be decoded (empty, corrupt, truncated)"),
    "image_size_mismatch": ("break", "the decoded image's size differs from the json's height/width "
                                     "(masks would be drawn at the wrong size)"),
    "duplicate_file_name": ("hurt", "several image entries use the same file (their objects are split "
                                    "across entries, each entry misses the others' objects)"),
    # splits
    "category_list_mismatch": ("break", "the two files define different categories (ids or names): "
                                        "labels would mean different classes"),
    "categories_missing_in_other_split": ("hurt", "categories with instances here but none in the other "
                                                  "file (never learned, or never evaluated)"),
    "categories_missing_here": ("hurt", "categories with instances in the other file but none here"),
    # annotations (yolact_lite.data.stats.annotation_anomalies)
    "non_finite_coordinates": ("hurt", "NaN/inf in a bbox or polygon: the dataset drops the annotation"),
    "nonpositive_box": ("hurt", "bbox width or height <= 0: the dataset drops the annotation"),
    "box_outside_image": ("hurt", "bbox reaches more than 1 px beyond the image: clipped, often a sign of "
                                  "coordinates in another scale"),
    "degenerate_polygon": ("hurt", "a polygon part with < 3 points or an odd count: the part is dropped"),
    "empty_rle": ("hurt", "an RLE mask without any foreground pixel: the dataset drops the annotation"),
    "rle_size_mismatch": ("hurt", "an RLE whose size is not the image's: the dataset drops the annotation"),
    "empty_mask": ("hurt", "a polygon that covers no pixel: the dataset drops the annotation"),
    "box_mask_mismatch": ("hurt", "the bbox and the tight box of the mask overlap with IoU < 0.5: box and "
                                  "mask targets disagree"),
    "duplicate": ("hurt", "same image and category as another annotation with bbox IoU > 0.95"),
    "crowd_only_image": ("hurt", "every annotation of the image is a crowd: it gives no positive, and its "
                                 "objects are only ignored regions"),
    # notes
    "rle_polygon_mix": ("note", "non-crowd masks come both as polygons and as RLE (pycocotools reads both; "
                                "look for a second conversion tool if boxes and masks disagree)"),
    "image_without_annotations": ("note", "images without any annotation (background-only negatives)"),
    "category_without_instances": ("note", "categories without a non-crowd instance in this file"),
}
assert set(ANOMALY_KINDS) <= set(CHECKS)


@dataclass
class Finding:
    """One problem kind: how many times it occurs and the first few occurrences."""

    kind: str
    level: str  # one of LEVELS
    count: int
    description: str
    examples: List[str] = field(default_factory=list)


@dataclass
class Report:
    """Result of :func:`check_dataset`; ``findings`` holds only the kinds that occur."""

    annotation_file: str
    images_dir: Optional[str]
    other_split: Optional[str]
    num_images: int
    num_annotations: int
    num_categories: int
    images_read: bool
    masks_checked: bool
    findings: List[Finding] = field(default_factory=list)

    def problems(self) -> List[Finding]:
        """The findings that would break or hurt training."""
        return [f for f in self.findings if f.level in ("break", "hurt")]

    def count(self, kind: str) -> int:
        return sum(f.count for f in self.findings if f.kind == kind)

    @property
    def exit_code(self) -> int:
        return 1 if self.problems() else 0

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}

    def to_text(self) -> str:
        what = (f"{self.num_images} images, {self.num_annotations} annotations, "
                f"{self.num_categories} categories")
        skipped = [s for s, done in (("image files not read", self.images_read),
                                     ("masks not rasterised", self.masks_checked)) if not done]
        lines = [f"{self.annotation_file}: {what}" + (f" ({'; '.join(skipped)})" if skipped else "")]
        for level in LEVELS:
            for f in (f for f in self.findings if f.level == level):
                lines.append(f"  {level:5s}  {f.kind}: {f.count} -- {f.description}")
                lines.extend(f"           e.g. {e}" for e in f.examples)
        problems = self.problems()
        if problems:
            n_break = sum(1 for f in problems if f.level == "break")
            lines.append(f"{len(problems)} problem kinds would break ({n_break}) or hurt "
                         f"({len(problems) - n_break}) training")
        else:
            lines.append("no problem that would break or hurt training")
        return "\n".join(lines)


class _Collector:
    def __init__(self, max_examples: int):
        self.max_examples = max_examples
        self.counts: Counter = Counter()
        self.examples: Dict[str, List[str]] = defaultdict(list)

    def add(self, kind: str, example: str, count: int = 1) -> None:
        assert kind in CHECKS, kind
        self.counts[kind] += count
        if len(self.examples[kind]) < self.max_examples:
            self.examples[kind].append(example)

    def findings(self) -> List[Finding]:
        return [Finding(kind, level, self.counts[kind], text, self.examples[kind])
                for kind, (level, text) in CHECKS.items() if self.counts[kind]]


# --------------------------------------------------------------------------- structure


def _schema(data: Any, source: str) -> Tuple[List[Problem], dict]:
    """The schema problems of ``data`` and its well-formed part; :class:`DataError` when it is
    not a COCO object at all."""
    problems, coco = check_coco_schema(data)
    if problems and problems[0].level == FATAL:
        raise DataError(f"{source}: {problems[0].message}")
    return problems, coco


# --------------------------------------------------------------------------- checks


def _read_size(path: str) -> Tuple[Optional[Tuple[int, int]], Optional[str]]:
    try:
        image = read_image(path)
    except DataError as exc:
        return None, str(exc)
    return (int(image.shape[0]), int(image.shape[1])), None


def _check_images(coco: dict, images_dir: Path, read: bool, workers: int, out: _Collector,
                  progress: bool) -> None:
    by_file: Dict[str, List[int]] = defaultdict(list)
    for img in coco["images"]:
        by_file[img["file_name"]].append(img["id"])
    for name, ids in by_file.items():
        if len(ids) > 1:
            out.add("duplicate_file_name", f"{name}: images {', '.join(map(str, ids[:5]))}", count=len(ids) - 1)

    present = []
    for img in coco["images"]:
        path = images_dir / img["file_name"]
        if path.is_file():
            present.append((img, str(path)))
        else:
            out.add("missing_image", f"image {img['id']}: {path}")
    if not read or not present:
        return
    bar = _progress(len(present), progress)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # OpenCV decodes without the GIL
        for (img, _), (size, error) in zip(present, pool.map(_read_size, (p for _, p in present))):
            if bar is not None:
                bar.update(1)
            if error is not None:
                out.add("unreadable_image", f"image {img['id']}: {error}")
            elif size != (img["height"], img["width"]):
                out.add("image_size_mismatch", f"image {img['id']} {img['file_name']}: file is "
                                               f"{size[1]}x{size[0]}, json says {img['width']}x{img['height']}")
    if bar is not None:
        bar.close()


def _progress(total: int, enabled: bool):
    if not enabled or total < 200:
        return None
    from ..progress import progress_bar

    return progress_bar(total=total, unit="img", desc="reading images")


def _check_content(coco: dict, check_masks: bool, out: _Collector) -> None:
    names = {img["id"]: img["file_name"] for img in coco["images"]}
    annotated = {ann["image_id"] for ann in coco["annotations"]}
    for img in coco["images"]:
        if img["id"] not in annotated:
            out.add("image_without_annotations", f"image {img['id']} {img['file_name']}")
    for iid in crowd_only_images(coco):
        out.add("crowd_only_image", f"image {iid} {names[iid]}")

    formats = mask_formats(coco)
    if formats["polygon"] and formats["rle"]:
        minority = min(formats, key=lambda k: len(formats[k]))
        ids = ", ".join(map(str, formats[minority][:5]))
        out.add("rle_polygon_mix", f"{len(formats['polygon'])} polygon and {len(formats['rle'])} RLE "
                                   f"non-crowd masks; {minority}: annotations {ids}", count=len(formats[minority]))

    used = {a["category_id"] for a in coco["annotations"] if not a.get("iscrowd", 0)}
    for cat in sorted(coco["categories"], key=lambda c: c["id"]):
        if cat["id"] not in used:
            out.add("category_without_instances", f"category {cat['id']} {cat['name']!r}")

    anomalies, _ = annotation_anomalies(coco, check_masks=check_masks)
    for a in anomalies:
        out.add(a.problem, f"annotation {a.annotation_id} (image {a.image_id})")


def _check_splits(coco: dict, other: dict, other_name: str, out: _Collector) -> None:
    diff = split_category_differences(coco, other)
    for cid, here, there in diff["definitions"]:
        out.add("category_list_mismatch", f"category {cid}: {here!r} here, {there!r} in {other_name}")
    names = {c["id"]: c["name"] for c in other["categories"] + coco["categories"]}
    for cid in diff["only_here"]:
        out.add("categories_missing_in_other_split", f"category {cid} {names[cid]!r}: no instance in {other_name}")
    for cid in diff["only_in_other"]:
        out.add("categories_missing_here", f"category {cid} {names[cid]!r}: instances only in {other_name}")


def check_dataset(annotation_file: Union[PathLike, dict], images_dir: Optional[PathLike] = None,
                  other_split: Union[PathLike, dict, None] = None, read_images: bool = True,
                  check_masks: bool = True, max_examples: int = 5, workers: int = 4,
                  progress: bool = False) -> Report:
    """Check a COCO annotation file (a path, or an already-loaded dict) and its images.

    ``images_dir``: the folder the ``file_name`` entries are relative to; ``None`` skips the
    file checks.  ``read_images=False`` only checks that the files exist (no decoding, no size
    check).  ``other_split``: the other split's annotation file (e.g. val for a train file):
    category lists must match, and categories with instances in only one of them are reported.
    ``check_masks=False`` skips rasterising masks (the box-vs-mask and empty-polygon checks).

    Raises :class:`DataError` when an input cannot be read at all: no such file, not JSON, not a
    COCO object (see :mod:`yolact_lite.data.coco_schema`), no image folder.
    """
    source = "<dict>" if isinstance(annotation_file, dict) else os.fspath(annotation_file)
    data = annotation_file if isinstance(annotation_file, dict) else read_json(annotation_file)
    problems, coco = _schema(data, source)
    folder = None if images_dir is None else Path(images_dir)
    if folder is not None and not folder.is_dir():
        raise DataError(f"{folder}: image directory does not exist")
    other = None
    if other_split is not None:
        other_name = "<dict>" if isinstance(other_split, dict) else os.fspath(other_split)
        _, other = _schema(other_split if isinstance(other_split, dict) else read_json(other_split), other_name)

    out = _Collector(max_examples)
    for problem in problems:
        out.add(problem.kind, problem.message)
    if folder is not None:
        _check_images(coco, folder, read_images, workers, out, progress)
    _check_content(coco, check_masks, out)
    if other is not None:
        _check_splits(coco, other, other_name, out)
    return Report(annotation_file=source, images_dir=None if folder is None else str(folder),
                  other_split=None if other is None else other_name,
                  num_images=len(data["images"]), num_annotations=len(data["annotations"]),
                  num_categories=len(data["categories"]), images_read=folder is not None and read_images,
                  masks_checked=bool(check_masks), findings=out.findings())
