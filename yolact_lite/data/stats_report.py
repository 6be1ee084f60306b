"""The ``data stats`` report: the dict of :func:`yolact_lite.data.stats.dataset_stats` as a
markdown page (:func:`to_markdown`) and a chart (:func:`draw_plot`, OpenCV, imported when drawing),
and both plus the JSON written to a folder (:func:`write_stats_report`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Tuple

from .stats import ANOMALY_KINDS

__all__ = ["to_markdown", "draw_plot", "write_stats_report", "MAX_EXAMPLES", "TOP_CLASSES_PLOT"]

MAX_EXAMPLES = 10  # anomaly examples listed in the markdown
TOP_CLASSES_PLOT = 30  # classes drawn in the chart's first panel


# --------------------------------------------------------------------------- markdown


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}%"


def _table(header: List[str], rows: List[List[Any]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return out


def _resize_mode(preserve_aspect_ratio: bool) -> str:
    return "letterbox" if preserve_aspect_ratio else "square stretch"


def _header_section(report: Dict[str, Any], source: str) -> List[str]:
    cfg = report["config"]
    lines = [f"# Dataset statistics: `{source}`", "",
             f"{report['num_images']} images, {report['num_annotations']} annotations, "
             f"{report['num_categories']} categories; config `{cfg['name']}` "
             f"(input {cfg['input_size']}, {_resize_mode(cfg['preserve_aspect_ratio'])}, "
             f"masks_to_train {cfg['masks_to_train']}).", ""]
    if cfg["num_classes"] != report["num_categories"]:
        lines += [f"**Note:** the config has model.num_classes = {cfg['num_classes']} but the "
                  f"file has {report['num_categories']} categories.", ""]
    return lines


def _classes_section(report: Dict[str, Any]) -> List[str]:
    imb = report["imbalance"]
    ratio = imb["max_min_ratio"]
    lines = ["## Class counts", "",
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
    return lines + [""]


def _sizes_section(report: Dict[str, Any]) -> List[str]:
    coco = report["sizes"]["coco"]
    total = coco["total"] or 1
    lines = ["## Object sizes", "", "COCO area bins (annotation `area`, non-crowd"
             + (f"; {coco['area_from_bbox']} from bbox w*h" if coco["area_from_bbox"] else "")
             + "):", ""]
    lines += _table(["bin", "instances", "share"],
                    [["small (< 32²)", coco["small"], _pct(coco["small"] / total)],
                     ["medium (32²–96²)", coco["medium"], _pct(coco["medium"] / total)],
                     ["large (>= 96²)", coco["large"], _pct(coco["large"] / total)]])
    priors = [(report["config"]["name"], report["sizes"]["prior"])] + list(report["prior_compare"].items())
    for name, prior in priors:
        lines += ["", f"Prior-scale bins for `{name}`: sqrt(w·h) in pixels after resizing to "
                  f"{prior['input_size']} ({_resize_mode(prior['preserve_aspect_ratio'])}); "
                  f"bins bounded by each level's smallest anchor scale. "
                  f"**{_pct(prior['share_below_smallest'])}** ({prior['below_smallest']}) are "
                  f"smaller than the smallest anchor ({prior['smallest_anchor']:g} px); median "
                  f"size {prior['median_size']:.1f} px, 10th percentile {prior['p10_size']:.1f} px.", ""]
        prior_total = prior["total"] or 1
        lines += _table(["size (px)", "instances", "share"],
                        [[label, count, _pct(count / prior_total)]
                         for label, count in zip(prior["labels"], prior["counts"])])
    return lines


def _crowding_section(report: Dict[str, Any]) -> List[str]:
    ipi = report["instances_per_image"]
    lines = ["", "## Instances per image", "",
             "Positives are approximated by non-crowd instances (each object usually matches "
             "several priors, so the real masks_to_train cut starts earlier).", ""]
    lines += _table(["images", "instances", "crowd anns", "empty images", "mean", "median",
                     "p90", "p99", "max"],
                    [[ipi["num_images"], ipi["total_instances"], ipi["crowd_annotations"],
                      ipi["images_without_instances"], f"{ipi['mean']:.2f}", f"{ipi['median']:g}",
                      f"{ipi['p90']:.1f}", f"{ipi['p99']:.1f}", ipi["max"]]])
    return lines + ["", f"Images with more than masks_to_train = {ipi['masks_to_train']} instances: "
                    f"{ipi['images_over_limit']} ({_pct(ipi['share_images_over_limit'])}); the original's "
                    f"random subset would drop {ipi['instances_dropped']} instances "
                    f"({_pct(ipi['share_instances_dropped'])} of all)."]


def _anomalies_section(report: Dict[str, Any]) -> List[str]:
    an = report["anomalies"]
    lines = ["", "## Annotation anomalies", "",
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
    return lines


def to_markdown(report: Dict[str, Any], source: str) -> str:
    """The report as a markdown page: classes, object sizes, crowding, anomalies."""
    lines = (_header_section(report, source) + _classes_section(report) + _sizes_section(report)
             + _crowding_section(report) + _anomalies_section(report))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- chart (OpenCV)

_BAR = (180, 120, 60)  # BGR
_BELOW_SMALLEST = (80, 80, 220)  # bars of objects smaller than the smallest anchor


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
    slot = w / max(len(values), 1)
    base = y0 + h
    cv2.line(img, (x0, base), (x0 + w, base), (0, 0, 0), 1)
    for i, (label, v) in enumerate(zip(labels, values)):
        bx = int(x0 + i * slot + slot * 0.15)
        bw = int(slot * 0.7)
        bh = int((h - 18) * v / top)
        cv2.rectangle(img, (bx, base - bh), (bx + bw, base), colors[i] if colors else _BAR, -1)
        _text(img, str(v), bx + (bw - _text_width(str(v), 0.4)) // 2, base - bh - 4, 0.4)
        _text(img, label, int(x0 + i * slot + (slot - _text_width(label, 0.4)) / 2), base + 16, 0.4)


def _class_panel(img, report: Dict[str, Any], classes: List[dict], row: int) -> None:
    """Panel 1: instances per class, horizontal bars."""
    import cv2
    width = img.shape[1]
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
        cv2.rectangle(img, (label_w, y + 3), (label_w + max(length, 1), y + row - 3), _BAR, -1)
        _text(img, str(c["instances"]), label_w + length + 6, y + 14, 0.4)


def _anchor_lines(img, prior: Dict[str, Any], xs, y0: int, base: int) -> None:
    """The anchor scales over the size histogram: the smallest one solid and labelled with the
    share of objects below it, the others dashed."""
    import cv2
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


def _size_panel(img, prior: Dict[str, Any], top: int, height: int) -> None:
    """Panel 2: the fine histogram of object sizes after the resize (log scale), anchors marked."""
    import cv2
    edges, counts = prior["fine"]["edges"], prior["fine"]["counts"]
    x0, y0, pw, ph = 70, top + 40, img.shape[1] - 110, height - 90
    lo, hi = math.log2(edges[0]), math.log2(edges[-1])

    def xs(v: float) -> int:
        return int(x0 + pw * (math.log2(max(v, edges[0])) - lo) / (hi - lo))

    _text(img, f"Object size sqrt(w*h) after resize to {prior['input_size']} px (log scale, "
               f"{prior['total']} non-crowd objects); lines = anchor scales", x0, y0 - 14, 0.55)
    cmax = max(counts + [1])
    base = y0 + ph
    for a, b, c in zip(edges[:-1], edges[1:], counts):
        bh = int((ph - 40) * c / cmax)  # headroom for the anchor labels
        color = _BELOW_SMALLEST if b <= prior["smallest_anchor"] + 1e-9 else _BAR
        if bh:
            cv2.rectangle(img, (xs(a) + 1, base - bh), (xs(b) - 1, base), color, -1)
    cv2.line(img, (x0, base), (x0 + pw, base), (0, 0, 0), 1)
    for k in range(int(math.ceil(lo)), int(math.floor(hi)) + 1):
        x = xs(2.0 ** k)
        cv2.line(img, (x, base), (x, base + 4), (0, 0, 0), 1)
        label = f"{2 ** k:g}"
        _text(img, label, x - _text_width(label, 0.4) // 2, base + 18, 0.4)
    _anchor_lines(img, prior, xs, y0, base)
    _text(img, "pixels at network input", x0 + pw // 2 - 80, base + 36, 0.45)


def draw_plot(report: Dict[str, Any], path: Path) -> None:
    """Write the chart to ``path`` (PNG): instances per class, object sizes against the anchor
    scales, and the COCO area and prior-scale bins."""
    import cv2
    import numpy as np

    width, row = 1200, 20
    classes = sorted(report["classes"], key=lambda c: (-c["instances"], c["category_id"]))[:TOP_CLASSES_PLOT]
    h1 = 40 + row * max(len(classes), 1) + 20
    h2, h3 = 330, 280
    img = np.full((h1 + h2 + h3, width, 3), 255, np.uint8)
    _class_panel(img, report, classes, row)
    prior = report["sizes"]["prior"]
    _size_panel(img, prior, h1, h2)

    # panel 3: COCO area bins and prior-scale bins
    coco = report["sizes"]["coco"]
    y3 = h1 + h2 + 40
    _bars(img, 70, y3, 360, h3 - 90, ["small", "medium", "large"],
          [coco["small"], coco["medium"], coco["large"]], "COCO area bins (<32^2, <96^2, rest)")
    colors = [_BELOW_SMALLEST] + [_BAR] * (len(prior["counts"]) - 1)
    _bars(img, 500, y3, width - 540, h3 - 90, prior["labels"], prior["counts"],
          f"Prior-scale bins ({report['config']['name']}, px at input)", colors)

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


# --------------------------------------------------------------------------- files


def write_stats_report(report: Dict[str, Any], out_dir: Path, source: str) -> Tuple[str, List[Path]]:
    """Write ``data_stats.md``, ``data_stats.json`` and ``data_stats.png`` under ``out_dir``;
    returns the markdown and the three paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(report, source)
    paths = [out / "data_stats.md", out / "data_stats.json", out / "data_stats.png"]
    paths[0].write_text(markdown, encoding="utf-8")
    paths[1].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    draw_plot(report, paths[2])
    return markdown, paths
