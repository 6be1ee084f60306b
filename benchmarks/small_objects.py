#!/usr/bin/env python
"""Small-object options against the original recipe: AP by object size, mask leakage, speed.

Every TRAINED option is a separate run of the SAME recipe (config, input size, data, iteration
budget, seed): only the option differs.  INFERENCE-ONLY options re-evaluate the baseline's
weights of the same seed (no retraining).  Each row is run for every seed of ``--seeds``
(default 0 and 1) and reported as mean ± spread, spread = (max - min) / 2 over the seeds.

Options (rows):

* ``baseline``: the original (random mask subset, unweighted loss, softmax + OHEM, P3-P7,
  hard crop with 1 px padding, one full-frame pass);
* ``stratified_by_area`` / ``smallest_first``: ``loss.masks_selection``;
* ``mask_size_w0.5``: ``loss.mask_size_weight_power=0.5``;
* ``class_balance``: ``loss.class_balance=effective_number`` (beta 0.99);
* ``focal``: ``loss.classification=focal``;
* ``p2_proto2``: ``yolact_lite/configs/yolact_effl0_small.yaml`` (P2 level, smaller first anchor,
  prototypes from P2), anchor scales rescaled to the input size like the others;
* ``crop_soft`` / ``crop_pad-1`` (inference only): ``inference.crop_mode=soft`` /
  ``inference.crop_padding=-1``;
* ``tiled`` (inference only): :func:`yolact_lite.inference.tiling.predict_tiled`, ``--tile`` px tiles,
  overlap 0.2, plus the full frame.

Metrics: pycocotools box and mask AP, AP_small/medium/large (COCO area bins of the ORIGINAL
image), the evaluator's mask leakage (share of a matched mask outside its gt box; all / small
objects), and ``ms``: median inference ms per image (Predictor, batch 1, after 2 warm-up
images) during the evaluation.

``loss.masks_to_train`` is ``--masks-to-train`` for EVERY row (the baseline keeps the
original random subset): at a reduced input the images have far fewer positive priors than
the original's K = 100, and with K above the number of positives the three selection rules
are the same run.  The log reports the positives per image so the choice can be checked.

Defaults (CPU): a FIT run, because a CPU budget cannot train a model that generalises from
coco_mini (val AP stays ~0 for every row) but can fit a handful of images, and whether an
option lets the model learn the small objects of the images it trains on is a real signal.
``--fit 8``: the 8 images of data/coco_mini/train with at most 15 instances and the most
COCO-small ones (61 of their 98 instances are small), ``yolact_effl0`` (ImageNet-pretrained
EfficientNet-Lite0, offline) at 384 px, batch 2, SGD lr 1e-3, 20% warm-up, x0.1 at 70% and
90%, gradient clipping 10, 160 iterations (40 epochs), no augmentation (``--augment`` turns the
original's on); ``fit_*`` columns are measured on those 8 images, the others on
data/coco_mini/val (25 images).  ~2.5 min per trained run on 2 quiet cores, ~40 min for the
14 runs; the results' notes give the run's own wall and CPU time.  ``--fit 0``: train on the
whole training set (256 px, batch 4, lr 2e-3, 80 iterations unless given).  On a machine
shared with other jobs use ``--threads 1``: two threads per process on oversubscribed cores
cost several times the CPU for the same work.
Full COCO on a GPU, same script::

    python -m benchmarks.small_objects --device cuda --input-size 550 --iters 20000 \\
        --batch 8 --masks-to-train 100 --tile 640 --augment \\
        --train-json coco/annotations/instances_train2017.json --train-images coco/train2017 \\
        --val-json coco/annotations/instances_val2017.json --val-images coco/val2017

``--quick``: one seed, 3 iterations, 5 validation images (a smoke run; numbers meaningless).
``--only NAME ...`` runs a subset of the rows (the baseline is always trained).

Writes ``benchmarks/results/small_objects.{csv,md,png}`` (mean ± spread per row) and
``small_objects_runs.csv/.md`` (every seed); ``*_quick`` with ``--quick``, ``NAME*`` with
``--name NAME``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks._common import RESULTS_DIR, fit_subset, write_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

MINI = ROOT / "data" / "coco_mini"

# name -> (config name, overrides); every row but the baseline changes ONE thing
TRAINED = {
    "baseline": ("yolact_effl0", []),
    "stratified_by_area": ("yolact_effl0", ["loss.masks_selection=stratified_by_area"]),
    "smallest_first": ("yolact_effl0", ["loss.masks_selection=smallest_first"]),
    "mask_size_w0.5": ("yolact_effl0", ["loss.mask_size_weight_power=0.5"]),
    "class_balance": ("yolact_effl0", ["loss.class_balance=effective_number"]),
    "focal": ("yolact_effl0", ["loss.classification=focal"]),
    "p2_proto2": ("yolact_effl0_small", []),
}
INFERENCE_ONLY = {
    "crop_soft": ["inference.crop_mode=soft"],
    "crop_pad-1": ["inference.crop_padding=-1"],
    "tiled": None,  # predict_tiled
}
METRICS = ("AP", "AP_small", "AP_medium", "AP_large")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-json", default=str(MINI / "train" / "annotations.json"))
    p.add_argument("--train-images", default=str(MINI / "train" / "images"))
    p.add_argument("--val-json", default=str(MINI / "val" / "annotations.json"))
    p.add_argument("--val-images", default=str(MINI / "val" / "images"))
    p.add_argument("--input-size", type=int, default=None, help="default 384 with --fit, else 256")
    p.add_argument("--iters", type=int, default=None, help="training steps per run (default 160 with --fit, else 80)")
    p.add_argument("--batch", type=int, default=None, help="default 2 with --fit, else 4")
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 with --fit, else 2e-3")
    p.add_argument("--masks-to-train", type=int, default=8, help="loss.masks_to_train of every row")
    p.add_argument("--augment", action="store_true", help="the original's training augmentation (default off)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1")
    p.add_argument("--tile", type=int, default=320, help="tile size (px) of the tiled row")
    p.add_argument("--max-val-images", type=int, default=None)
    p.add_argument("--fit", type=int, default=None, metavar="N",
                   help="train on the N training images (<= 15 instances) with the most small objects and report "
                        "fit_* metrics on those same images (besides val): a CPU budget can fit, not generalise "
                        "(default 8 on CPU, 0 = off on CUDA and with --quick)")
    p.add_argument("--name", default=None, help="results file stem (default small_objects[_quick])")
    p.add_argument("--only", nargs="+", default=None, help="rows to run (baseline always)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="1 seed, 3 iterations, 5 val images")
    p.add_argument("--keep-runs", default=None, help="keep run folders here (default: temporary)")
    p.add_argument("--smoke", action="store_true", help="baseline + tiled, 1 seed, 2 steps at 128 px, batch 2, "
                                                        "2 val images: a test that it runs")
    args = p.parse_args(argv)
    if args.smoke:
        args.quick = True
        args.iters, args.batch, args.input_size = args.iters or 2, args.batch or 2, args.input_size or 128
        args.max_val_images, args.only = args.max_val_images or 2, args.only or ["tiled"]
        args.name = args.name or "small_objects_smoke"
    if args.quick:
        args.iters = args.iters or 3
        args.seeds = args.seeds or [0]
        args.max_val_images = args.max_val_images or 5
    if args.fit is None:
        args.fit = 0 if args.quick or args.device != "cpu" else 8
    args.iters = args.iters or (160 if args.fit else 80)
    args.input_size = args.input_size or (384 if args.fit else 256)
    args.batch = args.batch or (2 if args.fit else 4)
    args.lr = args.lr or (1e-3 if args.fit else 2e-3)
    args.seeds = args.seeds or [0, 1]
    unknown = set(args.only or ()) - set(TRAINED) - set(INFERENCE_ONLY)
    if unknown:
        p.error(f"unknown rows {sorted(unknown)}; choose from {list(TRAINED) + list(INFERENCE_ONLY)}")
    return args


def build_config(name: str, overrides, args, seed: int):
    from yolact_lite.config import load_config

    base = load_config(name)
    ratio = args.input_size / base.model.input_size
    scales = [[max(1, int(s * ratio)) for s in level] for level in base.model.anchors.scales]
    warmup = max(1, min(500, args.iters // 5))
    steps = sorted({max(1, int(args.iters * 0.7)), max(2, int(args.iters * 0.9))})
    recipe = [
        f"model.input_size={args.input_size}", f"model.anchors.scales={scales}",
        f"train.batch_size={args.batch}", "train.autoscale_batch=false", f"train.lr={args.lr}",
        f"train.warmup_iters={warmup}", f"train.lr_steps={steps}", "train.grad_clip=10.0",
        "train.num_workers=0", "train.checkpoint_every_iters=0", f"train.seed={seed}",
        f"loss.masks_to_train={args.masks_to_train}", f"train.augment={'ssd' if args.augment else 'none'}",
    ]
    return load_config(name, recipe + list(overrides))


class TiledPredictor:
    """``evaluate``'s predictor interface over :func:`predict_tiled`."""

    def __init__(self, predictor, tile: int, overlap: float = 0.2):
        self.predictor, self.tile, self.overlap = predictor, tile, overlap
        self.class_names = predictor.class_names
        self.category_ids = predictor.category_ids

    def predict(self, image):
        return self.predictor.predict(image, tile=self.tile, tile_overlap=self.overlap)


