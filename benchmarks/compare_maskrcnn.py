#!/usr/bin/env python
"""End-to-end latency: our yolact_resnet50 (through the Predictor) vs torchvision's Mask R-CNN.

Both networks have RANDOM weights (latency does not depend on training) and are forced to
return the same number of masks N (default 100):

* YOLACT: ``inference.max_detections=N`` and the class conv of the prediction head scaled
  up until at least N candidates survive the confidence threshold and Fast NMS;
* Mask R-CNN (``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)``):
  ``box_score_thresh=0``, ``box_detections_per_img=N``, ``min_size=max_size=550``.

Each timed call starts from the BGR uint8 photo and ends with N full-resolution boolean
masks (Mask R-CNN's soft masks are thresholded at 0.5 inside the timed call, as our
Predictor does).  Median over ``--repeats`` calls after ``--warmup`` calls.

    python -m benchmarks.compare_maskrcnn [--num-masks 100] [--device cuda] [--quick]

Writes benchmarks/results/compare_maskrcnn.{csv,md}.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from benchmarks._common import SHARED_DATA, median_ms, write_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def find_photo() -> Path:
    for base in (ROOT / "data" / "photos", SHARED_DATA / "photos"):
        if base.is_dir():
            photos = sorted(p for p in base.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if photos:
                return photos[0]
    raise SystemExit(f"error: no photo found in data/photos or {SHARED_DATA / 'photos'}")


def _prediction_head(obj):
    """The YOLACT PredictionHead inside a Predictor (wherever it keeps its network)."""
    from yolact_lite.model.heads import PredictionHead

    candidates = [getattr(obj, "model", None)] + [v for v in vars(obj).values() if isinstance(v, nn.Module)]
    for module in candidates:
        if isinstance(module, nn.Module):
            for m in module.modules():
                if isinstance(m, PredictionHead):
                    return m
    raise RuntimeError("could not find the prediction head inside the Predictor")


def build_yolact(num_masks: int, device: str, image, size: int = 550):
    """A random-weight yolact_resnet50 Predictor (input ``size``) that returns exactly ``num_masks`` masks."""
    from yolact_lite import Predictor
    from yolact_lite.config import load_config
    from yolact_lite.model.priors import anchor_scales_override

    sized = [] if size == 550 else [f"model.input_size={size}", anchor_scales_override(size)]
    config = load_config("yolact_resnet50", [f"inference.max_detections={num_masks}", *sized])
    torch.manual_seed(0)
    with warnings.catch_warnings():  # random weights are the point here
        warnings.simplefilter("ignore", UserWarning)
        predictor = Predictor(config, weights=None, device=device)
    head = _prediction_head(predictor)
    count = len(predictor.predict(image))
    scale_total = 1.0
    while count < num_masks and scale_total < 1e4:
        with torch.no_grad():  # sharper softmax -> more priors above the confidence threshold
            head.cls.weight.mul_(2.0)
            if head.cls.bias is not None:
                head.cls.bias.mul_(2.0)
        scale_total *= 2.0
        count = len(predictor.predict(image))
    return predictor, count, scale_total


def build_maskrcnn(num_masks: int, device: str, size: int = 550):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, box_score_thresh=0.0,
                                  box_detections_per_img=num_masks, min_size=size, max_size=size)
    return model.eval().to(device)


def maskrcnn_predict(model, image_bgr, device: str):
    x = torch.from_numpy(image_bgr[:, :, ::-1].copy()).to(device)
    x = x.permute(2, 0, 1).float().div_(255.0)
    with torch.inference_mode():
        out = model([x])[0]
    masks = out["masks"][:, 0] > 0.5
    return masks


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(device: str, num_masks: int, repeats: int, warmup: int, image, photo: Path, size: int = 550):
    rows = []
    predictor, count, scale = build_yolact(num_masks, device, image, size)
    if count != num_masks:
        raise SystemExit(f"error: YOLACT produced {count} masks, expected {num_masks}")

    def yolact_call(predictor=predictor):
        dets = predictor.predict(image)
        _sync(device)
        return dets

    ms = median_ms(yolact_call, repeats=repeats, warmup=warmup)
    stages = dict(getattr(predictor, "timings", {}) or {})
    rows.append({"model": "yolact_resnet50 (ours)", "device": device,
                 "input": f"{image.shape[1]}x{image.shape[0]} -> {size}x{size}", "masks": count,
                 "median_ms": round(ms, 1), "fps": round(1000.0 / ms, 2),
                 "stages_ms": " ".join(f"{k}={v:.0f}" for k, v in stages.items()),
                 "class_logit_scale": scale})
    del predictor

    model = build_maskrcnn(num_masks, device, size)
    n = int(maskrcnn_predict(model, image, device).shape[0])
    if n != num_masks:
        raise SystemExit(f"error: Mask R-CNN produced {n} masks, expected {num_masks}")

    def maskrcnn_call():
        masks = maskrcnn_predict(model, image, device)
        _sync(device)
        return masks

    ms_rcnn = median_ms(maskrcnn_call, repeats=repeats, warmup=warmup)
    rows.append({"model": "maskrcnn_resnet50_fpn (torchvision)", "device": device,
                 "input": f"{image.shape[1]}x{image.shape[0]} -> {size} (min=max={size})", "masks": n,
                 "median_ms": round(ms_rcnn, 1), "fps": round(1000.0 / ms_rcnn, 2),
                 "stages_ms": "", "class_logit_scale": ""})
    rows[0]["speedup_vs_maskrcnn"] = round(ms_rcnn / ms, 2)
    rows[1]["speedup_vs_maskrcnn"] = 1.0
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="YOLACT vs Mask R-CNN end-to-end latency")
    ap.add_argument("--num-masks", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 repeats after 1 warm-up")
    ap.add_argument("--smoke", action="store_true", help="10 masks at 128 px, 1 repeat: a test that it runs")
    ap.add_argument("--device", default="cpu", help="'cuda' adds GPU rows (CPU rows always run)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--photo", default=None)
    ap.add_argument("--name", default="compare_maskrcnn", help="results file stem")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 2, 1
    size = 550
    if args.smoke:
        args.repeats, args.warmup, args.num_masks, size = 1, 0, 10, 128
    torch.set_num_threads(args.threads)

    from yolact_lite.data.image_io import read_image

    photo = Path(args.photo) if args.photo else find_photo()
    image = read_image(photo)

    devices = ["cpu"]
    if args.device.startswith("cuda"):
        if torch.cuda.is_available():
            devices.append(args.device)
        else:
            print("warning: --device cuda requested but CUDA is not available; CPU rows only",
                  file=sys.stderr)

    rows = []
    for device in devices:
        rows += run(device, args.num_masks, args.repeats, args.warmup, image, photo, size)

    header = f"{'model':<38}{'device':<8}{'masks':>6}{'median ms':>11}{'fps':>8}{'speedup':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<38}{r['device']:<8}{r['masks']:>6}{r['median_ms']:>11.1f}"
              f"{r['fps']:>8.2f}{r['speedup_vs_maskrcnn']:>8.2f}x")

    notes = [
        f"photo: {photo.name} ({image.shape[1]}x{image.shape[0]}); both models random weights, "
        f"{args.num_masks} masks each, full-resolution boolean masks at the end of each timed call",
        f"median of {args.repeats} after {args.warmup} warm-up call(s); torch threads: {args.threads}",
        "YOLACT: configs/yolact_resnet50.yaml through Predictor (image in -> Detections out), "
        "class conv scaled by class_logit_scale so that enough detections pass the threshold; "
        "stages_ms = the Predictor's per-stage times of the last timed call",
        "Mask R-CNN: torchvision maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, "
        "box_score_thresh=0, box_detections_per_img=N, min_size=550, max_size=550)",
    ]
    write_results(args.name, rows, "\n".join(f"- {n}" for n in notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
