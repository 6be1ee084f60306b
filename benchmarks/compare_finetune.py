"""Fine-tuning at the same budget: our recipe against torchvision's Mask R-CNN on the same backbone.

Both models start from the same ImageNet EfficientNet-Lite0 (our backbone module; Mask R-CNN
sees its C3-C5 through ``torchvision.ops.FeaturePyramidNetwork`` with a max-pool P6, as
``BackboneWithFPN`` builds it), freeze the same stages, and train on the bundled person set
(``data/coco_mini/train/annotations_person.json``) with the SAME data pipeline (augmentation
"light", the recipe's square input size, cached samples, batch 8), optimiser (AdamW, lr 1e-3, wd 1e-4),
cosine schedule fitted to the budget by the same rule (median step time of steps 6-15), EMA
0.99, bf16 autocast where the CPU has it, and the same threads.  "Minutes" is wall-clock
training time including data loading, excluding start-up and the final evaluation.

Both are then evaluated by the same code (:func:`yolact_lite.evaluation.coco_eval.evaluate`: pycocotools
on all 90 val images, person annotations only) and timed there: ``infer_ms`` is the median
per-image time from the BGR image to full-resolution masks, fp32, batch 1.

    python -m benchmarks.compare_finetune [--models ours maskrcnn] [--minutes 5 10 15] [--seed 0]
        [--config yolact_effl0_finetune_384] [--keep-runs runs/compare] [--max-iter 6000]
        [--set train.weight_decay=0.05 ...]

``--config`` picks the recipe variant; the peer then trains at that variant's input size.
``--set`` changes our recipe only (the change is part of the row's model name).

Writes ``benchmarks/results/compare_finetune.{csv,md,png}`` (rows at the budgets where both
models ran) and ``finetune_curve.{csv,md,png}`` (our recipe at every budget it ran).  Rows of
an earlier run of this script are kept unless this run redoes them (``--fresh`` drops them).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import OrderedDict
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks._common import RESULTS_DIR, read_results, write_results
from benchmarks.finetune_recipe import (
    CONFIG,
    SMOKE_OVERRIDES,
    TRAIN_IMAGES,
    TRAIN_JSON,
    VAL_IMAGES,
    VAL_JSON,
    measured_at,
    recipe_config,
)
from yolact_lite.data.coco import CocoDataset
from yolact_lite.data.preprocess import preprocess_image
from yolact_lite.data.transforms import build_train_transform
from yolact_lite.engine import hooks as H
from yolact_lite.engine.data import StepBatchSampler, build_train_loader
from yolact_lite.engine.ema import ModelEMA
from yolact_lite.engine.loop import TrainLoop
from yolact_lite.engine.schedule import build_schedule, fit_to_steps
from yolact_lite.engine.step import choose_precision
from yolact_lite.engine.trainer import Trainer, TrainOptions
from yolact_lite.evaluation.coco_eval import evaluate
from yolact_lite.hardware import bf16_supported
from yolact_lite.inference.predictor import Predictor
from yolact_lite.model.backbones import build_backbone
from yolact_lite.model.freeze import freeze_backbone_stages
from yolact_lite.model.pretrained import load_imagenet_weights
from yolact_lite.structures import Detections

MODELS = ("ours", "maskrcnn")
OURS = "ours"
PEER = "Mask R-CNN (torchvision, same backbone)"


def label(model: str, config_name: str, changes=()) -> str:
    """The ``model`` column: ours names its recipe config (and ``--set`` changes); the peer is
    the same at every size."""
    return f"ours ({' '.join([config_name, *changes])})" if model == OURS else PEER


def is_variant(model_column: str) -> bool:
    """A row of our recipe with ``--set`` changes (see :func:`label`)."""
    inside = model_column[len("ours ("):-1]
    return model_column.startswith("ours (") and model_column.endswith(")") and " " in inside


# --------------------------------------------------------------------------- ours

def run_ours(minutes: float, seed: int, amp: bool, config_name: str, work: Path, overrides=(), changes=(),
             max_images=None) -> dict:
    config = recipe_config(seed, amp, [*overrides, *changes], config_name=config_name)
    options = TrainOptions(train_json=str(TRAIN_JSON), train_images=str(TRAIN_IMAGES), out=str(work),
                           max_minutes=minutes, progress=False)
    trainer = Trainer(config, options)
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    predictor = Predictor(config, weights=str(work / "last.pt"))
    metrics = evaluate(predictor, VAL_JSON, VAL_IMAGES, max_images=max_images, progress=False, leakage=False)
    return row_from(label(OURS, config_name, changes), config, minutes, seed, result.step, seconds, metrics,
                    trainer.precision)


# --------------------------------------------------------------------------- Mask R-CNN

class EfficientNetFPN(nn.Module):
    """Our EfficientNet-Lite0 trunk's C3-C5 -> torchvision FPN (256 ch) + max-pool P6:
    ``OrderedDict`` ``{"0": P3, "1": P4, "2": P5, "pool": P6}``."""

    def __init__(self, backbone_config, frozen_stages: int):
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        self.body = build_backbone("efficientnet_lite0")
        load_imagenet_weights(self.body, backbone_config)
        freeze_backbone_stages(self.body, frozen_stages)
        self.fpn = FeaturePyramidNetwork(self.body.out_channels[1:], 256, extra_blocks=LastLevelMaxPool())
        self.out_channels = 256

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        c3, c4, c5 = self.body(x)[1:]
        return self.fpn(OrderedDict([("0", c3), ("1", c4), ("2", c5)]))


def build_maskrcnn(config) -> nn.Module:
    """Mask R-CNN (1 foreground class) on :class:`EfficientNetFPN`; its transform is a no-op on
    our already normalised S x S inputs (mean 0, std 1, min = max = S)."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    m = config.model
    anchors = AnchorGenerator(sizes=((32,), (64,), (128,), (256,)), aspect_ratios=((0.5, 1.0, 2.0),) * 4)
    return MaskRCNN(EfficientNetFPN(m.backbone, m.backbone.frozen_stages), num_classes=m.num_classes + 1,
                    rpn_anchor_generator=anchors,
                    box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], 7, 2),
                    mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], 14, 2),
                    min_size=m.input_size, max_size=m.input_size, image_mean=[0.0] * 3, image_std=[1.0] * 3)


