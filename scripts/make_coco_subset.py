#!/usr/bin/env python
"""Select and copy the small REAL COCO subset bundled in ``data/coco_mini/``.

Selection (deterministic, no randomness):

1. each split is ranked by (number of distinct object-size bins among its non-crowd
   instances -- COCO small < 32^2 <= medium < 96^2 <= large -- descending, then file size
   ascending, then image id), so images with a mix of object sizes come first;
2. the smallest images containing a crowd annotation (with >= 2 size bins) are taken first,
   ``--crowd-images`` per split, so crowd handling is exercised;
3. images are then added in rank order while they fit the split's byte budget: the total
   budget ``--max-mb`` (10^6 bytes, including the annotation files and NOTICE.md) minus the
   annotation/NOTICE overhead, split 2/3 train and 1/3 val.

Images are copied byte for byte; each annotation json keeps every top-level field (info,
licenses, categories -- all of them -- images, annotations) with images and annotations
filtered to the chosen images.  NOTICE.md is the source's NOTICE verbatim plus a paragraph
describing this subset.

    python scripts/make_coco_subset.py --src /work/shared/data --dst data/coco_mini --max-mb 9.5
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from yolact_lite.data import coco_subset

SPLITS = (("train", 2.0 / 3.0), ("val", 1.0 / 3.0))


def size_bin(area: float) -> str:
    if area < 32 ** 2:
        return "small"
    if area < 96 ** 2:
        return "medium"
    return "large"


def rank_images(data: dict, image_dir: Path):
    anns_by_image = {}
    for ann in data["annotations"]:
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    ranked = []
    for img in data["images"]:
        anns = anns_by_image.get(img["id"], [])
        bins = {size_bin(a["area"]) for a in anns if not a.get("iscrowd", 0)}
        has_crowd = any(a.get("iscrowd", 0) for a in anns)
        nbytes = (image_dir / img["file_name"]).stat().st_size
        ranked.append({"img": img, "bins": len(bins), "crowd": has_crowd, "bytes": nbytes})
    ranked.sort(key=lambda r: (-r["bins"], r["bytes"], r["img"]["id"]))
    return ranked


def choose(ranked, budget: int, crowd_images: int):
    chosen, used = [], 0
    crowd_first = [r for r in ranked if r["crowd"] and r["bins"] >= 2]
    crowd_first.sort(key=lambda r: (r["bytes"], r["img"]["id"]))
    for r in crowd_first[:crowd_images] + ranked:
        if any(c is r for c in chosen):
            continue
        if used + r["bytes"] <= budget:
            chosen.append(r)
            used += r["bytes"]
    return chosen


def dump(data: dict) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


def stats(data: dict) -> dict:
    counts = {"small": 0, "medium": 0, "large": 0, "crowd": 0}
    for a in data["annotations"]:
        counts["crowd" if a.get("iscrowd", 0) else size_bin(a["area"])] += 1
    return counts


def notice_text(src_notice: str, summary: dict) -> str:
    lines = [src_notice.rstrip("\n"), "", "## This copy: data/coco_mini/ bundled with yolact_lite", "",
             "A subset of the coco_mini set described above (same images, byte-identical; "
             "annotation files filtered to the chosen images with every other field, including "
             "all 80 categories, kept). Selected deterministically by "
             "`scripts/make_coco_subset.py`: images ranked by the number of distinct object-size "
             "bins (small/medium/large) they contain, then by file size (smallest first); the "
             f"smallest {summary['crowd_images']} crowd-containing images per split are taken "
             "first; images are added while they fit a byte budget of "
             f"{summary['max_mb']} MB, split 2/3 train and 1/3 val. Only coco_mini/ is copied here: the "
             "video/ and photos/ sections above describe files not included in this folder."]
    for split in ("train", "val"):
        s = summary[split]
        lines.append(f"- {split}: {s['images']} images, {s['instances']} instances "
                     f"({s['small']} small / {s['medium']} medium / {s['large']} large / "
                     f"{s['crowd']} crowd).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default="/work/shared/data",
                        help="folder holding coco_mini/ and NOTICE.md")
    parser.add_argument("--dst", default="data/coco_mini", help="output folder")
    parser.add_argument("--max-mb", type=float, default=9.5,
                        help="total size budget in MB (10^6 bytes)")
    parser.add_argument("--crowd-images", type=int, default=2,
                        help="crowd-containing images forced into each split")
    args = parser.parse_args(argv)

    src = Path(args.src)
    src_notice = (src / "NOTICE.md").read_text(encoding="utf-8")
    dst = Path(args.dst)
    budget = int(args.max_mb * 1e6)

    datas = {split: json.loads((src / "coco_mini" / split / "annotations.json").read_text())
             for split, _ in SPLITS}
    notice_allowance = len(src_notice.encode("utf-8")) + 4096
    reserve = notice_allowance  # bytes kept out of the image budget (grows to fit the jsons)
    chosen = {}
    for _ in range(20):  # shrink the image budget until images + jsons + notice fit
        total = notice_allowance
        for split, share in SPLITS:
            ranked = rank_images(datas[split], src / "coco_mini" / split / "images")
            chosen[split] = choose(ranked, int((budget - reserve) * share), args.crowd_images)
            ids = {r["img"]["id"] for r in chosen[split]}
            total += sum(r["bytes"] for r in chosen[split])
            total += len(dump(coco_subset(datas[split], ids)))
        if total <= budget:
            break
        reserve += total - budget + 4096
    else:
        print("error: could not fit the subset into the budget", file=sys.stderr)
        return 1

    if dst.exists():
        shutil.rmtree(dst)
    summary = {"max_mb": args.max_mb, "crowd_images": args.crowd_images}
    for split, _ in SPLITS:
        ids = {r["img"]["id"] for r in chosen[split]}
        (dst / split / "images").mkdir(parents=True)
        for r in chosen[split]:
            name = r["img"]["file_name"]
            shutil.copyfile(src / "coco_mini" / split / "images" / name, dst / split / "images" / name)
        sub = coco_subset(datas[split], ids)
        (dst / split / "annotations.json").write_bytes(dump(sub))
        summary[split] = {"images": len(sub["images"]), "instances": len(sub["annotations"]),
                          **stats(sub)}
    (dst / "NOTICE.md").write_text(notice_text(src_notice, summary), encoding="utf-8")

    total = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    for split, _ in SPLITS:
        print(f"{split}: {summary[split]}")
    print(f"total: {total} bytes ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
