"""Find what would break or silently hurt training in a COCO dataset, before training.

    python -m yolact_lite.data.check ANN.json --images DIR [--other-split ANN2.json]
        [--no-image-read] [--no-mask-check] [--examples N] [--json OUT.json]

:func:`check_dataset` reads the annotation file tolerantly (unlike
:func:`~yolact_lite.data.coco.load_coco_json`, which stops at the first structural problem,
it collects them all), looks at every image file, and runs the annotation checks of
:func:`yolact_lite.data.stats.annotation_anomalies` on the annotations that are well formed.
Every problem kind found is reported once, with a count and the first few examples.

Levels (:data:`LEVELS`):

* ``break``: :class:`~yolact_lite.data.coco.CocoDataset` refuses the file, training crashes,
  or targets are wrong (e.g. a mask drawn at another size than its image);
* ``hurt``: training runs but loses or mis-learns data without saying so (annotations the
  dataset drops, duplicate targets, classes the model never sees...);
* ``note``: worth knowing, harmless for training (e.g. images without annotations, which
  serve as background-only negatives).

Exit codes of :func:`main`: 0 nothing at ``break`` or ``hurt`` level, 1 at least one such
problem, 2 the input could not be read (no such file, not JSON, not a COCO object, no
image folder).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import DataError
from .coco import MAX_IMAGE_SIDE, _is_int, _is_number, _validate_segmentation
from .image_io import read_image
from .stats import ANOMALY_KINDS, annotation_anomalies, crowd_only_images, mask_formats, split_category_differences

__all__ = ["LEVELS", "CHECKS", "Finding", "Report", "check_dataset", "read_json", "build_parser", "main"]

PathLike = Union[str, "os.PathLike[str]"]

LEVELS = ("break", "hurt", "note")

#: Every problem kind: (level, what it means for training).  Report order.
CHECKS: Dict[str, Tuple[str, str]] = {
    # structure of the json
    "string_id": ("break", "an id (or an image_id / category_id reference) is a string, not an integer"),
    "duplicate_id": ("break", "two images, annotations or categories share an id"),
    "malformed_image": ("break", "an image entry without a usable file_name, height or width"),
    "malformed_category": ("break", "a category entry without an integer id and a name"),
    "malformed_annotation": ("break", "an annotation without a valid bbox, segmentation or iscrowd"),
    "unknown_image_id": ("break", "an annotation refers to an image id that is not listed"),
    "unknown_category_id": ("break", "an annotation refers to a category id that is not listed"),
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


# --------------------------------------------------------------------------- reading


def read_json(path: PathLike) -> dict:
    """The top-level COCO object of ``path``; :class:`DataError` when it cannot be read as one
    (the entries themselves are checked by :func:`check_dataset`)."""
    name = os.fspath(path)
    p = Path(name)
    if not p.is_file():
        raise DataError(f"{name}: no such annotation file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: cannot read annotation file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{name}: cannot parse JSON ({first})") from None
    if not isinstance(data, dict):
        raise DataError(f"{name}: the top level must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{name}: '{key}' must be a list" + ("" if key in data else " (missing)"))
    return data


def _id_text(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _where(kind: str, index: int, item: Any) -> str:
    if isinstance(item, dict) and "id" in item:
        return f"{kind}[{index}] (id {_id_text(item['id'])})"
    return f"{kind}[{index}]"


_MALFORMED = {"images": "malformed_image", "categories": "malformed_category",
              "annotations": "malformed_annotation"}


def _check_ids(items: Sequence[Any], kind: str, out: _Collector) -> Dict[int, dict]:
    """Entries with an integer id, by id (the first of a duplicate pair wins); entries that are
    not objects, string ids, other non-integer ids and duplicate ids are reported."""
    by_id: Dict[int, dict] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            out.add(_MALFORMED[kind], f"{kind}[{i}] is not an object")
            continue
        value = item.get("id")
        if isinstance(value, str):
            out.add("string_id", f"{_where(kind, i, item)}: id is a string")
        elif not _is_int(value):
            out.add(_MALFORMED[kind], f"{_where(kind, i, item)}: id is missing or not an integer")
        elif value in by_id:
            out.add("duplicate_id", f"{kind}: id {value} used more than once")
        else:
            by_id[value] = item
    return by_id


def _structure(data: dict, out: _Collector) -> dict:
    """The well-formed part of ``data`` (valid images, categories and annotations only)."""
    categories = {}
    for cid, cat in _check_ids(data["categories"], "categories", out).items():
        if isinstance(cat.get("name"), str):
            categories[cid] = cat
        else:
            out.add("malformed_category", f"category {cid}: 'name' is not a string")

    images = {}
    for iid, img in _check_ids(data["images"], "images", out).items():
        problem = None
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            problem = "'file_name' is not a non-empty string"
        for key in ("height", "width"):
            if not (_is_int(img.get(key)) and 0 < img[key] <= MAX_IMAGE_SIDE):
                problem = problem or f"'{key}' is not a positive integer <= {MAX_IMAGE_SIDE}"
        if problem:
            out.add("malformed_image", f"image {iid}: {problem}")
        else:
            images[iid] = img

    annotations = []
    listed_images = {img.get("id") for img in data["images"] if isinstance(img, dict) and _is_int(img.get("id"))}
    listed_categories = {c.get("id") for c in data["categories"] if isinstance(c, dict) and _is_int(c.get("id"))}
    for aid, ann in _check_ids(data["annotations"], "annotations", out).items():
        where = f"annotation {aid}"
        iid, cid = ann.get("image_id"), ann.get("category_id")
        refs = (("image_id", iid), ("category_id", cid))
        strings = [key for key, value in refs if isinstance(value, str)]
        if strings:
            out.add("string_id", f"{where}: {strings[0]} {_id_text(ann[strings[0]])} is a string")
            continue
        others = [key for key, value in refs if not _is_int(value)]
        if others:
            out.add("malformed_annotation", f"{where}: {others[0]} is missing or not an integer")
            continue
        if iid not in images:
            if iid not in listed_images:  # else: its image entry is malformed (reported there)
                out.add("unknown_image_id", f"{where}: image_id {iid} is not listed")
            continue
        if cid not in categories:
            if cid not in listed_categories:
                out.add("unknown_category_id", f"{where}: category_id {cid} is not listed")
            continue
        bbox = ann.get("bbox")
        problem = None
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            problem = f"{where}: 'bbox' is not 4 numbers [x, y, w, h]"
        elif "segmentation" not in ann:
            problem = f"{where}: no 'segmentation'"
        elif ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd", 0), float):
            problem = f"{where}: 'iscrowd' is not 0 or 1"
        else:
            problem = _validate_segmentation(ann["segmentation"], where)
        if problem:
            out.add("malformed_annotation", problem)
            continue
        annotations.append(ann)
    return {"images": list(images.values()), "annotations": annotations,
            "categories": list(categories.values())}


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

    Raises :class:`DataError` when an input cannot be read at all (see :func:`read_json`).
    """
    source = "<dict>" if isinstance(annotation_file, dict) else os.fspath(annotation_file)
    data = annotation_file if isinstance(annotation_file, dict) else read_json(annotation_file)
    if isinstance(annotation_file, dict):
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DataError(f"{source}: '{key}' must be a list")
    folder = None if images_dir is None else Path(images_dir)
    if folder is not None and not folder.is_dir():
        raise DataError(f"{folder}: image directory does not exist")
    other = None
    if other_split is not None:
        other_name = "<dict>" if isinstance(other_split, dict) else os.fspath(other_split)
        other = other_split if isinstance(other_split, dict) else read_json(other_split)

    out = _Collector(max_examples)
    coco = _structure(data, out)
    if folder is not None:
        _check_images(coco, folder, read_images, workers, out, progress)
    _check_content(coco, check_masks, out)
    if other is not None:
        _check_splits(coco, _structure(other, _Collector(0)), other_name, out)
    return Report(annotation_file=source, images_dir=None if folder is None else str(folder),
                  other_split=None if other is None else other_name,
                  num_images=len(data["images"]), num_annotations=len(data["annotations"]),
                  num_categories=len(data["categories"]), images_read=folder is not None and read_images,
                  masks_checked=bool(check_masks), findings=out.findings())