def maskrcnn_targets(targets: List[dict], size: int) -> List[dict]:
    """Our collated targets (relative boxes, 0-based labels, float masks) -> torchvision's
    (pixel boxes, labels from 1, uint8 masks); crowds and boxes under 1 px dropped."""
    out = []
    for t in targets:
        boxes = t["boxes"] * size
        keep = ~t["is_crowd"] & ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        out.append({"boxes": boxes[keep], "labels": t["labels"][keep] + 1,
                    "masks": (t["masks"][keep] > 0.5).to(torch.uint8)})
    return out


class MaskRCNNLoop(TrainLoop):
    """The peer's loop: our data stream, lr plan, EMA and time-budget hooks around torchvision's
    loss dict."""

    def __init__(self, config, minutes: float):
        super().__init__()
        t, m = config.train, config.model
        self.size = m.input_size
        self.autocast_dtype, self.precision = choose_precision(torch.device("cpu"), t.amp)
        dataset = CocoDataset(str(TRAIN_JSON), str(TRAIN_IMAGES), skip_empty=True, seed=t.seed)
        dataset.transform = build_train_transform(m.input_size, m.pixel_mean, m.pixel_std, m.preserve_aspect_ratio,
                                                  t.augment, t.min_box_pixels)
        if t.cache_samples:
            dataset.cache_samples()
        self.schedule = build_schedule(t)
        sampler = StepBatchSampler(len(dataset), t.batch_size, 0, 1, t.seed, 0, self.schedule.max_iter)
        self.data = iter(build_train_loader(dataset, sampler, t.num_workers, False, t.seed))
        torch.manual_seed(t.seed)
        self.model = build_maskrcnn(config)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=t.lr, weight_decay=t.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda it: self.schedule.lr_at(it) / t.lr)
        self.grad_clip = t.grad_clip
        self.ema = ModelEMA(self.model, t.ema_decay, t.ema_ramp_steps)
        self.state.last_step = SimpleNamespace(finite=True)
        self.register_hooks([H.LRScheduleHook(scheduler), H.EMAHook(self.ema, self.model),
                             H.TimeBudgetHook(minutes * 60.0, self._fix_plan)])

    def _fix_plan(self, num_steps: int) -> None:
        self.schedule = fit_to_steps(self.schedule, num_steps)
        self.max_iter = num_steps

    def run_step(self) -> None:
        images, targets = next(self.data)
        bf16 = self.autocast_dtype is not None
        with torch.autocast("cpu", dtype=self.autocast_dtype or torch.bfloat16, enabled=bf16):
            losses = self.model(list(images), maskrcnn_targets(targets, self.size))
        loss = sum(v.float() for v in losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.state.last_step.finite = bool(torch.isfinite(loss))
        if self.state.last_step.finite:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self.optimizer.step()


class MaskRCNNPredictor:
    """``predict(image_bgr) -> Detections`` for :func:`evaluate`: our preprocessing, the model,
    then boxes and soft masks mapped back to the image and thresholded at 0.5."""

    def __init__(self, model: nn.Module, config):
        self.model, self.config = model.eval(), config
        self.class_names = ["person"]

    @torch.inference_mode()
    def predict(self, image_bgr: np.ndarray) -> Detections:
        m = self.config.model
        h, w = image_bgr.shape[:2]
        x, _ = preprocess_image(image_bgr, m.input_size, m.pixel_mean, m.pixel_std, m.preserve_aspect_ratio)
        out = self.model([x])[0]
        scale = torch.tensor([w / m.input_size, h / m.input_size] * 2)
        masks = out["masks"]
        if len(masks):
            masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)[:, 0] > 0.5
        else:
            masks = torch.zeros((0, h, w), dtype=torch.bool)
        return Detections(boxes=out["boxes"] * scale, scores=out["scores"], classes=out["labels"] - 1,
                          masks=masks, class_names=self.class_names)