def summarise(metrics) -> dict:
    row = {}
    for kind in ("mask", "box"):
        for key in METRICS:
            value = (metrics.get(kind) or {}).get(key)
            row[f"{kind}_{key}"] = float("nan") if value is None else float(value)
    leak = metrics.get("leakage") or {}
    for b in ("all", "small"):
        value = (leak.get(b) or {}).get("leakage")
        row[f"leak_{b}"] = float("nan") if value is None else float(value)
    row["ms"] = float(metrics["timing"]["total_ms"] or float("nan"))
    row["detections"] = int(metrics["num_detections"])
    return row


def evaluate_predictor(predictor, args) -> dict:
    """Metrics on the validation set, plus ``fit_*`` on the training images with ``--fit``."""
    from yolact_lite.evaluation.coco_eval import evaluate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = summarise(evaluate(predictor, args.val_json, args.val_images, max_images=args.max_val_images,
                                 progress=False))
        if args.fit:
            fit = summarise(evaluate(predictor, args.train_json, args.train_images, progress=False))
            row.update({f"fit_{key}": value for key, value in fit.items() if key not in ("ms", "detections")})
    return row


def train_and_eval(name: str, seed: int, args, run_root: Path) -> list:
    """Train row ``name`` with ``seed``; evaluate it (and, for the baseline, the inference-only rows)."""
    import torch

    from yolact_lite.checkpoint.files import model_checkpoint
    from yolact_lite.config import with_overrides
    from yolact_lite.engine import trainer as T
    from yolact_lite.inference.predictor import Predictor

    config_name, overrides = TRAINED[name]
    config = build_config(config_name, overrides, args, seed)
    out = run_root / f"{name}_s{seed}"
    options = T.TrainOptions(train_json=args.train_json, train_images=args.train_images, out=str(out),
                             max_iter=args.iters, device=args.device, pretrained=True, progress=False)
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    trainer = T.Trainer(config, options)
    result = trainer.fit()
    train_s, train_cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    positives = _positives_per_image(out / "log.csv", args.batch)
    extra = {"class_names": trainer.class_names, "category_ids": trainer.category_ids}
    state = model_checkpoint(trainer.model, config.to_dict(), **extra)

    def predictor_for(cfg):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Predictor(cfg, weights=state, device=args.device)

    base = {"seed": seed, "iters": result.step, "train_s": round(train_s, 1), "train_cpu_s": round(train_cpu, 1),
            "positives_per_image": positives}
    rows = [{"row": name, "kind": "trained", **base, **evaluate_predictor(predictor_for(config), args)}]
    if name == "baseline":
        for inf_name, inf_overrides in INFERENCE_ONLY.items():
            if args.only and inf_name not in args.only:
                continue
            if inf_overrides is None:
                predictor = TiledPredictor(predictor_for(config), args.tile)
            else:
                predictor = predictor_for(with_overrides(config, inf_overrides))
            rows.append({"row": inf_name, "kind": "inference-only", **base,
                         **evaluate_predictor(predictor, args)})
    del trainer
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return rows


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process: on a loaded machine, CPU time / cores
    estimates the wall time on quiet cores better than the wall time does."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _positives_per_image(log_csv: Path, batch: int) -> float:
    import csv

    try:
        values = [float(r["num_positives"]) for r in csv.DictReader(log_csv.open())]
    except (OSError, KeyError, ValueError):
        return float("nan")
    return round(statistics.median(values) / batch, 1) if values else float("nan")


