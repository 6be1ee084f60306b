"""Statistics of a COCO-format annotation file: class balance, object sizes, crowding, anomalies.

    yolact-lite data stats DATA.json [--config C] [--set k=v ...] [--out DIR]
        [--no-mask-check] [--beta 0.999] [--compare OTHER_CONFIG ...]

Prints the tables and writes ``DIR/data_stats.md``, ``DIR/data_stats.json`` and
``DIR/data_stats.png`` (default ``runs/data_stats``).  ``--config`` (default yolact_base)
gives the input size, anchor scales, resize mode and ``loss.masks_to_train`` used by the
prior-scale size bins and the crowding table; ``--compare`` adds the prior-scale bins of
further configs.  No image is read; ``--no-mask-check`` also skips rasterising the masks
(the box-vs-mask and empty-polygon checks), which is much faster on large files.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Dict, List

from ..config import load_config
from ..data.coco import load_coco_json
from ..data.stats import ANOMALY_KINDS, dataset_stats
from . import add_config_args, config_from_args, run_cli

DEFAULT_CONFIG = "yolact_base"
MAX_EXAMPLES = 10
TOP_CLASSES_PLOT = 30


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yolact-lite data stats", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA.json", help="COCO annotation json")
    add_config_args(p, required=False)
    p.add_argument("--out", default="runs/data_stats", help="output directory (default: %(default)s)")
    p.add_argument("--no-mask-check", action="store_true",
                   help="do not rasterise masks (skips the box-vs-mask and empty-mask checks)")
    p.add_argument("--beta", type=float, default=0.999,
                   help="beta of the class-balanced weights (default: %(default)s)")
    p.add_argument("--compare", action="append", default=[], metavar="CONFIG",
                   help="also bin object sizes by this config's anchors (repeatable)")
    return p


# --------------------------------------------------------------------------- markdown


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}%"


def _table(header: List[str], rows: List[List[Any]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return out


def _prior_rows(prior: Dict[str, Any]) -> List[List[Any]]:
    total = prior["total"] or 1
    return [[label, count, _pct(count / total)] for label, count in zip(prior["labels"], prior["counts"])]


def to_markdown(report: Dict[str, Any], source: str) -> str:
    cfg = report["config"]
    imb = report["imbalance"]
    lines = [f"# Dataset statistics: `{source}`", "",
             f"{report['num_images']} images, {report['num_annotations']} annotations, "
             f"{report['num_categories']} categories; config `{cfg['name']}` "
             f"(input {cfg['input_size']}, "
             f"{'letterbox' if cfg['preserve_aspect_ratio'] else 'square stretch'}, "
             f"masks_to_train {cfg['masks_to_train']}).", ""]
    if cfg["num_classes"] != report["num_categories"]:
        lines += [f"**Note:** the config has model.num_classes = {cfg['num_classes']} but the "
                  f"file has {report['num_categories']} categories.", ""]

    # classes
    ratio = imb["max_min_ratio"]
    lines += ["## Class counts", "",
              f"Non-crowd instances: {imb['total_instances']}. Largest class `{imb['top_class']}` "
              f"holds {_pct(imb['top_share'])} (top 5: {_pct(imb['top5_share'])}); "
              f"max/min ratio over non-empty classes: {'n/a' if ratio is None else f'{ratio:.1f}'}; "
              f"classes without instances: {imb['empty_classes']}; effective number of classes "
              f"(exp entropy): {imb['effective_classes']:.1f} of {imb['num_classes']}.", "",
              f"`weight`: class-balanced weight, beta = {report['class_weights_beta']} "
              "(mean 1 over non-empty classes, 0 for empty ones; background weight 1.0 is "
              "prepended by the loss).", ""]
    classes = sorted(report["classes"], key=lambda c: (-c["instances"], c["category_id"]))
    lines += _table(["id", "name", "instances", "images", "weight"],
                    [[c["category_id"], c["name"], c["instances"], c["images"], f"{c['weight']:.3f}"]
                     for c in classes])
    lines.append("")

    # sizes
    coco = report["sizes"]["coco"]
    total = coco["total"] or 1
    lines += ["## Object sizes", "", "COCO area bins (annotation `area`, non-crowd"
              + (f"; {coco['area_from_bbox']} from bbox w*h" if coco["area_from_bbox"] else "")
              + "):", ""]
    lines += _table(["bin", "instances", "share"],
                    [["small (< 32²)", coco["small"], _pct(coco["small"] / total)],
                     ["medium (32²–96²)", coco["medium"], _pct(coco["medium"] / total)],
                     ["large (>= 96²)", coco["large"], _pct(coco["large"] / total)]])
    priors = [(cfg["name"], report["sizes"]["prior"])] + list(report["prior_compare"].items())
    for name, prior in priors:
        lines += ["", f"Prior-scale bins for `{name}`: sqrt(w·h) in pixels after resizing to "
                  f"{prior['input_size']} ({'letterbox' if prior['preserve_aspect_ratio'] else 'square stretch'}); "
                  f"bins bounded by each level's smallest anchor scale. "
                  f"**{_pct(prior['share_below_smallest'])}** ({prior['below_smallest']}) are "
                  f"smaller than the smallest anchor ({prior['smallest_anchor']:g} px); median "
                  f"size {prior['median_size']:.1f} px, 10th percentile {prior['p10_size']:.1f} px.", ""]
        lines += _table(["size (px)", "instances", "share"], _prior_rows(prior))

    # crowding
    ipi = report["instances_per_image"]
    lines += ["", "## Instances per image", "",
              "Positives are approximated by non-crowd instances (each object usually matches "
              "several priors, so the real masks_to_train cut starts earlier).", ""]
    lines += _table(["images", "instances", "crowd anns", "empty images", "mean", "median",
                     "p90", "p99", "max"],
                    [[ipi["num_images"], ipi["total_instances"], ipi["crowd_annotations"],
                      ipi["images_without_instances"], f"{ipi['mean']:.2f}", f"{ipi['median']:g}",
                      f"{ipi['p90']:.1f}", f"{ipi['p99']:.1f}", ipi["max"]]])
    lines += ["", f"Images with more than masks_to_train = {ipi['masks_to_train']} instances: "
              f"{ipi['images_over_limit']} ({_pct(ipi['share_images_over_limit'])}); the original's "
              f"random subset would drop {ipi['instances_dropped']} instances "
              f"({_pct(ipi['share_instances_dropped'])} of all)."]

    # anomalies
    an = report["anomalies"]
    lines += ["", "## Annotation anomalies", "",
              f"{an['total']} found" + ("" if an["checked_masks"] else
                                         " (masks not rasterised: --no-mask-check)") + ".", ""]
    lines += _table(["problem", "count"], [[k, an["counts"][k]] for k in ANOMALY_KINDS])
    formats = report["mask_formats"]
    lines += ["", f"Images whose every annotation is a crowd: {len(report['crowd_only_images'])}. "
              f"Non-crowd masks: {formats['polygon']} polygons, {formats['rle']} RLE"
              + (" (mixed: two sources?)" if formats["polygon"] and formats["rle"] else "") + "."]
    if an["items"]:
        lines += ["", f"First {min(MAX_EXAMPLES, len(an['items']))} examples:", ""]
        lines += _table(["annotation id", "image id", "problem"],
                        [[a["annotation_id"], a["image_id"], a["problem"]]
                         for a in an["items"][:MAX_EXAMPLES]])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plot (OpenCV)


def _text(img, text: str, x: int, y: int, scale: float = 0.45, color=(40, 40, 40), thick: int = 1):
    import cv2
    cv2.putText(img, text.encode("ascii", "replace").decode("ascii"), (int(x), int(y)),
                cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def _text_width(text: str, scale: float = 0.45) -> int:
    import cv2
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]


def _bars(img, x0: int, y0: int, w: int, h: int, labels: List[str], values: List[int], title: str,
          colors=None) -> None:
    """A vertical bar chart in the box (x0, y0, w, h), labels under the bars."""
    import cv2
    _text(img, title, x0, y0 - 8, 0.5, thick=1)
    top = max(values) if values and max(values) > 0 else 1
    n = max(len(values), 1)
    slot = w / n
    base = y0 + h
    cv2.line(img, (x0, base), (x0 + w, base), (0, 0, 0), 1)
    for i, (label, v) in enumerate(zip(labels, values)):
        bx = int(x0 + i * slot + slot * 0.15)
        bw = int(slot * 0.7)
        bh = int((h - 18) * v / top)
        color = colors[i] if colors else (180, 120, 60)
        cv2.rectangle(img, (bx, base - bh), (bx + bw, base), color, -1)
        _text(img, str(v), bx + (bw - _text_width(str(v), 0.4)) // 2, base - bh - 4, 0.4)
        _text(img, label, int(x0 + i * slot + (slot - _text_width(label, 0.4)) / 2), base + 16, 0.4)


def draw_plot(report: Dict[str, Any], path: Path) -> None:
    import cv2
    import numpy as np

    width = 1200
    classes = sorted(report["classes"], key=lambda c: (-c["instances"], c["category_id"]))[:TOP_CLASSES_PLOT]
    row = 20
    h1 = 40 + row * max(len(classes), 1) + 20
    h2, h3 = 330, 280
    img = np.full((h1 + h2 + h3, width, 3), 255, np.uint8)

    # panel 1: instances per class (horizontal bars)
    _text(img, f"Instances per class (top {len(classes)} of {report['num_categories']}, non-crowd)",
          20, 26, 0.6, thick=1)
    label_w = 190
    bar_w = width - label_w - 90
    top = max([c["instances"] for c in classes] + [1])
    for i, c in enumerate(classes):
        y = 40 + i * row
        name = c["name"][:24]
        _text(img, name, label_w - 8 - _text_width(name), y + 14)
        length = int(bar_w * c["instances"] / top)
        cv2.rectangle(img, (label_w, y + 3), (label_w + max(length, 1), y + row - 3), (180, 120, 60), -1)
        _text(img, str(c["instances"]), label_w + length + 6, y + 14, 0.4)

    # panel 2: fine size histogram after resize, anchors marked
    prior = report["sizes"]["prior"]
    fine = prior["fine"]
    edges, counts = fine["edges"], fine["counts"]
    x0, y0, pw, ph = 70, h1 + 40, width - 110, h2 - 90
    lo, hi = math.log2(edges[0]), math.log2(edges[-1])
    xs = lambda v: int(x0 + pw * (math.log2(max(v, edges[0])) - lo) / (hi - lo))  # noqa: E731
    _text(img, f"Object size sqrt(w*h) after resize to {prior['input_size']} px (log scale, "
               f"{prior['total']} non-crowd objects); lines = anchor scales", x0, y0 - 14, 0.55)
    cmax = max(counts + [1])
    base = y0 + ph
    for a, b, c in zip(edges[:-1], edges[1:], counts):
        bh = int((ph - 40) * c / cmax)  # headroom for the anchor labels
        color = (80, 80, 220) if b <= prior["smallest_anchor"] + 1e-9 else (180, 120, 60)
        if bh:
            cv2.rectangle(img, (xs(a) + 1, base - bh), (xs(b) - 1, base), color, -1)
    cv2.line(img, (x0, base), (x0 + pw, base), (0, 0, 0), 1)
    for k in range(int(math.ceil(lo)), int(math.floor(hi)) + 1):
        x = xs(2.0 ** k)
        cv2.line(img, (x, base), (x, base + 4), (0, 0, 0), 1)
        label = f"{2 ** k:g}"
        _text(img, label, x - _text_width(label, 0.4) // 2, base + 18, 0.4)
    for i, s in reversed(list(enumerate(prior["edges"]))):
        x = xs(s)
        if i == 0:
            cv2.line(img, (x, y0), (x, base), (0, 0, 230), 2)
            label = f"smallest anchor {s:g} px: {100 * prior['share_below_smallest']:.1f}% of objects below"
            cv2.rectangle(img, (x + 3, y0 - 1), (x + 10 + _text_width(label, 0.5), y0 + 19), (255, 255, 255), -1)
            _text(img, label, x + 6, y0 + 14, 0.5, color=(0, 0, 200))
        else:
            for yy in range(y0, base, 8):  # dashed
                cv2.line(img, (x, yy), (x, min(yy + 4, base)), (120, 120, 120), 1)
            _text(img, f"{s:g}", x + 3, y0 + 30, 0.4, color=(90, 90, 90))
    _text(img, "pixels at network input", x0 + pw // 2 - 80, base + 36, 0.45)

    # panel 3: COCO area bins and prior-scale bins
    coco = report["sizes"]["coco"]
    y3 = h1 + h2 + 40
    _bars(img, 70, y3, 360, h3 - 90, ["small", "medium", "large"],
          [coco["small"], coco["medium"], coco["large"]], "COCO area bins (<32^2, <96^2, rest)")
    colors = [(80, 80, 220)] + [(180, 120, 60)] * (len(prior["counts"]) - 1)
    _bars(img, 500, y3, width - 540, h3 - 90, prior["labels"], prior["counts"],
          f"Prior-scale bins ({report['config']['name']}, px at input)", colors)

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.config is None:
        args.config = DEFAULT_CONFIG
    config = config_from_args(args)
    compare = [(name, load_config(name)) for name in args.compare]
    coco = load_coco_json(args.data)
    report = dataset_stats(coco, config, check_masks=not args.no_mask_check, beta=args.beta,
                           compare_configs=compare)
    report["source"] = str(args.data)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = to_markdown(report, str(args.data))
    (out / "data_stats.md").write_text(md, encoding="utf-8")
    (out / "data_stats.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    draw_plot(report, out / "data_stats.png")
    print(md)
    print(f"wrote {out / 'data_stats.md'}, {out / 'data_stats.json'}, {out / 'data_stats.png'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
