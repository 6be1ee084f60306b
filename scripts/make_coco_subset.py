#!/usr/bin/env python
"""Select and copy the REAL COCO subset bundled in ``data/coco_mini/``.

Selection (deterministic, no randomness; images keep the source's order):

- train: every image of the source's train split with at least one non-crowd ``person``
  annotation, plus the person-free images named by ``--negative-ids`` (default 483330, which
  tests use), plus the ``--negatives`` smallest further person-free images (file size
  ascending, then image id; default 0);
- val: every image of the source's val split.

Each split ships each image once (byte for byte) with two annotation files:

- ``annotations.json``: every annotation of the shipped images, all 80 categories and every
  other top-level field (info, licenses) kept (``yolact_lite.data.coco_subset``);
- ``annotations_person.json``: the same images, only the person category (COCO id 1) in
  ``categories`` and only person annotations (crowd ones included, as COCO marks them), so a
  person detector's detections on person-free images count as false positives in evaluation.

NOTICE.md is the source's NOTICE verbatim plus a paragraph describing this copy.  The run
fails (and writes nothing) if the copy would exceed ``--max-mib``.

    python scripts/make_coco_subset.py --src ../shared/data --dst data/coco_mini
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from yolact_lite.box_ops import coco_size_bin
from yolact_lite.data import coco_subset

ROOT = Path(__file__).resolve().parents[1]
PERSON_ID = 1
SPLITS = ("train", "val")


def person_image_ids(data: dict) -> set:
    return {a["image_id"] for a in data["annotations"]
            if a["category_id"] == PERSON_ID and not a.get("iscrowd", 0)}


def choose_train(data: dict, image_dir: Path, negative_ids, negatives: int) -> set:
    """Ids of the person images, the named negatives and the ``negatives`` smallest others."""
    all_ids = {img["id"] for img in data["images"]}
    persons = person_image_ids(data)
    named = set(negative_ids)
    missing = named - all_ids
    if missing:
        raise SystemExit(f"error: --negative-ids not in the source train split: {sorted(missing)}")
    with_person = named & persons
    if with_person:
        raise SystemExit(f"error: --negative-ids contain a person: {sorted(with_person)}")
    others = [img for img in data["images"] if img["id"] not in persons | named]
    others.sort(key=lambda img: ((image_dir / img["file_name"]).stat().st_size, img["id"]))
    if negatives > len(others):
        raise SystemExit(f"error: --negatives {negatives}: only {len(others)} further person-free images")
    return persons | named | {img["id"] for img in others[:negatives]}


def person_only(data: dict) -> dict:
    """The COCO dict with only the person category and person annotations; images unchanged."""
    out = dict(data)
    out["categories"] = [c for c in data["categories"] if c["id"] == PERSON_ID]
    out["annotations"] = [a for a in data["annotations"] if a["category_id"] == PERSON_ID]
    return out


def dump(data: dict) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


def stats(data: dict) -> dict:
    counts = {"images": len(data["images"]), "instances": len(data["annotations"]),
              "small": 0, "medium": 0, "large": 0, "crowd": 0}
    for a in data["annotations"]:
        counts["crowd" if a.get("iscrowd", 0) else coco_size_bin(a["area"])] += 1
    counts["images_with_person"] = len(person_image_ids(data))
    return counts


def notice_text(src_notice: str, args, summary: dict) -> str:
    negs = ", ".join(str(i) for i in args.negative_ids) or "none"
    lines = [
        src_notice.rstrip("\n"), "", "## This copy: data/coco_mini/ bundled with yolact_lite", "",
        "A subset of the coco_mini set described above (same images, byte-identical; annotations "
        "unchanged). Selected deterministically by `scripts/make_coco_subset.py`: train holds every "
        "train image with at least one non-crowd person, plus the person-free image(s) "
        f"{negs} and the {args.negatives} smallest further person-free images; val holds all val "
        "images. Each split has two annotation files for the same images: `annotations.json` "
        "(every annotation, all 80 categories and every other field kept) and "
        "`annotations_person.json` (only the person category, id 1, and person annotations, so "
        "detections on person-free images count as false positives). Only coco_mini/ is copied "
        "here: the video/ and photos/ sections above describe files not included in this folder "
        "(see `data/NOTICE.md`).",
    ]
    for split in SPLITS:
        for name in ("annotations.json", "annotations_person.json"):
            s = summary[split][name]
            lines.append(f"- {split}/{name}: {s['images']} images ({s['images_with_person']} with a "
                         f"person), {s['instances']} instances ({s['small']} small / "
                         f"{s['medium']} medium / {s['large']} large / {s['crowd']} crowd).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default=str(ROOT.parent / "shared" / "data"),
                        help="folder holding coco_mini/ and NOTICE.md (default: ../shared/data next to the repository)")
    parser.add_argument("--dst", default=str(ROOT / "data" / "coco_mini"), help="output folder")
    parser.add_argument("--negative-ids", type=int, nargs="*", default=[483330],
                        help="person-free train image ids to include (default: 483330)")
    parser.add_argument("--negatives", type=int, default=0,
                        help="further person-free train images to add, smallest files first (default: 0)")
    parser.add_argument("--max-mib", type=float, default=34.0,
                        help="fail if the copy would exceed this many MiB (default: 34)")
    args = parser.parse_args(argv)

    src = Path(args.src)
    src_notice = (src / "NOTICE.md").read_text(encoding="utf-8")
    dst = Path(args.dst)

    files = {}  # relative path -> bytes, or source path to copy
    summary = {}
    for split in SPLITS:
        image_dir = src / "coco_mini" / split / "images"
        data = json.loads((src / "coco_mini" / split / "annotations.json").read_text(encoding="utf-8"))
        if split == "train":
            ids = choose_train(data, image_dir, args.negative_ids, args.negatives)
        else:
            ids = {img["id"] for img in data["images"]}
        full = coco_subset(data, ids)
        person = person_only(full)
        summary[split] = {"annotations.json": stats(full), "annotations_person.json": stats(person)}
        files[f"{split}/annotations.json"] = dump(full)
        files[f"{split}/annotations_person.json"] = dump(person)
        for img in full["images"]:
            files[f"{split}/images/{img['file_name']}"] = image_dir / img["file_name"]
    files["NOTICE.md"] = notice_text(src_notice, args, summary).encode("utf-8")

    total = sum(len(v) if isinstance(v, bytes) else v.stat().st_size for v in files.values())
    if total > args.max_mib * 2 ** 20:
        print(f"error: the copy would be {total / 2 ** 20:.2f} MiB, over --max-mib {args.max_mib}",
              file=sys.stderr)
        return 1

    if dst.exists():
        shutil.rmtree(dst)
    for rel, content in sorted(files.items()):
        path = dst / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            shutil.copyfile(content, path)

    for split in SPLITS:
        for name, s in summary[split].items():
            print(f"{split}/{name}: {s}")
    print(f"total: {total} bytes ({total / 2 ** 20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
