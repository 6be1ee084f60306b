#!/usr/bin/env python3
"""`make demo`: the main job on the bundled real data, end to end, on whatever machine this is.

1. fine-tune ``yolact_effl0`` (ImageNet-pretrained EfficientNet-Lite0, offline) on the bundled
   COCO subset (data/coco_mini/train, 52 real images) for a fixed wall-clock budget;
2. evaluate it on data/coco_mini/val with pycocotools (box and mask AP, AP_small/medium/large);
3. run inference on the bundled photos and on the bundled street-video excerpt (FPS summary).

Every step is one of the project's own scripts, run as a user would run it; the commands are
printed. A CPU budget of minutes cannot train a good model: the point is that the whole path
works on real data and that the numbers printed are the real ones.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"


def run(cmd: list, title: str) -> None:
    print(f"\n=== {title}\n$ {' '.join(shlex.quote(str(c)) for c in cmd)}", flush=True)
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"demo: step '{title}' failed with exit code {result.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="output folder (replaced if it exists)")
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget (wall clock)")
    parser.add_argument("--config", default="yolact_effl0")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    out = (ROOT / args.out).resolve()
    if (out / "last.pt").exists():
        # A demo is a fresh run each time; the previous one is moved aside, not lost.
        aside = out.with_name(out.name + f".previous-{int(time.time())}")
        out.rename(aside)
        print(f"demo: moved the previous demo run to {aside}")
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    train, val = DATA / "coco_mini" / "train", DATA / "coco_mini" / "val"
    # A short run needs a short schedule: warm-up over 30 steps, lr x0.1 late in the budget,
    # gradient clipping against the early spikes of a fresh head. Batch 4 on CPU freezes
    # BatchNorm automatically (per-device batch < 6, as the original). No augmentation: it
    # pays off over long schedules, while a few hundred steps on augmented images learn
    # almost nothing (benchmarks/k_sweep.py fit runs: box AP 0.6 with it, 49 without).
    schedule = ["--set", "train.batch_size=4", "--set", "train.autoscale_batch=false", "--set", "train.augment=none",
                "--set", "train.lr=0.001", "--set", "train.warmup_iters=30",
                "--set", "train.lr_steps=[300, 450]", "--set", "train.grad_clip=10",
                "--set", "train.num_workers=1"]
    started = time.time()
    run([py, "scripts/train.py", "--config", args.config,
         "--train-json", train / "annotations.json", "--train-images", train / "images",
         "--out", out, "--max-minutes", args.minutes, "--max-iter", 100000, "--device", args.device,
         *schedule], "1/3 train (fixed time budget)")
    train_minutes = (time.time() - started) / 60

    weights = out / "last.pt"
    run([py, "scripts/eval.py", "--config", args.config, "--set", "model.num_classes=80",
         "--weights", weights, "--json", val / "annotations.json", "--images", val / "images",
         "--out", out / "eval", "--device", args.device], "2/3 evaluate on the bundled val images")

    # The same model on (part of) its own training images: shows that it learned something even
    # when a few CPU minutes are far too little to generalise to unseen images.
    run([py, "scripts/eval.py", "--config", args.config, "--set", "model.num_classes=80",
         "--weights", weights, "--json", train / "annotations.json", "--images", train / "images",
         "--max-images", 25, "--out", out / "eval_train", "--device", args.device],
        "2/3 evaluate on 25 of the training images (memorisation check)")

    video = DATA / "video" / "vtest_150.avi"
    run([py, "scripts/infer.py", "--config", args.config, "--set", "model.num_classes=80",
         "--weights", weights, "--images", DATA / "photos", "--out", out / "photos",
         "--device", args.device], "3/3 inference: photos")
    run([py, "scripts/infer.py", "--config", args.config, "--set", "model.num_classes=80",
         "--weights", weights, "--video", video, "--out", out / "vtest.mp4", "--display-fps",
         "--device", args.device], "3/3 inference: video")

    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    box, mask = metrics["box"], metrics["mask"]
    seen = json.loads((out / "eval_train" / "metrics.json").read_text())
    print(f"""
=== demo summary ({args.device})
trained {train_minutes:.1f} min on 52 real COCO images -> {weights.relative_to(ROOT)}
val (25 unseen images): box AP {box['AP']:.2f}  AP50 {box['AP50']:.2f} | mask AP {mask['AP']:.2f}  AP50 {mask['AP50']:.2f}
train (25 seen images): box AP {seen['box']['AP']:.2f}  AP50 {seen['box']['AP50']:.2f} | mask AP {seen['mask']['AP']:.2f}  AP50 {seen['mask']['AP50']:.2f}
drawn photos: {(out / 'photos').relative_to(ROOT)}/   video: {(out / 'vtest.mp4').relative_to(ROOT)}

What this CPU run can and cannot reach: minutes of CPU training on 52 images teach the model
only the most frequent classes (mostly 'person'); its AP is a sanity check, not a quality figure.
The original YOLACT needs ~800k iterations at batch 8 on full COCO (4-6 GPU-days) for ~30 mask AP.
For a full-quality model train on a GPU (see README, "Training"), e.g.
  torchrun --nproc_per_node=8 scripts/train.py --config yolact_resnet50 \\
      --train-json coco/annotations/instances_train2017.json --train-images coco/train2017 \\
      --val-json coco/annotations/instances_val2017.json --val-images coco/val2017 --out runs/r50 --amp --device cuda
or load a released original checkpoint (--weights yolact_resnet50_54_800000.pth).""")


if __name__ == "__main__":
    main()