def _mean_spread(values):
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), (max(finite) - min(finite)) / 2.0


def aggregate(runs: list, order: list) -> list:
    keys = [k for k in runs[0] if k.startswith(("mask_", "box_", "leak_", "fit_")) or k in ("ms",)]
    deltas = [k for k in ("fit_mask_AP_small", "mask_AP_small") if k in runs[0]]
    base = {k: _mean_spread([r[k] for r in runs if r["row"] == "baseline"])[0] for k in deltas}
    table = []
    for name in order:
        mine = [r for r in runs if r["row"] == name]
        if not mine:
            continue
        row = {"row": name, "kind": mine[0]["kind"], "seeds": len(mine)}
        for key in keys:
            mean, spread = _mean_spread([r[key] for r in mine])
            digits = 3 if "leak_" in key else 1
            row[key] = f"{mean:.{digits}f} ± {spread:.{digits}f}" if math.isfinite(mean) else "-"
        for key in deltas:
            mean = _mean_spread([r[key] for r in mine])[0]
            ok = math.isfinite(mean) and math.isfinite(base[key])
            row[f"d_{key}"] = f"{mean - base[key]:+.2f}" if ok else "-"
        table.append(row)
    return table


def plot(runs: list, order: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in order if any(r["row"] == n for r in runs)]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    prefix = "fit_" if "fit_mask_AP_small" in runs[0] else ""
    pairs = ((f"{prefix}mask_AP_small", f"{prefix}mask AP_small"), (f"{prefix}box_AP_small", f"{prefix}box AP_small"))
    for offset, (key, label) in zip((-0.18, 0.18), pairs):
        means, lows, highs = [], [], []
        for n in names:
            vals = [r[key] for r in runs if r["row"] == n and math.isfinite(r[key])]
            m = statistics.fmean(vals) if vals else float("nan")
            means.append(m)
            lows.append(m - min(vals) if vals else 0.0)
            highs.append(max(vals) - m if vals else 0.0)
        xs = [i + offset for i in range(len(names))]
        ax.bar(xs, means, width=0.36, label=label, yerr=[lows, highs], capsize=3)
        for n_index, n in enumerate(names):  # the individual seeds
            vals = [r[key] for r in runs if r["row"] == n and math.isfinite(r[key])]
            ax.scatter([xs[n_index]] * len(vals), vals, color="k", s=8, zorder=3)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("AP_small (%)")
    ax.set_title("Small-object options: AP_small" + (" on the fitted training images" if prefix else "")
                 + ", mean over seeds (bars: min-max, dots: seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    order = list(TRAINED) + list(INFERENCE_ONLY)
    trained = [n for n in TRAINED if n == "baseline" or not args.only or n in args.only]
    stem = args.name or ("small_objects_quick" if args.quick else "small_objects")
    runs = []
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    full_train_json = args.train_json
    with tempfile.TemporaryDirectory(prefix="small_objects_") as tmp:
        run_root = Path(args.keep_runs) if args.keep_runs else Path(tmp)
        if args.fit:
            args.train_json = str(fit_subset(full_train_json, args.fit, run_root / "fit_subset.json", prefer="small"))
        for seed in args.seeds:
            for name in trained:
                t0 = time.perf_counter()
                new = train_and_eval(name, seed, args, run_root)
                runs += new
                for r in new:
                    print(f"[{time.perf_counter() - started:7.0f}s] {r['row']:<20} seed {seed}: "
                          f"mask AP {r['mask_AP']:.2f} AP_S {r['mask_AP_small']:.2f} | box AP {r['box_AP']:.2f} "
                          f"AP_S {r['box_AP_small']:.2f} | leak {r['leak_all']:.3f} | {r['ms']:.0f} ms/img | "
                          + (f"fit: mask AP {r['fit_mask_AP']:.2f} AP_S {r['fit_mask_AP_small']:.2f} box AP "
                             f"{r['fit_box_AP']:.2f} AP_S {r['fit_box_AP_small']:.2f} | " if args.fit else "") +
                          f"pos/img {r['positives_per_image']} | train {r['train_s']:.0f}s "
                          f"(row total {time.perf_counter() - t0:.0f}s)", flush=True)
    total_min = (time.perf_counter() - started) / 60.0
    cpu_min = (_cpu_seconds() - cpu_started) / 60.0
    table = aggregate(runs, order)
    notes = (
        f"Recipe: yolact_effl0 (pretrained EfficientNet-Lite0) at {args.input_size} px, batch {args.batch}, "
        f"{args.iters} iterations per run, SGD lr {args.lr:g} (20% warm-up, x0.1 at 70%/90%), grad clip 10, "
        f"augmentation {'on' if args.augment else 'off'}, "
        f"masks_to_train {args.masks_to_train} for every row; seeds {args.seeds}; trained on "
        + (f"the {args.fit} images of {full_train_json} with the most small (< 32^2 px) instances "
           f"(fit_* columns: evaluated on those same images), " if args.fit else f"{full_train_json}, ")
        + f"evaluated on {args.val_json}"
        + (f" (first {args.max_val_images} images)" if args.max_val_images else "")
        + f"; tiled row: {args.tile} px tiles, overlap 0.2, plus the full frame. Device {args.device}, "
        f"{args.threads} threads; whole run {total_min:.1f} min wall, {cpu_min:.1f} min CPU "
        f"(~{cpu_min / max(args.threads, 1):.1f} min wall on {args.threads} quiet cores).\n\n"
        "Cells: mean ± spread over seeds (spread = (max - min) / 2). AP in %, COCO area bins; "
        "leak_* = mean share of a matched mask's pixels outside its gt box (lower is better); "
        "ms = median inference ms/image during evaluation (machine load distorts it). "
        "d_* = row mean - baseline mean. Inference-only rows reuse the baseline weights "
        "of each seed.\n\n"
        "Honesty note: with this iteration budget the models are far from converged and the val set "
        "holds few objects per size bin, so val AP is ~0 and says nothing. "
        + ("The fit_* columns measure something narrower but real: how well each option lets the "
           "model learn the small objects of the images it was trained on (e.g. whether small masks "
           "get any gradient); they do not show that an option generalises. " if args.fit else "")
        + "A difference smaller than the rows' spreads is noise, not an effect. Only the full-COCO run "
        "(same script, see its docstring) can rank the options for generalisation."
    )
    write_results(stem, table, notes)
    write_results(f"{stem}_runs", runs, f"Every (row, seed) run of {stem}.md.")
    png = RESULTS_DIR / f"{stem}.png"
    plot(runs, order, png)
    print(f"wrote {RESULTS_DIR / f'{stem}.md'} and {png} ({total_min:.1f} min wall, "
          f"{cpu_min:.1f} min CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
