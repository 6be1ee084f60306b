"""The learning test: a short CPU run on five bundled COCO images must really learn.

Recipe: YOLACT with the pretrained EfficientNet-Lite0 backbone (offline weights) at 256 px,
no augmentation, batch 2, SGD lr 1e-3 (no autoscale; warm-up 30 iterations from 1e-4),
gradient clipping at 10, 100 iterations (50 epochs of 2 batches), then COCO evaluation
(the fused :class:`~yolact_lite.inference.predictor.Predictor`) on the same images.  Measured on the
development machine (2 CPU threads shared with other jobs: 133 s for the run):
last-20 / first-20 mean total loss 0.033, box AP 61.6, mask AP 20.3 (seed 0); seeds 1 and 2
gave ratio 0.031 / 0.027, box AP 38.4 / 56.1, mask AP 18.5 / 25.9.  An untrained model
evaluated the same way scores ~0 AP (second test), so the thresholds below (loss ratio < 0.3,
mask AP > 10, box AP > 20) cannot be met by accident and leave ~2x margin.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.paths import ROOT
from yolact_lite.config import load_config
from yolact_lite.data import coco_subset
from yolact_lite.engine import trainer as T
from yolact_lite.evaluation.coco_eval import evaluate
from yolact_lite.model import build_model
from yolact_lite.model.testing import small_overrides

TRAIN_DIR = ROOT / "data" / "coco_mini" / "train"
IMAGES = TRAIN_DIR / "images"
# Few, mostly large instances (2-4 per image): person, skis, backpack, bowl, broccoli,
# tennis racket, sports ball, tv, remote, snowboard.
IMAGE_IDS = (262146, 483330, 352257, 204802, 183872)
STEPS = 100

RECIPE = [
    "model.num_classes=80",
    "model.input_size=256",
    "model.anchors.scales=[[11],[23],[46],[93],[186]]",  # int(s * 256 / 550), as the configs do
    "train.batch_size=2",
    "train.autoscale_batch=false",
    "train.lr=1.0e-3",
    "train.warmup_iters=30",
    "train.lr_steps=[100000]",
    "train.grad_clip=10.0",
    "train.augment=none",
    "train.num_workers=0",
    "train.checkpoint_every_iters=0",
]


@pytest.fixture(scope="module")
def subset_json(tmp_path_factory) -> Path:
    data = json.loads((TRAIN_DIR / "annotations.json").read_text())
    data = coco_subset(data, IMAGE_IDS)
    assert len(data["images"]) == len(IMAGE_IDS)
    path = tmp_path_factory.mktemp("learn_data") / "subset.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.slow
def test_short_cpu_run_learns(subset_json, tmp_path):
    config = load_config("yolact_effl0", RECIPE)
    out = tmp_path / "run"
    options = T.TrainOptions(train_json=str(subset_json), train_images=str(IMAGES), out=str(out),
                             val_json=str(subset_json), val_images=str(IMAGES), max_iter=STEPS,
                             pretrained=True, progress=False)
    result = T.Trainer(config, options).fit()
    assert result.step == STEPS and result.skipped_steps == 0

    rows = list(csv.DictReader((out / "log.csv").open()))
    totals = [float(r["total"]) for r in rows]
    assert len(totals) == STEPS
    first, last = sum(totals[:20]) / 20, sum(totals[-20:]) / 20
    assert last < 0.3 * first, f"loss did not drop enough: first-20 mean {first:.2f}, last-20 mean {last:.2f}"

    metrics = result.last_metrics
    box_ap, mask_ap = metrics["box"]["AP"], metrics["mask"]["AP"]
    print(f"loss {first:.2f} -> {last:.2f} (ratio {last / first:.3f}); box AP {box_ap:.1f}, mask AP {mask_ap:.1f}")
    assert mask_ap > 10.0, metrics["mask"]
    assert box_ap > 20.0, metrics["box"]
    assert result.best_mask_ap == pytest.approx(mask_ap)
    assert (out / "best.pt").is_file()


def test_untrained_model_scores_about_zero(subset_json):
    # Same network and evaluation, no training; every prior is made a candidate
    # (candidate_threshold 0) so that the model does output 100 detections per image.
    config = load_config("yolact_effl0", RECIPE + ["inference.candidate_threshold=0.0"])
    torch.manual_seed(0)
    model = build_model(config, pretrained=True)
    predictor = T.make_predictor(model, config, torch.device("cpu"))
    metrics = evaluate(predictor, str(subset_json), str(IMAGES), progress=False)
    assert metrics["num_detections"] > 0
    assert metrics["mask"]["AP"] < 2.0 and metrics["box"]["AP"] < 2.0, (metrics["box"], metrics["mask"])


@pytest.mark.slow
def test_finetune_recipe_learns_persons(tmp_path):
    """The CPU recipe (yolact_effl0_finetune: frozen stages, light augmentation, AdamW + cosine,
    EMA, cached samples) at 256 px learns a few large persons: the loss falls and the EMA
    weights find them again."""
    data = json.loads((TRAIN_DIR / "annotations_person.json").read_text())
    per_image = {}
    for a in data["annotations"]:
        per_image.setdefault(a["image_id"], []).append(a)
    ids = sorted(i for i, anns in per_image.items() if len(anns) <= 2 and all(a["area"] > 150 ** 2 for a in anns))[:6]
    assert len(ids) == 6
    subset = tmp_path / "persons.json"
    subset.write_text(json.dumps(coco_subset(data, ids)))
    config = load_config("yolact_effl0_finetune", small_overrides(256) + [
        "model.num_classes=1", "train.batch_size=4", "train.num_workers=0", "train.checkpoint_every_iters=0",
        "train.warmup_iters=10", "train.ema_ramp_steps=20"])
    options = T.TrainOptions(train_json=str(subset), train_images=str(IMAGES), out=str(tmp_path / "run"),
                             val_json=str(subset), val_images=str(IMAGES), max_iter=100, progress=False)
    result = T.Trainer(config, options).fit()
    totals = [float(r["total"]) for r in csv.DictReader((tmp_path / "run" / "log.csv").open())]
    first, last = sum(totals[:10]) / 10, sum(totals[-10:]) / 10
    box_ap, mask_ap = result.last_metrics["box"]["AP"], result.last_metrics["mask"]["AP"]
    print(f"loss {first:.2f} -> {last:.2f}; box AP {box_ap:.1f}, mask AP {mask_ap:.1f}")
    assert last < 0.5 * first, (first, last)
    assert box_ap > 5.0 and mask_ap > 5.0, (box_ap, mask_ap)  # untrained weights score < 2 (test above)
