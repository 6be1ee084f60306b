"""Evaluate a model on a COCO-format json (pycocotools box and mask mAP), or time it.

    yolact-lite eval --config yolact_base --weights W.pth \\
        --json data/coco_mini/val/annotations.json --images data/coco_mini/val/images \\
        [--max-images N] [--per-class] [--tide] [--out DIR] [--device cpu] [--set key=value ...]
    yolact-lite eval ... --benchmark 100     # FPS + per-stage medians, no AP

``--config`` may be omitted when ``--weights`` is one of our checkpoints (it carries its config).

Images are taken in sorted image-id order; ``--max-images`` evaluates the first N (and
COCOeval is restricted to them).  Results go to ``--out`` (default ``<weights dir>/eval``,
or ``runs/eval`` without weights): ``bbox_detections.json``, ``mask_detections.json``
(COCO result format, the json's own category ids) and ``metrics.json``; ``--tide`` adds the TIDE
error breakdown to it (and ``tide.png``).
``--benchmark N`` runs N images, drops the first 2 (warm-up) from the statistics like the
original, and reports median ms per stage and FPS (image reading is not timed).

Evaluation is exact by default (the torch fp32 model); ``--precision auto`` measures the path
``yolact-lite predict`` runs with no flag, ``--precision``/``--backend`` any other one.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import CheckpointError, DataError
from ..inference.runtime_choice import BACKENDS, PRECISIONS
from . import add_config_args, config_for_weights, run_cli

EXAMPLES = """examples:
  yolact-lite eval --weights data/models/person_effl0.pt \\
      --json data/coco_mini/val/annotations_person.json --images data/coco_mini/val/images --out runs/eval
  yolact-lite eval --config yolact_effl0_cpu --json A.json --images DIR --benchmark 50
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yolact-lite eval", description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, required=False)
    p.add_argument("--weights", default=None,
                   help="checkpoint (.pth; ours carries its config); omitted = random weights (needs --config)")
    p.add_argument("--json", required=True, help="COCO annotation json")
    p.add_argument("--images", required=True, help="image directory")
    p.add_argument("--max-images", type=int, default=None, help="evaluate the first N images")
    p.add_argument("--per-class", action="store_true", help="also print per-class AP")
    p.add_argument("--tide", action="store_true",
                   help="also the TIDE error breakdown (dAP per error type, box and mask; docs/tide.md): "
                        "in metrics.json, printed, and plotted to tide.png")
    p.add_argument("--out", default=None, help="results directory")
    p.add_argument("--benchmark", type=int, default=None, metavar="N",
                   help="time N images (first 2 are warm-up) and skip AP")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default fp32 on torch (exact); auto = the path yolact-lite predict takes with no flag")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="pin the runtime (default: torch, or the fastest for an explicit --precision)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_inputs(args) -> None:
    if not os.path.isfile(args.json):
        raise DataError(f"{args.json}: no such annotation file")
    if not os.path.isdir(args.images):
        raise DataError(f"{args.images}: image directory does not exist")
    if args.weights is not None and not os.path.isfile(args.weights):
        raise CheckpointError(f"{args.weights}: no such weights file")
    if args.max_images is not None and args.max_images < 1:
        raise DataError(f"--max-images must be at least 1, got {args.max_images}")
    if args.benchmark is not None and args.benchmark < 3:
        raise DataError(f"--benchmark needs at least 3 images (2 are warm-up), got {args.benchmark}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _check_inputs(args)
    config = config_for_weights(args)

    from ..evaluation.coco_eval import benchmark, evaluate, format_per_class_table, format_table, format_timing_table
    from ..inference.predictor import Predictor
    from ..io_utils import write_json_atomic

    # without --weights the Predictor warns loudly that the weights are random
    predictor = Predictor(config, weights=args.weights, device=args.device, precision=args.precision,
                          backend=args.backend, fastest_runtime=args.precision is not None)
    if args.precision or args.backend:
        print(f"network: {predictor.network_impl.describe()} on {predictor.device} ({predictor.precision_reason})")
    progress = not args.no_progress

    if args.benchmark is not None:
        timing = benchmark(predictor, args.json, args.images, args.benchmark, progress=progress)
        print(format_timing_table(timing))
        print(f"Average: {timing['fps']:.2f} fps, {timing['total_ms']:.2f} ms "
              f"(median of {timing['num_timed']} images, {timing['num_detections']:.0f} detections/image)")
        return 0

    out = Path(args.out) if args.out else (Path(args.weights).resolve().parent / "eval" if args.weights
                                           else Path("runs") / "eval")
    metrics = evaluate(predictor, args.json, args.images, max_images=args.max_images,
                       per_class=args.per_class, progress=progress, results_dir=out, tide=args.tide)
    metrics["config"] = getattr(config, "name", None)
    metrics["weights"] = os.fspath(args.weights) if args.weights else None
    write_json_atomic(out / "metrics.json", metrics)

    print(format_table(metrics))
    if args.per_class:
        print()
        print(format_per_class_table(metrics))
    if args.tide:
        from ..evaluation.tide import format_tide_table, plot_tide

        model = Path(args.weights).name if args.weights else "random weights"
        plot_tide(metrics["tide"], out / "tide.png", title=f"TIDE: {model} on {Path(args.json).name}")
        print()
        print(format_tide_table(metrics["tide"]))
    leak = metrics.get("leakage", {})
    parts = [f"{b} {v['leakage']:.3f} (n={v['count']})" if v["leakage"] is not None else f"{b} -"
             for b, v in leak.items()]
    if parts:
        print("mask leakage outside gt box: " + ", ".join(parts))
    t = metrics["timing"]
    fps = f"{t['fps']:.2f}" if t["fps"] else "-"
    print(f"{metrics['num_images']} images, {metrics['num_detections']} detections, "
          f"{fps} fps (median {t['total_ms']:.1f} ms/image); results in {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
