"""Where the fp32 Predictor's time goes: stage medians and the torch profiler's op table.

yolact_resnet50 at 550, random weights biased to detect (100 detections), the 640x480 photo,
torch backend fp32 (BatchNorm folded, channels_last). Writes results/profile_fp32.{csv,md}:
one row per stage (median ms of ``--repeats`` predicts) and per top op of one profiled
predict (self CPU ms and share).

    python benchmarks/profile_fp32.py [--repeats 3] [--threads 2] [--config yolact_resnet50]
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from pathlib import Path

import torch

from benchmarks._common import PHOTO, load_photo, machine_info, write_results
from yolact_lite import load_config
from yolact_lite.checkpoint.files import model_checkpoint
from yolact_lite.inference.predictor import Predictor
from yolact_lite.model.priors import anchor_scales_override
from yolact_lite.model.testing import detecting_model

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", default="yolact_resnet50")
    parser.add_argument("--ops", type=int, default=12, help="top ops listed")
    parser.add_argument("--smoke", action="store_true", help="yolact_effl0 at 128 px, 1 repeat: a test that it runs")
    args = parser.parse_args(argv)
    print(machine_info(), flush=True)
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.config, args.repeats = "yolact_effl0", 1
    config = load_config(args.config, ["model.input_size=128", anchor_scales_override(128)] if args.smoke else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = Predictor(config, model_checkpoint(detecting_model(config), config.to_dict()), precision="fp32")
    image = load_photo()
    for _ in range(2):
        pred.predict(image)
    stages = {k: [] for k in pred.timings}
    for _ in range(args.repeats):
        pred.predict(image)
        for k, v in pred.timings.items():
            stages[k].append(v)
    total = sum(statistics.median(v) for v in stages.values())
    rows = [{"part": "stage", "name": k, "ms": statistics.median(v), "share_pct": 100 * statistics.median(v) / total}
            for k, v in stages.items()]
    with torch.profiler.profile() as prof:
        pred.predict(image)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    profiled = sum(e.self_cpu_time_total for e in events)
    for e in events[:args.ops]:
        rows.append({"part": "op", "name": e.key, "ms": e.self_cpu_time_total / 1e3,
                     "share_pct": 100 * e.self_cpu_time_total / profiled, "calls": e.count})
    for r in rows:
        print(f"{r['part']:6s} {r['name']:34s} {r['ms']:9.1f} ms  {r['share_pct']:5.1f}%")
    notes = (f"{args.config} at {config.model.input_size}, torch backend fp32 (BatchNorm folded, channels_last), "
             f"random weights biased to detect, 640x480 photo `{PHOTO.name}`, {args.threads} threads. Stage rows: "
             f"median of {args.repeats} predicts (the network stage includes box decoding and softmax). Op rows: "
             f"self CPU time of one profiled predict, top {args.ops}.")
    csv_path, md_path = write_results("profile_fp32", rows, notes)
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
