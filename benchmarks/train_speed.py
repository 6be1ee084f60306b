"""Training throughput (images/s) of one optimisation step: forward, YOLACT loss, backward,
SGD step (momentum 0.9, weight decay 5e-4).

The batch is real: the first images of ``data/coco_mini/train`` through the training
transform without augmentation, loaded once (data loading is NOT timed; with
``train.num_workers`` workers it overlaps the step anyway).  Random weights (speed does not
depend on them; ResNet ImageNet weights would need a download).

CPU rows, same run, same batch, same weights at the start of each variant:

* ``plain``: fp32 eager, NCHW, every BatchNorm trained (train mode, affine grads);
* ``frozen_bn``: BatchNorm frozen as the engine does when the per-process batch is < 6
  (the original's rule; eval-mode BN, no BN affine grads);
* ``frozen_bn+channels_last``: the same with channels_last weights and inputs.

``--device cuda`` adds GPU rows at batch 8 (BN trained, the original's setting): fp32, AMP
(autocast fp16 + GradScaler) and AMP + channels_last.

    python benchmarks/train_speed.py [--quick] [--threads 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
for p in (str(ROOT), str(Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from _common import machine_info, median_ms, write_results  # noqa: E402

from yolact_lite import load_config  # noqa: E402
from yolact_lite.data import CocoDataset, build_train_transform, collate  # noqa: E402
from yolact_lite.engine.trainer import set_bn_frozen  # noqa: E402
from yolact_lite.loss import YolactLoss  # noqa: E402
from yolact_lite.model import build_model  # noqa: E402

TRAIN = ROOT / "data" / "coco_mini" / "train"
CPU_CASES = (("yolact_resnet50", 2), ("yolact_effl0", 2))  # config, batch (input: the config's size)
GPU_BATCH = 8


def load_batch(config, batch: int):
    m = config.model
    ds = CocoDataset(TRAIN / "annotations.json", TRAIN / "images", skip_empty=True,
                     transform=build_train_transform(m.input_size, m.pixel_mean, m.pixel_std,
                                                     m.preserve_aspect_ratio, augment=False))
    samples = [ds.sample(i % len(ds), np.random.default_rng(i)) for i in range(batch)]
    return collate(samples)


class Step:
    """One training iteration on a fixed batch, in a given setting."""

    def __init__(self, config, state, images, targets, device, freeze_bn=False, channels_last=False, amp=False):
        self.device = torch.device(device)
        self.model = build_model(config, pretrained=False)
        self.model.load_state_dict(state)
        self.model.to(self.device).train()
        set_bn_frozen(self.model, freeze_bn)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.images = images.to(self.device).contiguous(memory_format=fmt)
        self.targets = [{k: t[k].to(self.device) for k in ("boxes", "labels", "masks", "is_crowd")} for t in targets]
        t = config.train
        self.loss = YolactLoss(config.loss, config.model.num_classes, t.masks_to_train, t.masks_selection)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-5, momentum=t.momentum, weight_decay=t.weight_decay)
        self.amp = amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp) if self.device.type == "cuda" else None

    def __call__(self):
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.model(self.images)
            losses = self.loss(out, self.targets, mask_iou_head=self.model.mask_iou_head)
        if self.amp:
            self.scaler.scale(losses["total"]).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            losses["total"].backward()
            self.opt.step()


def measure(name, batch, device, variants, repeats, warmup):
    config = load_config(name, ["model.num_classes=80"])
    images, targets = load_batch(config, batch)
    torch.manual_seed(0)
    state = build_model(config, pretrained=False).state_dict()
    rows = []
    for label, kwargs in variants:
        step = Step(config, state, images, targets, device, **kwargs)
        ms = median_ms(step, repeats=repeats, warmup=warmup, device=device)
        rows.append({"config": name, "input": config.model.input_size, "batch": batch, "device": device,
                     "variant": label, "ms_per_step": round(ms, 1), "images_per_s": round(batch * 1000.0 / ms, 3)})
        print(f"{name:18s} {device:4s} b{batch} {label:26s} {ms:9.1f} ms/step  {rows[-1]['images_per_s']:.3f} img/s",
              flush=True)
        del step
    base = rows[0]["ms_per_step"]
    for r in rows:
        r["speedup_vs_first"] = round(base / r["ms_per_step"], 2)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 timed steps after 1 warm-up (default 5 after 2)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    repeats, warmup = (2, 1) if args.quick else (5, 2)

    cpu_variants = [
        ("plain", {}),
        ("frozen_bn", {"freeze_bn": True}),
        ("frozen_bn+channels_last", {"freeze_bn": True, "channels_last": True}),
    ]
    rows = []
    for name, batch in CPU_CASES:
        rows += measure(name, batch, "cpu", cpu_variants, repeats, warmup)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("error: --device cuda but CUDA is not available")
        torch.backends.cudnn.benchmark = True
        gpu_variants = [("fp32", {}), ("amp", {"amp": True}), ("amp+channels_last", {"amp": True, "channels_last": True})]
        for name, _ in CPU_CASES:
            rows += measure(name, GPU_BATCH, "cuda", gpu_variants, repeats * 4, warmup * 3)

    notes = (f"Median of {repeats} training steps after {warmup} warm-up step(s), {args.threads} CPU thread(s); "
             "one step = forward + loss + backward + SGD step on a fixed real batch (data loading not timed). "
             "speedup_vs_first is relative to the first row of the same config and device. "
             "Timings on a shared machine are noisy: compare rows of the same run only.")
    name = "train_speed_quick" if args.quick else "train_speed"
    csv_path, md_path = write_results(name, rows, notes)
    print(f"wrote {csv_path} and {md_path}")
    print(machine_info())


if __name__ == "__main__":
    main()
