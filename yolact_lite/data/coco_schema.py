"""The COCO annotation schema, written once: one walk over a COCO dict that yields every problem.

Two modes use the same walk:

* first error: :func:`yolact_lite.data.coco.validate_coco_dict` raises the first problem as a
  :class:`~yolact_lite.errors.DataError` (loading a dataset for training or evaluation);
* all problems: :func:`check_coco_schema` returns every problem and the well-formed part of the
  file (:func:`yolact_lite.data.check.check_dataset`, the ``yolact-lite data check`` command).

A :class:`Problem` has a kind, a level and a one-line message that names where it is, e.g.
``annotations[12] (id 345): unknown image id 9``.  The walk goes in file order: the top level,
then ``categories``, ``images`` and ``annotations``, one problem (the first) per entry.

* ``not_coco`` (level ``fatal``): the top level is not an object, ``images`` / ``annotations`` /
  ``categories`` is missing or not a list, or ``categories`` is empty.  It is the only problem
  reported, since nothing else can be checked.
* every other kind (:data:`SCHEMA_CHECKS`, level ``break``) is about one entry.  An entry is an
  object with an integer ``id`` used once in its list; a category has a string ``name``; an image a
  non-empty ``file_name`` and integer ``height`` and ``width`` in ``1..MAX_IMAGE_SIDE``; an
  annotation integer ``image_id`` and ``category_id`` that are listed, a ``bbox`` of 4 numbers, a
  ``segmentation`` (polygons: lists of numbers; RLE: ``size`` [h, w] and ``counts``, a list of
  non-negative integers or a valid compressed string) and an ``iscrowd`` of 0 or 1 when present.

Only the structure is checked here; what the data does to training (degenerate polygons, empty
masks, boxes outside the image...) is :mod:`yolact_lite.data.stats`' business.  An annotation that
points at a listed but malformed image or category is not reported again (the entry it points at
is), but it is left out of the well-formed part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

__all__ = ["MAX_IMAGE_SIDE", "SCHEMA_CHECKS", "NOT_COCO", "FATAL", "Problem", "coco_problems",
           "check_coco_schema", "is_int", "is_number", "rle_string_counts"]

# Image sides above this are refused: pycocotools' polygon rasteriser works in 32-bit pixel
# indices, and no real image comes near it (OpenCV decodes at most 2^30 pixels).
MAX_IMAGE_SIDE = 1 << 20

#: Entry-level problem kinds: (level, what it means).  The ``data check`` report lists them first.
SCHEMA_CHECKS: Dict[str, Tuple[str, str]] = {
    "string_id": ("break", "an id (or an image_id / category_id reference) is a string, not an integer"),
    "duplicate_id": ("break", "two images, annotations or categories share an id"),
    "malformed_image": ("break", "an image entry without a usable file_name, height or width"),
    "malformed_category": ("break", "a category entry without an integer id and a name"),
    "malformed_annotation": ("break", "an annotation without a valid bbox, segmentation or iscrowd"),
    "unknown_image_id": ("break", "an annotation refers to an image id that is not listed"),
    "unknown_category_id": ("break", "an annotation refers to a category id that is not listed"),
}
NOT_COCO = "not_coco"
FATAL = "fatal"

SECTIONS = ("images", "annotations", "categories")
_SINGULAR = {"images": "image", "annotations": "annotation", "categories": "category"}
_MALFORMED = {"images": "malformed_image", "annotations": "malformed_annotation",
              "categories": "malformed_category"}


@dataclass(frozen=True)
class Problem:
    """One schema problem: ``kind`` (a key of :data:`SCHEMA_CHECKS` or :data:`NOT_COCO`),
    ``level`` (``break`` or ``fatal``) and a one-line ``message`` naming where it is."""

    kind: str
    level: str
    message: str


def _problem(kind: str, message: str) -> Problem:
    return Problem(kind, SCHEMA_CHECKS[kind][0], message)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def rle_string_counts(counts: str) -> Optional[List[int]]:
    """The run lengths of a COCO compressed RLE string, or None when it is malformed.

    Same format as pycocotools (6-bit groups offset by 48, low 5 bits of value, bit 5 set
    while more groups follow, bit 4 of the last group the sign; counts after the second are
    stored as the difference to the count two before).  pycocotools itself does not check
    the string and reads past its end on some malformed input, so it is checked here.
    """
    out: List[int] = []
    pos, n = 0, len(counts)
    while pos < n:
        value, shift, more = 0, 0, True
        while more:
            if pos >= n or shift > 30:  # ends inside a number, or more than 7 groups
                return None
            c = ord(counts[pos]) - 48
            if not 0 <= c < 64:
                return None
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value -= 1 << shift  # sign-extend
        if len(out) > 2:
            value += out[-2]
        if not 0 <= value < 1 << 32:
            return None
        out.append(value)
    return out


# --------------------------------------------------------------------------- the rules


def _where(section: str, index: int, item: Any) -> str:
    if isinstance(item, dict) and "id" in item:
        return f"{section}[{index}] (id {item['id']!r})"
    return f"{section}[{index}]"


def _top_level_problem(data: Any) -> Optional[str]:
    if not isinstance(data, dict):
        return f"the top level must be a JSON object, got {type(data).__name__}"
    for key in SECTIONS:
        if key not in data:
            return f"missing required key '{key}'"
        if not isinstance(data[key], list):
            return f"'{key}' must be a list, got {type(data[key]).__name__}"
    if not data["categories"]:
        return "'categories' is empty"
    return None


def _integer_problem(item: dict, key: str, where: str, malformed: str) -> Problem:
    """``item[key]`` is not an integer: a string is a ``string_id``, anything else ``malformed``."""
    value = item.get(key)
    if isinstance(value, str):
        shown = repr(value) if len(value) <= 20 else repr(value[:20]) + "..."
        return _problem("string_id", f"{where}: '{key}' must be an integer, got the string {shown}")
    got = "it is missing" if key not in item else f"got {type(value).__name__}"
    return _problem(malformed, f"{where}: '{key}' must be an integer, {got}")


def _id_problem(section: str, index: int, item: Any, first_at: Dict[int, int]) -> Optional[Problem]:
    """The entry is not an object, or its id is not an integer or already used."""
    where = _where(section, index, item)
    if not isinstance(item, dict):
        return _problem(_MALFORMED[section], f"{where} must be an object, got {type(item).__name__}")
    if not is_int(item.get("id")):
        return _integer_problem(item, "id", where, _MALFORMED[section])
    value = item["id"]
    if value in first_at:
        return _problem("duplicate_id", f"{where}: duplicate {_SINGULAR[section]} id {value} "
                                        f"(first at {section}[{first_at[value]}])")
    first_at[value] = index
    return None


def _category_problem(cat: dict, where: str) -> Optional[str]:
    if not isinstance(cat.get("name"), str):
        return f"{where}: 'name' must be a string"
    return None


def _image_problem(img: dict, where: str) -> Optional[str]:
    if not isinstance(img.get("file_name"), str) or not img["file_name"]:
        return f"{where}: 'file_name' must be a non-empty string"
    for key in ("height", "width"):
        if not is_int(img.get(key)) or not 0 < img[key] <= MAX_IMAGE_SIDE:
            return f"{where}: '{key}' must be a positive integer <= {MAX_IMAGE_SIDE}"
    return None


def _segmentation_problem(seg: Any) -> Optional[str]:
    if isinstance(seg, list):
        if all(is_number(v) for v in seg):  # a single flat polygon
            return None
        for part in seg:
            if not isinstance(part, list) or not all(is_number(v) for v in part):
                return "polygon segmentation must be a list of lists of numbers"
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(is_int(v) for v in size)):
            return "RLE segmentation needs 'size' = [height, width]"
        if isinstance(counts, str):
            if rle_string_counts(counts) is None:
                return "RLE 'counts' is not a valid COCO compressed RLE string"
            return None
        if isinstance(counts, list) and all(is_int(v) and v >= 0 for v in counts):
            return None
        return "RLE 'counts' must be a string or a list of non-negative integers"
    return f"'segmentation' must be a polygon list or an RLE dict, got {type(seg).__name__}"


def _annotation_fields_problem(ann: dict, where: str) -> Optional[str]:
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        return f"{where}: 'bbox' must be a list of 4 numbers [x, y, w, h]"
    if "segmentation" not in ann:
        return f"{where}: missing 'segmentation'"
    problem = _segmentation_problem(ann["segmentation"])
    if problem:
        return f"{where}: {problem}"
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1) or not isinstance(crowd, (int, bool)):
        return f"{where}: 'iscrowd' must be 0 or 1"
    return None


def _reference_problem(ann: dict, key: str, where: str, listed: set) -> Optional[Problem]:
    """``image_id`` / ``category_id`` is not an integer, or names no listed entry."""
    if not is_int(ann.get(key)):
        return _integer_problem(ann, key, where, "malformed_annotation")
    if ann[key] not in listed:
        noun = key[: -len("_id")]
        return _problem(f"unknown_{key}", f"{where}: unknown {noun} id {ann[key]}")
    return None


# --------------------------------------------------------------------------- the walk


def _listed_ids(items: List[Any]) -> set:
    return {item["id"] for item in items if isinstance(item, dict) and is_int(item.get("id"))}


def _entries(data: dict, section: str, kept: Dict[str, list]) -> Iterator[Problem]:
    """The problems of the categories or images; the good entries go to ``kept[section]``."""
    fields_problem = _category_problem if section == "categories" else _image_problem
    first_at: Dict[int, int] = {}
    for i, item in enumerate(data[section]):
        problem = _id_problem(section, i, item, first_at)
        if problem is None:
            message = fields_problem(item, _where(section, i, item))
            problem = None if message is None else _problem(_MALFORMED[section], message)
        if problem is None:
            kept[section].append(item)
        else:
            yield problem


def _annotations(data: dict, kept: Dict[str, list]) -> Iterator[Problem]:
    listed = {"image_id": _listed_ids(data["images"]), "category_id": _listed_ids(data["categories"])}
    usable = {"image_id": {img["id"] for img in kept["images"]},
              "category_id": {cat["id"] for cat in kept["categories"]}}
    first_at: Dict[int, int] = {}
    for i, ann in enumerate(data["annotations"]):
        where = _where("annotations", i, ann)
        problem = (_id_problem("annotations", i, ann, first_at)
                   or _reference_problem(ann, "image_id", where, listed["image_id"])
                   or _reference_problem(ann, "category_id", where, listed["category_id"]))
        if problem is None:
            message = _annotation_fields_problem(ann, where)
            problem = None if message is None else _problem("malformed_annotation", message)
        if problem is not None:
            yield problem
        elif ann["image_id"] in usable["image_id"] and ann["category_id"] in usable["category_id"]:
            kept["annotations"].append(ann)  # else: what it points at is malformed, reported there


def _walk(data: Any, kept: Dict[str, list]) -> Iterator[Problem]:
    message = _top_level_problem(data)
    if message is not None:
        yield Problem(NOT_COCO, FATAL, message)
        return
    yield from _entries(data, "categories", kept)
    yield from _entries(data, "images", kept)
    yield from _annotations(data, kept)


def coco_problems(data: Any) -> Iterator[Problem]:
    """Every schema problem of ``data``, in file order, lazily: ``next()`` gives the first one
    without walking the rest."""
    return _walk(data, {key: [] for key in SECTIONS})


def check_coco_schema(data: Any) -> Tuple[List[Problem], Dict[str, list]]:
    """Every schema problem of ``data``, and its well-formed part: ``images``, ``annotations`` and
    ``categories`` holding only the entries without problem (all empty after a ``fatal`` one)."""
    kept: Dict[str, list] = {key: [] for key in SECTIONS}
    problems = list(_walk(data, kept))
    return problems, kept