# --------------------------------------------------------------------------- command line

EXAMPLES = """examples:
  python -m yolact_lite.data.check data/coco_mini/train/annotations.json --images data/coco_mini/train/images
  python -m yolact_lite.data.check val.json --images val/ --other-split train.json --json check.json

exit status: 0 nothing that would break or hurt training, 1 such problems found,
2 the input could not be read"""


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``data check`` arguments, on a new parser or on ``parser`` (e.g. a subcommand's)."""
    if parser is None:
        parser = argparse.ArgumentParser(prog="yolact-lite data check",
                                         description="Find what would break or silently hurt training "
                                                     "in a COCO annotation file and its images.",
                                         epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("annotations", metavar="ANN.json", help="COCO annotation file")
    parser.add_argument("--images", metavar="DIR", help="folder the images' file_name entries are relative to "
                                                        "(without it, image files are not checked)")
    parser.add_argument("--other-split", metavar="ANN2.json",
                        help="the other split's annotation file (train for val, val for train): "
                             "compares the categories")
    parser.add_argument("--no-image-read", action="store_true",
                        help="only check that image files exist (no decoding, no size check)")
    parser.add_argument("--no-mask-check", action="store_true",
                        help="do not rasterise masks (skips box-vs-mask and empty-polygon checks)")
    parser.add_argument("--examples", type=int, default=5, metavar="N",
                        help="examples listed per problem kind (default: %(default)s)")
    parser.add_argument("--json", metavar="OUT.json", help="also write the report as JSON")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run the check for parsed arguments; prints the report, returns the exit code."""
    try:
        report = check_dataset(args.annotations, args.images, args.other_split,
                               read_images=not args.no_image_read, check_masks=not args.no_mask_check,
                               max_examples=max(0, args.examples), progress=True)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.to_text())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8")
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
