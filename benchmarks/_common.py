"""Helpers shared by the benchmark scripts: timing, machine info, result files.

    from benchmarks._common import machine_info, median_ms, write_results
"""
from __future__ import annotations

import csv
import datetime
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

import torch

# $YOLACT_LITE_RESULTS_DIR redirects every result file (smoke runs write to a temporary folder
# so that they never overwrite the committed results).
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(os.environ.get("YOLACT_LITE_RESULTS_DIR") or ROOT / "benchmarks" / "results")
# The larger shared data set that data/ was cut from: $YOLACT_LITE_SHARED_DATA, else
# ../shared/data beside the checkout.  Only a few studies and tests use it.
SHARED_DATA = Path(os.environ.get("YOLACT_LITE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def machine_info() -> dict:
    """CPU model and its bf16/AMX/AVX-512 flags, cores, torch threads, CUDA device, load, date."""
    from yolact_lite.hardware import describe_machine

    return {**describe_machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def run_conditions() -> dict:
    """The CPU model, torch threads and 1-minute load average (None where the OS has none) a row
    ran under: rows of one table can come from different machines (a sweep resumed elsewhere)."""
    info = machine_info()
    load = info.get("load_avg_1min")
    return {"cpu": info["cpu"], "threads": info["torch_threads"],
            "load_avg_1min": load if isinstance(load, (int, float)) else None}


def median_ms(fn: Callable[[], object], repeats: int = 20, warmup: int = 3,
              device: str | torch.device | None = None) -> float:
    """Median wall time of ``fn()`` in milliseconds after ``warmup`` calls.

    Pass ``device`` (e.g. "cuda") to synchronise CUDA around each call so the
    time covers the kernels, not just their launch.
    """
    on_cuda = device is not None and torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def conv_macs(model: torch.nn.Module, image: torch.Tensor) -> dict[str, int]:
    """Multiply-adds of every ``Conv2d`` in one forward of ``model`` on ``image`` [B, 3, H, W],
    by top-level child (``backbone``, ``fpn``, ``protonet``, ...): output elements x
    (input channels / groups) x kernel area.  Other layers (norms, activations, resizes) are
    not counted; they are a small share of a convolutional network's work."""
    totals: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            part = name.split(".")[0]
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]

            def count(_module, _inputs, output, part=part, per_output=per_output):
                totals[part] = totals.get(part, 0) + output.numel() * per_output

            handles.append(module.register_forward_hook(count))
    try:
        with torch.no_grad():
            model(image)
    finally:
        for handle in handles:
            handle.remove()
    return totals


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def write_results(name: str, rows: list[dict], notes: str = "") -> tuple[Path, Path]:
    """Write ``results/{name}.csv`` and ``results/{name}.md`` (machine info,
    notes, markdown table). Columns: union of the rows' keys, first seen first."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    csv_path, md_path = RESULTS_DIR / f"{name}.csv", RESULTS_DIR / f"{name}.md"
    partial = csv_path.with_name(f".{csv_path.name}.partial")
    with partial.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, csv_path)  # atomic: an interrupted run never leaves half a table
    lines = [f"# {name}", ""]
    lines += [f"- {key}: {value}" for key, value in machine_info().items()]
    if notes:
        lines += ["", notes.strip()]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    partial = md_path.with_name(f".{md_path.name}.partial")
    partial.write_text("\n".join(lines) + "\n")
    os.replace(partial, md_path)
    return csv_path, md_path


def read_results(name: str) -> list[dict]:
    """The rows of ``results/{name}.csv`` (numbers parsed; empty cells stay ""), [] if absent:
    for benchmarks that add rows to an earlier run's table."""
    path = RESULTS_DIR / f"{name}.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key, value in row.items():
            try:
                row[key] = int(value) if value.lstrip("-").isdigit() else float(value)
            except (TypeError, ValueError):
                pass
    return rows


def fit_subset(annotations: str | Path, count: int, out: str | Path, prefer: str = "large") -> Path:
    """Write a COCO json holding ``count`` images of ``annotations`` (with all their
    annotations and every category, so class ids do not change) to ``out``; returns ``out``.

    For "fit" runs: a CPU budget cannot train a model that generalises from a few hundred
    images, but it can fit a handful, and how well a variant fits the SAME images it was
    trained on (its capacity: how well k prototypes express the masks, whether small masks get
    any gradient) is a real, comparable signal.  ``prefer``:

    * ``"large"``: images with 1-4 non-crowd instances, fewest COCO-small (area < 32^2) ones
      first (ties by id): masks a short run can learn;
    * ``"small"``: images with at most 15 non-crowd instances, those with the most COCO-small
      ones first (ties by id): small objects next to larger ones, as in real frames.
    """
    import json

    if prefer not in ("large", "small"):
        raise ValueError(f"prefer must be 'large' or 'small' (got {prefer!r})")
    data = json.loads(Path(annotations).read_text())
    areas: dict = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            areas.setdefault(a["image_id"], []).append(float(a.get("area", 0.0)))
    small = {i: sum(x < 32 * 32 for x in v) for i, v in areas.items()}
    images = sorted((im for im in data["images"] if im["id"] in areas), key=lambda im: im["id"])
    if prefer == "large":
        images = [im for im in images if len(areas[im["id"]]) <= 4]
        images.sort(key=lambda im: small[im["id"]])  # stable: ties stay by id
    else:
        images = [im for im in images if len(areas[im["id"]]) <= 15]
        images.sort(key=lambda im: -small[im["id"]])  # stable: ties stay by id
    if len(images) < count:
        raise SystemExit(f"error: {annotations} has {len(images)} images of the kind --fit picks "
                         f"({prefer!r}); --fit asked for {count}")
    from yolact_lite.data import coco_subset

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco_subset(data, [im["id"] for im in images[:count]])))
    return out


def off_main_thread(fn, *args, **kwargs):
    """Run ``fn`` in a fresh thread and return its result (or raise its exception).

    Timed work runs this way: with OpenMP's default active waiting, a CPU that other processes
    also use makes torch's main-thread thread team much slower than a fresh thread's (10x was
    seen on a shared 2-core machine), which would bias the comparison.
    """
    box = {}

    def target():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


PHOTO = Path(__file__).resolve().parent.parent / "data" / "photos" / "3132016470_c27baa00e8_z.jpg"  # 640 x 480


def load_photo():
    """The bundled 640x480 street photo as BGR uint8 (resized to 640x480 if it ever is not)."""
    import cv2

    from yolact_lite.data import read_image

    image = read_image(PHOTO)
    if image.shape[:2] != (480, 640):
        image = cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA)
    return image