def run_maskrcnn(minutes: float, seed: int, amp: bool, config_name: str, work: Path, overrides=(),
                 max_images=None) -> dict:
    config = recipe_config(seed, amp, overrides, config_name=config_name)
    loop = MaskRCNNLoop(config, minutes)
    t0 = time.perf_counter()
    loop.train(0, loop.schedule.max_iter)
    seconds = time.perf_counter() - t0
    metrics = evaluate(MaskRCNNPredictor(loop.ema.module.float(), config), VAL_JSON, VAL_IMAGES,
                       max_images=max_images, progress=False, leakage=False)
    return row_from(PEER, config, minutes, seed, loop.iter, seconds, metrics, loop.precision)


# --------------------------------------------------------------------------- results

def row_from(model: str, config, minutes: float, seed: int, steps: int, seconds: float, metrics: dict,
             precision: str) -> dict:
    box, mask = metrics["box"], metrics["mask"]
    return {"model": model, "input_size": config.model.input_size, "minutes": minutes, "seed": seed,
            "mask_AP": mask["AP"], "box_AP": box["AP"],
            "mask_AP50": mask["AP50"], "box_AP50": box["AP50"], "mask_AP_S": mask["AP_small"],
            "mask_AP_M": mask["AP_medium"], "mask_AP_L": mask["AP_large"], "steps": steps,
            "train_min": round(seconds / 60.0, 2), "infer_ms": round(metrics["timing"]["total_ms"], 1),
            "precision": precision, **measured_at()}


def series(rows: List[dict]) -> "OrderedDict[str, List[dict]]":
    """Rows by model and input size, in the order they first appear."""
    out: "OrderedDict[str, List[dict]]" = OrderedDict()
    for r in rows:
        out.setdefault(f"{r['model']}, {r['input_size']} px", []).append(r)
    return out


def _value(cell) -> float:
    """A number from a results cell; NaN for an AP that pycocotools could not compute (no detections)."""
    return float("nan") if cell in (None, "") else float(cell)


