"""Training speed: one engine step per precision / layout / frozen-stage variant, side by side,
and steps per minute of real budgeted runs with data loading.

Part 1 (``step`` rows): the engine's own step (``TrainStep`` + ``StepRunner``: forward, fp32
loss, backward, SGD step) on a fixed real batch of bundled training images (data loading not
timed), random weights, BatchNorm as the engine sets it for the config's batch of 8 (trained; the
frozen stages' BatchNorm is frozen).  Variants: fp32 (the engine
before mixed precision: NCHW), fp32 + channels_last, bf16 autocast, bf16 + channels_last, and
frozen backbone stages.  bf16 rows run only on a CPU with native bf16 (AMX / AVX512-BF16; the
machine block says which).  ``loss`` is the total loss of the first step from the same weights,
so fp32 and bf16 rows compare directly.

Part 2 (``run`` rows): ``Trainer.fit`` under ``--max-minutes`` with augmentation, DataLoader
workers and everything, yolact_effl0 batch 4 at 448; steps per minute counted from the 3rd
step to the end (start-up and the final save excluded).

    python -m benchmarks.train_speed [--quick] [--threads 2] [--run-minutes 1.5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import machine_info, median_ms, write_results
from yolact_lite import load_config
from yolact_lite.data import CocoDataset, build_train_transform, collate
from yolact_lite.engine.loop import HookBase
from yolact_lite.engine.step import StepRunner, TrainStep, should_freeze_bn
from yolact_lite.engine.trainer import Trainer, TrainOptions
from yolact_lite.hardware import bf16_supported
from yolact_lite.loss.criterion import build_criterion
from yolact_lite.model import build_model
from yolact_lite.model.priors import anchor_scales_override

ROOT = Path(__file__).resolve().parent.parent

TRAIN = ROOT / "data" / "coco_mini" / "train"
CASES = (("yolact_effl0", 4), ("yolact_resnet50", 2))  # config, batch (input: the config's size)
GPU_BATCH = 8


def load_batch(config, batch: int):
    m = config.model
    ds = CocoDataset(TRAIN / "annotations.json", TRAIN / "images", skip_empty=True,
                     transform=build_train_transform(m.input_size, m.pixel_mean, m.pixel_std,
                                                     m.preserve_aspect_ratio, augment="none"))
    return collate([ds.sample(i % len(ds), np.random.default_rng(i)) for i in range(batch)]), ds.coco.dataset


class Step:
    """One engine step on a fixed batch in one setting."""

    def __init__(self, config, state, batch, coco, device, dtype=None, channels_last=False, frozen_stages=0):
        from yolact_lite.config import with_overrides

        config = with_overrides(config, [f"model.backbone.frozen_stages={frozen_stages}"])
        self.device = torch.device(device)
        model = build_model(config, pretrained=False)
        model.load_state_dict(state)
        params = [p for p in model.parameters() if p.requires_grad]
        model.to(self.device)
        images, targets = batch
        if channels_last:
            model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        self.images = images.to(self.device)
        self.targets = [{k: t[k].to(self.device) for k in ("boxes", "labels", "masks", "is_crowd")} for t in targets]
        module = TrainStep(model, build_criterion(config, coco), should_freeze_bn(config), dtype).to(self.device)
        module.train()
        t = config.train
        opt = torch.optim.SGD(params, lr=1e-5, momentum=t.momentum, weight_decay=t.weight_decay)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        self.runner = StepRunner(module, opt, params, scaler=scaler)
        self.first_loss = None

    def __call__(self):
        if self.first_loss is None:
            torch.manual_seed(0)  # the same mask subset in every variant: comparable losses
        result = self.runner(self.images, self.targets)
        if self.first_loss is None:
            self.first_loss = result.terms["total"]


def step_variants(device: str, name: str):
    half = torch.float16 if device == "cuda" else torch.bfloat16
    low = "fp16" if device == "cuda" else "bf16"
    frozen = 3 if name == "yolact_effl0" else 2
    rows = [("fp32", {}), ("fp32+channels_last", {"channels_last": True}),
            (f"fp32+frozen_stages={frozen}", {"frozen_stages": frozen})]
    if device == "cuda" or bf16_supported("cpu"):
        rows += [(low, {"dtype": half}), (f"{low}+channels_last", {"dtype": half, "channels_last": True}),
                 (f"{low}+channels_last+frozen_stages={frozen}",
                  {"dtype": half, "channels_last": True, "frozen_stages": frozen}),
                 (f"{low}+channels_last+frozen_stages=-1", {"dtype": half, "channels_last": True, "frozen_stages": -1})]
    return rows


def measure_steps(name, batch, device, repeats, warmup, overrides=()):
    config = load_config(name, ["model.num_classes=80", *overrides])
    data, coco = load_batch(config, batch)
    torch.manual_seed(0)
    state = build_model(config, pretrained=False).state_dict()
    rows = []
    for label, kwargs in step_variants(device, name):
        step = Step(config, state, data, coco, device, **kwargs)
        ms = median_ms(step, repeats=repeats, warmup=warmup, device=device)
        rows.append({"part": "step", "config": name, "input": config.model.input_size, "batch": batch,
                     "device": device, "variant": label, "ms_per_step": round(ms, 1),
                     "images_per_s": round(batch * 1000.0 / ms, 3), "loss": round(step.first_loss, 4)})
        print(f"{name:16s} {device:4s} b{batch} {label:38s} {ms:9.1f} ms/step {rows[-1]['images_per_s']:7.3f} img/s "
              f"loss {step.first_loss:.4f}", flush=True)
        del step
    base = rows[0]["ms_per_step"]
    for r in rows:
        r["speedup_vs_fp32"] = round(base / r["ms_per_step"], 2)
    return rows


class StepClock(HookBase):
    """Wall time from the end of step ``skip`` to the last step (steps per minute)."""

    def __init__(self, skip: int = 2):
        self.skip, self.t0, self.t1, self.steps = skip, None, None, 0

    def after_step(self) -> None:
        done = self.trainer.iter - self.trainer.start_iter
        if done == self.skip:
            self.t0 = time.perf_counter()
        elif done > self.skip:
            self.t1, self.steps = time.perf_counter(), done - self.skip


def measure_run(label, sets, minutes, device, overrides=()):
    config = load_config("yolact_effl0", ["model.num_classes=80", "train.batch_size=4", *overrides] + sets)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        options = TrainOptions(train_json=str(TRAIN / "annotations.json"), train_images=str(TRAIN / "images"),
                               out=str(Path(tmp) / "run"), max_minutes=minutes, device=device, progress=False)
        trainer = Trainer(config, options, extra_hooks=[clock])
        precision = trainer.precision
        trainer.fit()
    per_min = clock.steps / (clock.t1 - clock.t0) * 60.0 if clock.t1 else float("nan")
    print(f"run {label:40s} {per_min:6.1f} steps/min ({precision})", flush=True)
    return {"part": "run", "config": "yolact_effl0", "input": config.model.input_size, "batch": 4, "device": device,
            "variant": label, "steps_per_min": round(per_min, 1), "images_per_s": round(per_min * 4 / 60.0, 3),
            "precision": precision}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 timed steps after 1 warm-up (default 5 after 2)")
    ap.add_argument("--smoke", action="store_true",
                    help="yolact_effl0 only, 128 px, batch 1, 1 step per variant, one 3-second run without "
                         "data-loader workers: a test that it runs")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--run-minutes", type=float, default=1.5, help="budget of each real run (0: skip part 2)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--name", default=None, help="results file stem (default train_speed[_quick])")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats, warmup = (1, 0) if args.smoke else (2, 1) if args.quick else (5, 2)
    cases, overrides = CASES, []
    if args.smoke:
        cases = (("yolact_effl0", 1),)
        overrides = ["model.input_size=128", anchor_scales_override(128), "train.num_workers=0"]
        args.run_minutes = min(args.run_minutes, 0.05)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but CUDA is not available")
    rows = []
    for name, batch in cases:
        rows += measure_steps(name, batch if args.device == "cpu" else GPU_BATCH, args.device, repeats, warmup,
                              overrides)
    if args.run_minutes > 0:
        runs = [("today: fp32, 2 workers, augmentation", [])]
        if args.device == "cuda" or bf16_supported("cpu"):
            runs.append(("amp + frozen_stages=3, 2 workers, augmentation",
                         ["train.amp=true", "model.backbone.frozen_stages=3"]))
        runs.append(("fp32 + frozen_stages=3, 2 workers, augmentation", ["model.backbone.frozen_stages=3"]))
        for label, sets in runs[:1] if args.smoke else runs:
            rows.append(measure_run(label, sets, args.run_minutes, args.device, overrides))
    notes = (f"Part step: median of {repeats} engine steps after {warmup} warm-up step(s), {args.threads} thread(s), "
             "fixed real batch, random weights, BN trained as for the config's batch of 8 (frozen inside "
             "frozen stages); speedup_vs_fp32 is against the "
             "fp32 row of the same config. Part run: Trainer.fit with a "
             f"{args.run_minutes:g}-minute budget, steps per minute from the 3rd step to the end. "
             "Compare rows of this run only.")
    stem = args.name or ("train_speed_quick" if args.quick else "train_speed")
    csv_path, md_path = write_results(stem, rows, notes)
    print(f"wrote {csv_path} and {md_path}")
    print(json.dumps(machine_info()))


if __name__ == "__main__":
    main()
