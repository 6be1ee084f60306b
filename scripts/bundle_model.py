#!/usr/bin/env python3
"""Turn a training run into the small model shipped in ``data/models/``.

Keeps what inference needs from ``RUN/last.pt`` (config, the inference weights, which are the
EMA when the run used one, class names and ids), stores the floating-point weights as fp16
(they load into the fp32 model unchanged in shape; the Predictor computes in fp32), and writes
a JSON beside it with the val metrics, the machine, the command and the commit.

    python scripts/bundle_model.py --run runs/person15 --out data/models/person_effl0 \\
        --command "yolact-lite train ..." [--metrics runs/person15/eval/metrics.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
from pathlib import Path

from yolact_lite.checkpoint.files import carried_config, load_weights, model_checkpoint, read_state_file, save_atomic
from yolact_lite.errors import CheckpointError
from yolact_lite.hardware import describe_machine
from yolact_lite.io_utils import write_json_atomic
from yolact_lite.model import build_model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="training run directory (last.pt, eval.csv)")
    ap.add_argument("--out", type=Path, required=True, help="output stem: OUT.pt and OUT.json")
    ap.add_argument("--command", required=True, help="the training command, for the record")
    ap.add_argument("--metrics", type=Path, help="metrics.json of `yolact-lite eval` (default: the run's last eval)")
    args = ap.parse_args(argv)

    state = read_state_file(args.run / "last.pt")
    config = carried_config(state)
    if config is None:
        raise CheckpointError(f"{args.run / 'last.pt'}: carries no config (not a training run of ours)")
    model = build_model(config, pretrained=False)
    load_weights(model, state)  # the inference weights, checked against the config
    ckpt = model_checkpoint(model.half(), config.to_dict(), class_names=state.get("class_names"),
                            category_ids=state.get("category_ids"), step=state["step"])
    save_atomic(ckpt, args.out.with_suffix(".pt"))

    evals = list(csv.DictReader((args.run / "eval.csv").open()))
    if args.metrics:
        full = json.loads(args.metrics.read_text())
        metrics = {kind: full[kind] for kind in ("box", "mask")}
    else:
        metrics = {"last_eval": evals[-1]}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {
        "what": f"CPU-trained example model (not a COCO model): {config.name}, 1 class (person), "
                "fine-tuned from ImageNet EfficientNet-Lite0 on the 101 bundled COCO training images with people",
        "weights": args.out.with_suffix(".pt").name, "dtype": "float16 (loads into the fp32 model)",
        "steps": state["step"], "train_minutes": float(evals[-1]["train_minutes"]),
        "val": "data/coco_mini/val/annotations_person.json (90 images, 238 non-crowd persons)",
        "metrics": metrics, "curve": evals, "command": args.command, "commit": commit,
        "machine": describe_machine(),
    }
    write_json_atomic(args.out.with_suffix(".json"), record, indent=1)
    size = args.out.with_suffix(".pt").stat().st_size / 2**20
    print(f"wrote {args.out.with_suffix('.pt')} ({size:.1f} MiB) and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