def plot(rows: List[dict], path: Path, title: str) -> None:
    """AP against minutes per model and input size: a dot per run, a line through the means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    legend_in = 0.2 * len(series(rows))  # one legend line per series, below the axes
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.0 + legend_in))
    for name, mine in series(rows).items():
        minutes = sorted({float(r["minutes"]) for r in mine})
        infer_ms = float(np.median([float(r["infer_ms"]) for r in mine]))
        for ax, key in zip(axes, ("mask_AP", "box_AP")):
            means = [np.mean([_value(r[key]) for r in mine if float(r["minutes"]) == m]) for m in minutes]
            line, = ax.plot(minutes, means, marker="o", label=f"{name}: {infer_ms:.0f} ms per image")
            ax.scatter([float(r["minutes"]) for r in mine], [_value(r[key]) for r in mine], s=12,
                       color=line.get_color(), alpha=0.6)
    for ax, key in zip(axes, ("mask AP", "box AP")):
        ax.set_xlabel("training minutes (CPU, wall clock)")
        ax.set_ylabel(f"person val {key}")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=1, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, (legend_in + 0.1) / (4.0 + legend_in), 1, 1))
    fig.savefig(path, dpi=110)


def key(row: dict) -> tuple:
    """One run: rows read back by ``read_results`` have their numbers parsed already."""
    return (row["model"], row["input_size"], float(row["minutes"]), row["seed"])


def write_all(rows: List[dict], threads: int, amp: bool) -> None:
    rows = sorted(rows, key=lambda r: (r["input_size"], float(r["minutes"]), r["model"], r["seed"]))
    common = (f"Same data, input size, augmentation, batch, optimiser, budget rule, EMA and "
              f"{'bf16' if amp else 'fp32'} training for both; {threads} threads; separate budgeted runs "
              "(one row = one run). infer_ms: median per val image (BGR image -> full-resolution masks, "
              "fp32, batch 1).")
    ours = [r for r in rows if r["model"] != PEER]
    if ours:
        write_results("finetune_curve", ours, "Our recipe variants, person val AP after separate budgeted "
                      "runs. " + common)
        plot(ours, RESULTS_DIR / "finetune_curve.png", "CPU fine-tuning recipe: AP against minutes")
    peer_at = {(r["input_size"], float(r["minutes"])) for r in rows if r["model"] == PEER}
    both = [r for r in rows if (r["input_size"], float(r["minutes"])) in peer_at and not is_variant(r["model"])]
    if both:
        write_results("compare_finetune", both, common)
        plot(both, RESULTS_DIR / "compare_finetune.png", "Fine-tuning on a CPU at the same budget")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 15])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default=CONFIG, help="our recipe variant (its input size is the peer's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep-runs", metavar="DIR", help="keep our runs (checkpoints, logs) under DIR")
    ap.add_argument("--max-iter", type=int, help="raise the recipe's step cap (train.max_iter) for long budgets")
    ap.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE",
                    help="change our recipe (named in the model column; a variant's own curve)")
    ap.add_argument("--fresh", action="store_true", help="drop the rows of earlier runs")
    ap.add_argument("--smoke", action="store_true", help="both models, 3 steps at 128 px, 2 val images: a test "
                                                         "that it runs")
    args = ap.parse_args(argv)
    overrides = [f"train.max_iter={args.max_iter}"] if args.max_iter else []
    max_images = None
    if args.smoke:
        args.minutes, max_images = [0.1], 2
        overrides = [*SMOKE_OVERRIDES, "train.max_iter=3"]
    torch.set_num_threads(args.threads)
    amp = bf16_supported("cpu")
    old = [] if args.fresh else read_results("finetune_curve") + read_results("compare_finetune")
    rows: Dict[tuple, dict] = {key(r): r for r in old}
    runners = {"ours": partial(run_ours, changes=args.changes, max_images=max_images),
               "maskrcnn": partial(run_maskrcnn, max_images=max_images)}
    for minutes in args.minutes:
        for model in args.models:
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                if model == "ours" and args.keep_runs:
                    variant = "".join("_" + c.split(".")[-1].replace("=", "") for c in args.changes)
                    work = Path(args.keep_runs) / f"{args.config}{variant}_{minutes:g}min_seed{args.seed}"
                row = runners[model](minutes, args.seed, amp, args.config, work, overrides)
            print(json.dumps(row), flush=True)
            rows[key(row)] = row
            write_all(list(rows.values()), args.threads, amp)


if __name__ == "__main__":
    main()
