"""Mask post-processing settings of a trained model: person val AP per setting, same weights.

Inference-only levers (no training): the crop at prototype resolution (``crop_padding``,
``crop_mode``), the cut to the box at image resolution (``clip_to_box``) and the binarisation
threshold (``mask_threshold``).  Each row evaluates the SAME checkpoint on all 90 bundled val
images (person annotations only) with pycocotools; ``infer_ms`` is the median per image, from
the BGR image to full-resolution masks (fp32, batch 1).

    python -m benchmarks.mask_postprocess [--weights data/models/person_effl0.pt] [--rows ...]

Writes ``benchmarks/results/mask_postprocess.{csv,md}`` (``--name`` to change).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks._common import write_results
from benchmarks.finetune_recipe import VAL_IMAGES, VAL_JSON, measured_at
from yolact_lite.checkpoint.files import carried_config, read_state_file
from yolact_lite.config import with_overrides
from yolact_lite.errors import CheckpointError
from yolact_lite.evaluation.coco_eval import evaluate
from yolact_lite.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "data" / "models" / "person_effl0.pt"

ROWS = {
    "original": [],
    "pad0": ["inference.crop_padding=0"],
    "clip": ["inference.clip_to_box=true"],
    "clip_thr0.4": ["inference.clip_to_box=true", "inference.mask_threshold=0.4"],
    "clip_thr0.3": ["inference.clip_to_box=true", "inference.mask_threshold=0.3"],
    "thr0.4": ["inference.mask_threshold=0.4"],
    "soft_clip": ["inference.crop_mode=soft", "inference.clip_to_box=true"],
    "no_crop_clip": ["inference.crop_mode=none", "inference.clip_to_box=true"],
}


def run_row(name: str, weights: dict, base, max_images=None) -> dict:
    config = with_overrides(base, ROWS[name])
    metrics = evaluate(Predictor(config, weights), VAL_JSON, VAL_IMAGES, max_images=max_images, progress=False,
                       leakage=False)
    box, mask = metrics["box"], metrics["mask"]
    return {"row": name, "overrides": " ".join(ROWS[name]) or "-", "mask_AP": mask["AP"],
            "mask_AP50": mask["AP50"], "mask_AP75": mask["AP75"], "mask_AP_S": mask["AP_small"],
            "mask_AP_M": mask["AP_medium"], "mask_AP_L": mask["AP_large"], "box_AP": box["AP"],
            "infer_ms": round(metrics["timing"]["total_ms"], 1), **measured_at()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=str(BUNDLED.relative_to(ROOT)),
                    help="a checkpoint of ours (it carries its config)")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="mask_postprocess")
    ap.add_argument("--max-images", type=int, help="evaluate on the first N val images (default all)")
    ap.add_argument("--smoke", action="store_true", help="rows original and soft_clip on 2 val images: a test that "
                                                         "it runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rows, args.max_images = ["original", "soft_clip"], 2
    torch.set_num_threads(args.threads)
    weights = read_state_file(args.weights)
    base = carried_config(weights, quiet=True)
    if base is None:
        raise CheckpointError(f"{args.weights}: carries no config (not a checkpoint of ours)")
    rows = []
    for name in args.rows:
        rows.append(run_row(name, weights, base, args.max_images))
        print(json.dumps(rows[-1]), flush=True)
        write_results(args.name, rows, f"Weights {args.weights} ({base.name}, input {base.model.input_size} px); "
                      f"each row = the same weights with the row's inference overrides; person val AP "
                      f"(pycocotools, {args.max_images or 90} images); {args.threads} threads.")


if __name__ == "__main__":
    main()
