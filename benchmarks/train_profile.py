"""Where a training step of yolact_effl0 spends its time, and what the data path costs.

Profiles the engine step (batch 4, 448 px, random weights, BN frozen by the engine's rule)
with ``torch.profiler`` in fp32 and, on a CPU with native bf16, in bf16 + channels_last, and
times the data path per sample (decode + masks + augmentation) against it.  Writes the top
operators by self CPU time.

    python -m benchmarks.train_profile [--steps 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks._common import machine_info, write_results
from benchmarks.train_speed import TRAIN, Step, load_batch
from yolact_lite import load_config
from yolact_lite.data import CocoDataset, build_train_transform
from yolact_lite.data.sampling import TrainSamples
from yolact_lite.hardware import bf16_supported
from yolact_lite.model import build_model
from yolact_lite.model.priors import anchor_scales_override

ROOT = Path(__file__).resolve().parent.parent


def profile_step(step: Step, steps: int, label: str, top: int):
    step()  # warm-up (oneDNN primitive creation)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = []
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        rows.append({"part": "step", "variant": label, "op": e.key, "self_ms_per_step":
                     round(e.self_cpu_time_total / 1e3 / steps, 1),
                     "share": round(e.self_cpu_time_total / total, 3), "calls_per_step": e.count // steps})
        print(f"{label:24s} {e.key:45s} {rows[-1]['self_ms_per_step']:8.1f} ms {rows[-1]['share']:6.1%}")
    return rows


def time_data(config, samples: int):
    m, t = config.model, config.train
    ds = CocoDataset(TRAIN / "annotations.json", TRAIN / "images", skip_empty=True, seed=0,
                     transform=build_train_transform(m.input_size, m.pixel_mean, m.pixel_std,
                                                     m.preserve_aspect_ratio, t.augment, t.min_box_pixels))
    rows = []
    for label, fn in (("raw sample (decode image + masks)", lambda i: ds.raw_sample(i % len(ds))),
                      ("training sample (+ augmentation)", lambda i: TrainSamples(ds)[(i % len(ds), 0)])):
        fn(0)
        t0 = time.perf_counter()
        for i in range(samples):
            fn(i)
        ms = (time.perf_counter() - t0) * 1e3 / samples
        rows.append({"part": "data", "variant": label, "op": "per sample", "self_ms_per_step": round(ms, 1)})
        print(f"data: {label:40s} {ms:8.1f} ms/sample")
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--smoke", action="store_true", help="128 px, batch 1, 1 step, 2 samples: a test that it runs")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    tiny = ["model.input_size=128", anchor_scales_override(128)] if args.smoke else []
    config = load_config("yolact_effl0", ["model.num_classes=80", *tiny])
    if args.smoke:
        args.steps = 1
    data, coco = load_batch(config, 1 if args.smoke else 4)
    torch.manual_seed(0)
    state = build_model(config, pretrained=False).state_dict()
    rows = profile_step(Step(config, state, data, coco, "cpu"), args.steps, "fp32", args.top)
    if bf16_supported("cpu"):
        rows += profile_step(Step(config, state, data, coco, "cpu", dtype=torch.bfloat16, channels_last=True),
                             args.steps, "bf16+channels_last", args.top)
    rows += time_data(config, 2 if args.smoke else 16)
    notes = ("Top operators by self CPU time per engine step (yolact_effl0, batch 4, 448 px), and the data path "
             "per sample in the main process (one worker does this; 2 workers share the 2 cores with the step).")
    write_results("train_profile", rows, notes)
    print(machine_info())


if __name__ == "__main__":
    main()
