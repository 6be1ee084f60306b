#!/usr/bin/env python
"""Number of prototypes k: accuracy over seeds, speed, memory and size (the YOLACT paper's Table 2b).

TRAINED SWEEP (default).  For every k of ``--k`` (default 8 16 32 64 128 256) and every seed
of ``--seeds`` (default 0 1 2) the SAME recipe is trained, identical except
``model.num_prototypes`` (and ``train.seed``): the CPU fine-tune recipe
``yolact_effl0_finetune`` (448 px, frozen early backbone, AdamW + cosine, light augmentation,
EMA) on the bundled person training set ``data/coco_mini/train`` for a fixed number of steps
(``--steps``, default 600: a step budget, not wall clock, so AP does not depend on how busy
the machine is), then evaluated on the bundled person val set ``data/coco_mini/val``.  Per
(k, seed) run:

* mask AP, AP50, AP75, AP small / medium / large and box AP (pycocotools, percent);
* ``net_ms``: network latency, median, batch 1, the Predictor's fused eval model on a real
  val image; ``e2e_ms``: ``Predictor.predict`` on that image (its mask cost depends on the
  number of detections, ``e2e_detections``);
* ``mask_branch_ms`` = ``proto_ms`` + ``coef_ms`` + ``assemble_ms`` + ``crop_ms``: the
  k-dependent path timed piece by piece with the model's own modules on the real feature
  maps: protonet, coefficient conv + tanh on every level (the shared head conv is common to
  boxes and classes and not counted), ``sigmoid(P @ C^T)`` for the 100 candidates with the
  best score and their crop, at prototype resolution;
* ``infer_peak_MB``: peak memory of one forward + that mask branch (CPU: rise of ``VmHWM``
  in a fresh process; CUDA: ``torch.cuda.max_memory_allocated``); ``train_peak_MB``: the
  same over the training loop (main process; data-loader workers not counted);
* ``params`` (inference model, BatchNorm folded) and ``mask_params`` (protonet + coefficient conv).

``results/{name}_runs.csv`` holds one row per (k, seed), ``results/{name}.{csv,md,png}`` the
mean and standard deviation over seeds per k, the paper's Table 2b beside them, and which
differences exceed the seed spread.  Both are rewritten (atomically) after every finished run.

RESUMABLE.  Each (k, seed) trains in its own folder ``RUNS/k{k}_s{seed}`` (a subprocess) and
is measured in a fresh subprocess.  Run the same command again and finished runs are kept:
only missing (k, seed) are trained.  ``--reuse`` re-times every finished run without
retraining (all side by side in one process; memory and size are kept); ``--fresh``
retrains everything.  A run whose recipe differs from the command's
is retrained.  A run cut off mid-training (the end of a session, a kill) goes on from its last
checkpoint (every ``CHECKPOINT_EVERY`` steps; resume is bit-exact, so the weights are those of
an uninterrupted run); its ``train_s`` then counts the last stretch only.

COST ONLY (``--cost-only``): no training, no data: each config of ``--config`` (default
``yolact_resnet50 yolact_base``, the paper's 550 px) with random weights: peak memory and
parameters in one fresh process per (config, k); net, mask-branch and end-to-end ms of all k
of a config side by side in one process, in rounds (``--repeats``) of one call each, so the
small differences between neighbouring k are not the larger ones between processes;
``results/k_sweep_cost.*``.

``--smoke``: k 8 16, seed 0, 2 steps at 128 px (batch 2, no sample cache, no data-loader
workers), 2 val images, 1 timed call, results under
``$YOLACT_LITE_RESULTS_DIR`` (the test suite points it to a temporary folder).

Full CPU sweep (18 runs of 600 steps: 3 hours at ~1 s per step, 12 hours on a 2-core AVX2
machine at ~3.7 s per step; resumable, with the settings that keep the prototypes alive, see
docs/k_sweep.md)::

    nohup python -m benchmarks.k_sweep --k 8 32 16 64 128 256 --seeds 0 1 2 \\
        --set model.coefficient_init=zero --set train.lr_multipliers.protonet=0.1 > runs/k_sweep.log 2>&1 &

GPU sweep with the original recipe (COCO, yolact_base, 800k iterations at batch 8; see
docs/k_sweep.md)::

    python -m benchmarks.k_sweep --device cuda --config yolact_base --steps 800000 --seeds 0 1 2 \\
        --train-json coco/annotations/instances_train2017.json --train-images coco/train2017 \\
        --val-json coco/annotations/instances_val2017.json --val-images coco/val2017 --name k_sweep_coco
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks._seeds import exceeds_spread, mean_sd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / "data" / "coco_mini"

DEFAULT_K = (8, 16, 32, 64, 128, 256)
DEFAULT_SEEDS = (0, 1, 2)
CONFIG = "yolact_effl0_finetune"
COST_CONFIGS = ("yolact_resnet50", "yolact_base")
STEPS = 600  # see docs/k_sweep.md: the recipe's learning curve flattens after ~600 steps
CHECKPOINT_EVERY = 50  # steps; a run cut off mid-training loses at most this many
SMOKE = {"k": (8, 16), "seeds": (0,), "steps": 2, "input_size": 128, "eval_max_images": 2, "repeats": 1,
         "warmup": 0}
SMOKE_SET = ["train.batch_size=2", "train.cache_samples=false", "train.num_workers=0"]
# The paper (Bolya et al., ICCV 2019, Table 2b): YOLACT-550 ResNet-101, COCO val2017, Titan Xp.
PAPER = {8: (26.8, 33.0), 16: (27.1, 32.8), 32: (27.7, 32.4), 64: (27.8, 31.7), 128: (27.6, 31.5),
         256: (27.7, 29.8)}  # k: (mask AP, FPS)
NUM_MASKS = 100  # candidates in the mask-branch timing
METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
# Per-run columns averaged over seeds in the summary; the time columns only over runs timed on one CPU.
ACTIVE_SHARE = 0.01  # a prototype counts as "active" above zero on at least this share of pixels
ACTIVITY_IMAGES = 20  # val images the prototype activity is measured on
SUMMARY_COLUMNS = (*(f"mask_{m}" for m in METRICS), "box_AP", "box_AP50", "prototypes_alive", "prototypes_active",
                   "net_ms", "net_fps", "mask_branch_ms",
                   "proto_ms", "coef_ms", "assemble_ms", "crop_ms", "e2e_ms", "e2e_fps", "infer_peak_MB",
                   "train_peak_MB")
TIME_COLUMNS = frozenset({"net_ms", "net_fps", "mask_branch_ms", "proto_ms", "coef_ms", "assemble_ms", "crop_ms",
                          "e2e_ms", "e2e_fps"})


# --------------------------------------------------------------------------- memory


def _proc_status_kb(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.M)
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak memory above a baseline, in MB, over a ``with`` block (see the module docstring)."""

    def __init__(self, device):
        import torch

        self.torch = torch
        self.cuda = torch.device(device).type == "cuda"
        self.peak_mb: float | None = None
        self.method = ""

    def __enter__(self):
        if self.cuda:
            self.torch.cuda.synchronize()
            self.base = self.torch.cuda.memory_allocated()
            self.torch.cuda.reset_peak_memory_stats()
            self.method = "torch.cuda.max_memory_allocated"
            return self
        reset = False
        try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            reset = True
        except OSError:
            pass
        self.base = _proc_status_kb("VmRSS")
        self.method = "VmHWM - VmRSS" + ("" if reset else " (peak not reset: lower bound)")
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.torch.cuda.synchronize()
            self.peak_mb = (self.torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            hwm = _proc_status_kb("VmHWM")
            if hwm is not None and self.base is not None:
                self.peak_mb = max(0, hwm - self.base) / 1024.0
        return False


# --------------------------------------------------------------------------- recipe


def num_classes_of(annotations: Path) -> int:
    return len(json.loads(Path(annotations).read_text())["categories"])


def build_spec(args, k: int, seed: int, run_dir: Path | None, config: str | None = None) -> dict:
    """Everything a worker needs (JSON).  ``spec["recipe"]`` is what ``--reuse`` and resuming
    compare: identical for every (k, seed) except ``model.num_prototypes`` and ``train.seed``."""
    from yolact_lite.model.priors import anchor_scales_override

    size = [f"model.input_size={args.input_size}", anchor_scales_override(args.input_size)] if args.input_size else []
    if args.cost_only:
        overrides = [*size, *args.set, f"model.num_prototypes={k}"]
        recipe = {"config": config, "overrides": overrides, "device": args.device, "cost_only": True}
    else:
        overrides = [f"model.num_classes={num_classes_of(args.train_json)}", *size,
                     f"train.max_iter={args.steps}", "train.checkpoint_every_iters=0", "train.eval_every_iters=0",
                     *args.set, f"train.seed={seed}", f"model.num_prototypes={k}"]
        recipe = {"config": args.config[0], "overrides": overrides, "steps": args.steps, "device": args.device,
                  "train_json": _rel(args.train_json), "train_images": _rel(args.train_images),
                  "val_json": _rel(args.val_json), "val_images": _rel(args.val_images),
                  "eval_max_images": args.eval_max_images, "pretrained": not args.no_pretrained}
    # cost only: the measure worker takes memory and size; the times come from time_together
    return {"k": k, "seed": seed, "recipe": recipe, "run_dir": str(run_dir) if run_dir else None,
            "threads": args.threads, "repeats": args.repeats, "warmup": args.warmup, "timed": not args.cost_only}


def recipe_id(recipe: dict) -> str:
    """A short fingerprint of a run's recipe, kept in its results row: a later clone, which has
    the committed rows but not the run folders, keeps the rows of the command's own recipe.
    The leading letter keeps it a string when the CSV is read back (a digits-only or "123e45"
    hex digest would be parsed as a number)."""
    return "r" + hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def _rel(path) -> str:
    """A path relative to the repository when inside it (so a recipe compares across clones)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _abs(path: str) -> Path:
    return ROOT / path if not Path(path).is_absolute() else Path(path)


def _config(spec: dict):
    from yolact_lite import load_config

    r = spec["recipe"]
    return load_config(r["config"], r["overrides"])


# --------------------------------------------------------------------------- workers


def build_trainer(spec: dict, extra_hooks=()):
    """The Trainer of one (k, seed): resumed from ``run_dir/train/last.pt`` when a run was cut
    off there.  Checkpoints only let such a run go on where it stopped; resume is bit-exact,
    so they are not part of the recipe."""
    from yolact_lite import with_overrides
    from yolact_lite.engine.checkpointer import read_resume
    from yolact_lite.engine.trainer import Trainer, TrainOptions

    r = spec["recipe"]
    config = with_overrides(_config(spec), [f"train.checkpoint_every_iters={CHECKPOINT_EVERY}"])
    last = Path(spec["run_dir"]) / "train" / "last.pt"
    state = read_resume(last) if last.is_file() else None
    options = TrainOptions(train_json=str(_abs(r["train_json"])), train_images=str(_abs(r["train_images"])),
                           out=str(last.parent), max_iter=r["steps"], device=r["device"],
                           pretrained=r["pretrained"], resume=state is not None)  # progress: a line every 30 s in a log
    return Trainer(config, options, resume_state=state, extra_hooks=extra_hooks)


def worker_train(spec: dict) -> dict:
    """Train one (k, seed) for the fixed number of steps (or what a cut-off run has left),
    evaluate, save ``model.pt``."""
    import torch

    from benchmarks._common import run_conditions
    from yolact_lite.checkpoint.files import model_checkpoint
    from yolact_lite.engine.trainer import make_predictor
    from yolact_lite.evaluation.coco_eval import evaluate

    r = spec["recipe"]
    torch.set_num_threads(spec["threads"])
    run_dir = Path(spec["run_dir"])
    trainer = build_trainer(spec)
    config, resumed_at = trainer.config, trainer.start_iter_from_state
    t0 = time.perf_counter()
    with PeakMemory(trainer.device) as mem:
        result = trainer.fit()
    train_s = time.perf_counter() - t0
    model = trainer.inference_model().eval()
    extra = {"class_names": list(trainer.class_names), "category_ids": list(trainer.category_ids)}
    torch.save(model_checkpoint(model, config.to_dict(), **extra), run_dir / "model.pt")
    t0 = time.perf_counter()
    with torch.no_grad():
        predictor = make_predictor(model, config, trainer.device, extra["class_names"], extra["category_ids"])
        metrics = evaluate(predictor, _abs(r["val_json"]), _abs(r["val_images"]), max_images=r["eval_max_images"],
                           progress=False, leakage=False)
    # only now: until the evaluation is done, a failed worker resumes from this last.pt (0 steps left)
    shutil.rmtree(run_dir / "train", ignore_errors=True)  # its last.pt holds the optimiser too: not needed
    return {"recipe": r, "steps": result.step, "resumed_at_step": resumed_at,
            "skipped_steps": result.skipped_steps, "train_s": train_s, **run_conditions(),
            "eval_s": time.perf_counter() - t0, "precision": trainer.precision, "train_peak_MB": mem.peak_mb,
            "memory_method": mem.method, "val_images": metrics.get("num_images"),
            "box": {m: (metrics.get("box") or {}).get(m) for m in METRICS},
            "mask": {m: (metrics.get("mask") or {}).get(m) for m in METRICS}}


def _measured_model(spec: dict, count_prototypes: bool = True):
    """(predictor, image, prototype use) of one spec: the trained ``model.pt`` of a run folder
    on its first val image, or random weights on the bundled photo with ``cost_only``."""
    import warnings

    from benchmarks._common import load_photo
    from yolact_lite import Predictor

    r = spec["recipe"]
    config = _config(spec)
    if r.get("cost_only"):
        with warnings.catch_warnings():  # random weights are the point here: cost, not detections
            warnings.simplefilter("ignore", UserWarning)
            return Predictor(config, None, device=r["device"], fuse=True), load_photo(), {}
    from yolact_lite.data import load_coco_json, read_image

    val = sorted(load_coco_json(str(_abs(r["val_json"])))["images"], key=lambda im: int(im["id"]))
    image = read_image(_abs(r["val_images"]) / val[0]["file_name"])
    predictor = Predictor(config, str(Path(spec["run_dir"]) / "model.pt"), device=r["device"], fuse=True)
    activity = prototype_use(predictor, [_abs(r["val_images"]) / im["file_name"] for im in val[:ACTIVITY_IMAGES]]) \
        if count_prototypes else {}
    return predictor, image, activity


def candidates(outputs: dict) -> tuple:
    """Coefficients [N, k] and boxes [N, 4] of the ``NUM_MASKS`` priors with the best score
    (first image): what the mask branch assembles and crops."""
    best = outputs["scores"][0].amax(1)
    index = best.topk(min(NUM_MASKS, best.numel())).indices
    return outputs["coefficients"][0][index], outputs["boxes"][0][index].clamp(0, 1)


def timed_pieces(predictor, image) -> dict:
    """``{piece: zero-argument call}`` of one model: ``net``
    (the network), ``e2e`` (``Predictor.predict``) and the mask branch piece by piece:
    ``proto`` (protonet), ``coef`` (coefficient conv + tanh on every level), ``assemble``
    (``sigmoid(P @ C^T)`` for the ``NUM_MASKS`` best-scoring priors) and ``crop``."""
    import torch
    import torch.nn.functional as F

    from yolact_lite.masks import assemble_masks, crop_masks

    m = predictor.config.model
    k, model, head = m.num_prototypes, predictor.model, predictor.model.head
    batch, _ = predictor.preprocess([image])
    padding = predictor.config.inference.crop_padding
    with torch.inference_mode():
        outputs = predictor.network(batch)
        coefs, boxes = candidates(outputs)
        levels = model.fpn(model.backbone(batch)[m.fpn.min_level - 2:])  # the backbone returns C2..C5
        proto_source = levels[m.proto_level - m.fpn.min_level]
        features = [F.relu(head.shared_conv(x)) for x in levels]
        protos = outputs["prototypes"][0]
        soft = assemble_masks(protos, coefs)

    def coefficients():
        flat = [c.permute(0, 2, 3, 1).reshape(c.shape[0], -1, k) for c in (head.coef(x) for x in features)]
        return torch.tanh(torch.cat(flat, 1))

    pieces = {"net": lambda: predictor.network(batch), "e2e": lambda: predictor.predict(image),
              "proto": lambda: model.protonet(proto_source), "coef": coefficients,
              "assemble": lambda: assemble_masks(protos, coefs), "crop": lambda: crop_masks(soft, boxes, padding)}
    return pieces


def worker_measure(spec: dict) -> dict:
    """Latency, mask-branch latency, peak memory and size of one k (fresh process): the
    trained ``model.pt`` of a run folder, or random weights with ``cost_only``."""
    import torch

    from benchmarks._common import median_ms, run_conditions
    from yolact_lite.masks import assemble_masks, crop_masks
    from yolact_lite.model import count_parameters

    torch.set_num_threads(spec["threads"])
    device = spec["recipe"]["device"]
    predictor, image, activity = _measured_model(spec)
    model, head, m = predictor.model, predictor.model.head, predictor.config.model
    repeats, warmup = spec["repeats"], spec["warmup"]
    with torch.inference_mode():
        # peak memory of one forward + the mask branch (the first forward of this process)
        with PeakMemory(device) as mem:
            outputs = predictor.network(predictor.preprocess([image])[0])
            coefs, boxes = candidates(outputs)
            crop_masks(assemble_masks(outputs["prototypes"][0], coefs), boxes, predictor.config.inference.crop_padding)
        prototype_size = list(outputs["prototypes"].shape[1:3])
        del outputs, coefs, boxes
        times = {}
        if spec.get("timed", True):
            pieces = timed_pieces(predictor, image)
            ms = {"net": median_ms(pieces["net"], repeats, warmup, device),
                  "e2e": median_ms(pieces["e2e"], repeats, min(warmup, 1), device)}
            for name in ("proto", "coef", "assemble", "crop"):
                ms[name] = median_ms(pieces[name], repeats * 2, warmup, device)
            times = {**{f"{name}_ms": value for name, value in ms.items()},
                     "mask_branch_ms": ms["proto"] + ms["coef"] + ms["assemble"] + ms["crop"]}
        num_dets = len(predictor.predict(image))
    return {
        **times, "e2e_detections": num_dets, "infer_peak_MB": mem.peak_mb, "memory_method": mem.method,
        "params": count_parameters(model) - (count_parameters(model.semantic_head) if model.semantic_head else 0),
        "mask_params": count_parameters(model.protonet) + count_parameters(head.coef),
        "prototype_size": prototype_size, "input_size": m.input_size,
        **run_conditions(), **activity,
    }


def worker_time_together(specs: list, rounds: int) -> list:
    """The time columns of several models measured side by side in ONE process: after the
    warm-up, each round times one call of every piece of every model, in an order that rotates
    from round to round, so a slow stretch of a shared machine falls on all of them alike
    instead of on whichever ran in it. Medians over ``rounds``; one dict per spec."""
    import statistics

    import torch

    from benchmarks._common import median_ms, run_conditions

    torch.set_num_threads(specs[0]["threads"])
    device = specs[0]["recipe"]["device"]
    with torch.inference_mode():
        models = [timed_pieces(*_measured_model(spec, count_prototypes=False)[:2]) for spec in specs]
        for pieces in models:
            for call in pieces.values():
                for _ in range(specs[0]["warmup"]):
                    call()
        times = [{name: [] for name in pieces} for pieces in models]
        for round_ in range(rounds):
            for i in (round_ + j for j in range(len(models))):
                i %= len(models)
                for name, call in models[i].items():
                    times[i][name].append(median_ms(call, 1, 0, device))
    out = []
    for got in times:
        ms = {name: statistics.median(values) for name, values in got.items()}
        out.append({**{f"{name}_ms": value for name, value in ms.items()},
                    "mask_branch_ms": ms["proto"] + ms["coef"] + ms["assemble"] + ms["crop"], **run_conditions()})
    return out


def prototype_use(predictor, paths: list) -> dict:
    """How many of the k prototypes a trained model uses on ``paths`` (val images): alive
    (above zero on some pixel of some image) and active (above zero on at least ACTIVE_SHARE
    of the pixels, averaged over the images), and each prototype's share."""
    import torch

    from yolact_lite.data import read_image
    from yolact_lite.masks import prototype_activity

    shares = []
    with torch.inference_mode():
        for path in paths:
            batch, _ = predictor.preprocess([read_image(path)])
            shares.append(prototype_activity(predictor.network(batch)["prototypes"]))
    share = torch.stack(shares)  # [images, k]
    return {"prototypes_alive": int((share.amax(0) > 0).sum()),
            "prototypes_active": int((share.mean(0) >= ACTIVE_SHARE).sum()),
            "prototype_share": [round(float(v), 4) for v in share.mean(0)], "activity_images": len(paths)}


def run_worker(mode: str, spec_path: Path) -> None:
    from yolact_lite.io_utils import write_json_atomic

    spec = json.loads(spec_path.read_text())
    if mode == "time":
        result = worker_time_together(spec["specs"], spec["rounds"])
    else:
        result = worker_train(spec) if mode == "train" else worker_measure(spec)
    write_json_atomic(spec_path.parent / f"{mode}_result.json", result, indent=1)


def _child(mode: str, spec_path: Path, log) -> float:
    """Run a worker in a fresh process; its wall time in seconds."""
    cmd = [sys.executable, "-m", "benchmarks.k_sweep", "--worker", mode, "--spec", str(spec_path)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"k_sweep: the {mode} worker failed (exit {proc.returncode}) for {spec_path.parent}")
    log(f"  {mode} worker: {seconds:.0f} s")
    return seconds


# --------------------------------------------------------------------------- rows and statistics


def _r(value, digits: int = 2):
    return None if value is None else round(float(value), digits)


def run_row(k: int, seed: int, train: dict | None, meas: dict, config: str) -> dict:
    """One (k, seed) row of ``{name}_runs.csv`` (one (config, k) row with ``train`` None)."""
    row = {"config": config, "k": k, "seed": seed if train else ""}
    if train:
        row.update({f"mask_{m}": _r(train["mask"][m]) for m in METRICS})
        row.update({"box_AP": _r(train["box"]["AP"]), "box_AP50": _r(train["box"]["AP50"])})
    row.update({
        "net_ms": _r(meas["net_ms"]), "net_fps": _r(1000.0 / meas["net_ms"], 1),
        "mask_branch_ms": _r(meas["mask_branch_ms"]), "proto_ms": _r(meas["proto_ms"]),
        "coef_ms": _r(meas["coef_ms"]), "assemble_ms": _r(meas["assemble_ms"]), "crop_ms": _r(meas["crop_ms"]),
        "e2e_ms": _r(meas["e2e_ms"]), "e2e_fps": _r(1000.0 / meas["e2e_ms"], 1),
        "e2e_detections": meas["e2e_detections"], "infer_peak_MB": _r(meas["infer_peak_MB"], 1),
    })
    if "prototypes_alive" in meas:
        row.update({"prototypes_alive": meas["prototypes_alive"], "prototypes_active": meas["prototypes_active"]})
    if train:
        row.update({"train_peak_MB": _r(train["train_peak_MB"], 1), "steps": train["steps"],
                    "train_s": _r(train["train_s"], 0), "precision": train["precision"],
                    # runs finished before these were recorded leave them blank
                    "train_threads": train.get("threads"), "train_load": _r(train.get("load_avg_1min"), 1),
                    "train_cpu": train.get("cpu")})
    row.update({"params": meas["params"], "mask_params": meas["mask_params"], "input_size": meas["input_size"],
                "timed_threads": meas.get("threads"), "timed_load": _r(meas.get("load_avg_1min"), 1),
                "timed_cpu": meas.get("cpu")})
    if train:
        row["recipe_id"] = recipe_id(train["recipe"])
    return row


def summarise(rows: list) -> list:
    """Per k: mean and sample standard deviation over seeds of every SUMMARY_COLUMNS column."""
    timed_cpu = timing_cpu(rows)
    out = []
    for k in sorted({r["k"] for r in rows}):
        runs = [r for r in rows if r["k"] == k]
        timed = [r for r in runs if (r.get("timed_cpu") or "") == timed_cpu]
        row = {"k": k, "seeds": len(runs), "timed_runs": len(timed)}
        for column in SUMMARY_COLUMNS:
            pool = timed if column in TIME_COLUMNS else runs
            values = [float(r[column]) for r in pool if r.get(column) not in (None, "")]
            if values:
                mean, sd = mean_sd(values)
                row[column] = round(mean, 2)
                row[f"{column}_sd"] = "" if math.isnan(sd) else round(sd, 2)
        row.update({"params": runs[0]["params"], "mask_params": runs[0]["mask_params"]})
        out.append(row)
    return out


def timing_cpu(rows: list) -> str:
    """The CPU that timed most runs ("" for rows from before the column): the summary's times
    average over its runs only, since times from different CPUs do not average."""
    counts = Counter(r.get("timed_cpu") or "" for r in rows)
    return counts.most_common(1)[0][0] if counts else ""


def spread_reading(rows: list, metric: str, reference: int = 32) -> str:
    """Plain words: which k differ from ``reference`` (the paper's default) in ``metric``
    by more than the seed spread."""
    ks = sorted({r["k"] for r in rows})
    if reference not in ks:
        reference = ks[0]
    values = {k: [float(r[metric]) for r in rows if r["k"] == k and r.get(metric) not in (None, "")] for k in ks}
    if min(len(v) for v in values.values()) < 2:
        return f"{metric}: fewer than 2 seeds for some k, so no difference can be told from seed noise."
    beyond, within = [], []
    for k in ks:
        if k == reference:
            continue
        diff, se, big = exceeds_spread(values[reference], values[k])
        (beyond if big else within).append(f"k={k} ({diff:+.2f} +- {se:.2f})")
    text = f"{metric} against k={reference}: "
    text += ("differences beyond the seed spread (more than 2 standard errors): " + ", ".join(beyond)
             if beyond else "NO difference exceeds the seed spread")
    if within:
        text += "; within the spread: " + ", ".join(within)
    return text + "."


# --------------------------------------------------------------------------- output


def plot(summary: list, path: Path, title: str, speed_title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ks = [r["k"] for r in summary]

    def series(column):
        return ([r.get(column, math.nan) for r in summary],
                [r.get(f"{column}_sd") or 0.0 for r in summary])

    for column, label, color in (("mask_AP", "mask AP", "tab:blue"), ("box_AP", "box AP", "tab:orange")):
        mean, sd = series(column)
        axes[0].errorbar(ks, mean, yerr=sd, fmt="o-", capsize=4, color=color, label=label)
    axes[0].set_ylabel("val AP (mean +- sd over seeds)")
    axes[0].set_title(title, fontsize=9)
    for column, label, color in (("net_fps", "network", "tab:red"), ("e2e_fps", "end to end", "tab:purple")):
        mean, sd = series(column)
        axes[1].errorbar(ks, mean, yerr=sd, fmt="s--", capsize=4, color=color, label=label)
    axes[1].set_ylabel("FPS (batch 1)")
    axes[1].set_title(speed_title, fontsize=9)
    paper_ks = sorted(PAPER)
    axes[2].plot(paper_ks, [PAPER[k][0] for k in paper_ks], "o-", color="tab:blue", label="mask AP")
    twin = axes[2].twinx()
    twin.plot(paper_ks, [PAPER[k][1] for k in paper_ks], "s--", color="tab:red", label="FPS")
    twin.set_ylabel("FPS", color="tab:red")
    axes[2].set_ylabel("mask AP")
    axes[2].set_title("paper, Table 2b (COCO val, R-101, Titan Xp)", fontsize=9)
    for ax, xs in zip(axes, (ks, ks, paper_ks)):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(k) for k in xs])
        ax.set_xlabel("k (number of prototypes)")
        ax.grid(alpha=0.3)
        ax.legend(loc="center left" if ax is axes[2] else "lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def paper_table() -> str:
    lines = ["| k | paper mask AP | paper FPS |", "|---|---|---|"]
    lines += [f"| {k} | {ap} | {fps} |" for k, (ap, fps) in PAPER.items()]
    return "\n".join(lines)


def trained_notes(args, spec: dict, rows: list, summary: list, side_by_side: bool = False) -> str:
    r = spec["recipe"]
    shared = [o for o in r["overrides"] if not o.startswith(("model.num_prototypes", "train.seed"))]
    lo, hi = summary[0], summary[-1]
    init = "ImageNet-pretrained backbone" if r["pretrained"] else "random init"
    lines = [
        f"- recipe, identical for every (k, seed) except `model.num_prototypes` and `train.seed`: `{r['config']}` "
        f"+ `{' '.join(shared)}`, {r['steps']} steps, {init}"
        f", precision {rows[0].get('precision')}, device {r['device']}; torch threads and the 1-minute load "
        "average of each run's training and timing in `train_threads`, `train_load`, `timed_threads`, "
        "`timed_load`, and the CPU in `train_cpu`, `timed_cpu` (blank where a run predates them)",
        f"- train `{r['train_json']}`; val `{r['val_json']}` "
        f"({'first ' + str(r['eval_max_images']) + ' images' if r['eval_max_images'] else 'all images'}); "
        "AP = pycocotools COCOeval, percent; seeds per k as in the `seeds` column; `_sd` = sample standard "
        "deviation over seeds; per-run rows in the `_runs` file",
        (f"- times: every run's model side by side in ONE process ({spec['repeats']} rounds of one call per piece "
         "per model, order rotating by round; medians over rounds)" if side_by_side else
         f"- times: each run in its own process after training (medians of {spec['repeats']} calls; re-time all "
         "side by side with `--reuse`)") + "; in the summary, times are means over the runs timed on "
        f"{timing_cpu(rows) or 'one CPU'} (`timed_runs` per k; `timed_cpu` per run): times of different CPUs do "
        "not average; batch 1, fused eval model, first val image; "
        f"mask_branch_ms = proto + coef + assemble + crop for {NUM_MASKS} candidates at prototype resolution; "
        "infer_peak_MB / train_peak_MB: see the module docstring of benchmarks/k_sweep.py",
        f"- prototypes_alive / prototypes_active: of the k prototypes, how many are above zero on some pixel / on "
        f"at least {ACTIVE_SHARE:.0%} of the pixels of the first {ACTIVITY_IMAGES} val images (a dead prototype "
        "adds nothing to any mask; with none alive every mask is empty and mask AP is 0)",
        "- a difference EXCEEDS THE SEED SPREAD when it is more than twice its standard error "
        "sqrt(sd_a^2/n_a + sd_b^2/n_b); with 3 seeds this is a rough screen, not a significance test",
        "- " + spread_reading(rows, "mask_AP"),
        "- " + spread_reading(rows, "box_AP"),
        f"- cost from k={lo['k']} to k={hi['k']}: params +{hi['params'] - lo['params']:,} (coefficient conv and the "
        f"protonet's last 1x1 conv), mask_branch_ms {lo.get('mask_branch_ms')} -> {hi.get('mask_branch_ms')}, "
        f"net_ms {lo.get('net_ms')} -> {hi.get('net_ms')}",
        "- the paper's Table 2b (YOLACT-550 R-101, COCO val2017, Titan Xp), for reference: mask AP moves by 1 point "
        "over k = 8..256, FPS from 33.0 to 29.8:",
        "", paper_table(),
    ]
    if args.smoke:
        lines.insert(0, "- SMOKE RUN: 2 steps at a tiny size: checks that the sweep runs, measures nothing.")
    return "\n".join(lines)


def cost_notes(args, spec: dict) -> str:
    lines = [
        "- no training: random weights (cost only); the config's own input size unless the `input_size` column "
        "says otherwise; the 640x480 bundled street photo",
        f"- times: every k of a config side by side in ONE process (models built together, {spec['warmup']} "
        f"warm-up call(s) each, then {spec['repeats']} rounds that each time one call of every piece of every k, "
        "in an order that rotates by round; medians over rounds), so the differences between k are not "
        "differences between processes; batch 1, fused eval model, "
        f"{spec['threads']} torch threads, device {spec['recipe']['device']}; mask_branch_ms = proto + coef + "
        f"assemble + crop for {NUM_MASKS} candidates at prototype resolution; e2e with random weights depends "
        "on how many candidates pass the thresholds (`e2e_detections`)",
        "- infer_peak_MB (rise of the peak memory over one forward + the mask branch) and the parameter counts: "
        "one fresh process per (config, k)",
        "", paper_table(),
    ]
    if args.smoke:
        lines.insert(0, "- SMOKE RUN: tiny input, 1 timed call: checks that the sweep runs, measures nothing.")
    return "\n".join(lines)


def print_table(rows: list, columns: tuple) -> None:
    print("  ".join(f"{c:>14s}" for c in columns))
    for row in rows:
        print("  ".join(f"{str(row.get(c, '')):>14s}" for c in columns))


# --------------------------------------------------------------------------- parent


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="See the module docstring for what each column means.")
    parser.add_argument("--k", type=int, nargs="+", help=f"values of k (default {' '.join(map(str, DEFAULT_K))})")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds per k (default 0 1 2)")
    parser.add_argument("--config", nargs="+", help=f"config name or YAML path (default {CONFIG}; with "
                                                    f"--cost-only several, default {' '.join(COST_CONFIGS)})")
    parser.add_argument("--set", action="append", default=[], help="extra config override KEY=VALUE (repeatable)")
    parser.add_argument("--train-json", type=Path, default=DATA / "train" / "annotations_person.json")
    parser.add_argument("--train-images", type=Path, default=DATA / "train" / "images")
    parser.add_argument("--val-json", type=Path, default=DATA / "val" / "annotations_person.json")
    parser.add_argument("--val-images", type=Path, default=DATA / "val" / "images")
    parser.add_argument("--steps", type=int, help=f"training steps per run (default {STEPS})")
    parser.add_argument("--input-size", type=int, help="network input (anchors scaled to it); default: the config's")
    parser.add_argument("--eval-max-images", type=int, help="evaluate on the first N val images (default all)")
    parser.add_argument("--no-pretrained", action="store_true", help="random backbone init")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads in the workers")
    parser.add_argument("--repeats", type=int, help="timed calls (default 20; 3 with --cost-only)")
    parser.add_argument("--warmup", type=int, help="untimed calls first (default 3; 1 with --cost-only)")
    parser.add_argument("--runs-dir", type=Path, help="run folders (default runs/NAME)")
    parser.add_argument("--reuse", action="store_true", help="re-time every finished run without retraining")
    parser.add_argument("--fresh", action="store_true", help="retrain every (k, seed), even finished ones")
    parser.add_argument("--cost-only", action="store_true",
                        help="no training: cost of random-weight models per config and k (results/k_sweep_cost.*)")
    parser.add_argument("--name", help="results file stem (default k_sweep, or k_sweep_cost)")
    parser.add_argument("--quick", action="store_true", help="k 8 32, seed 0, 20 steps, 10 val images")
    parser.add_argument("--smoke", action="store_true",
                        help="k 8 16, seed 0, 2 steps at 128 px, 2 val images, 1 timed call (a test, not a result)")
    parser.add_argument("--worker", choices=("train", "measure", "time"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reuse and args.fresh:
        parser.error("--reuse keeps the trained runs and --fresh retrains them: give one")
    if args.cost_only and (args.reuse or args.fresh or args.seeds):
        parser.error("--cost-only trains nothing: --seeds, --reuse and --fresh do not apply")
    if args.quick:
        for key, value in {"k": (8, 32), "seeds": (0,), "steps": 20, "eval_max_images": 10, "repeats": 5}.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    if args.smoke:
        for key, value in SMOKE.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        args.set = [*SMOKE_SET, *args.set]
    args.k = args.k or DEFAULT_K
    args.seeds = args.seeds or DEFAULT_SEEDS
    args.steps = args.steps or STEPS
    args.config = args.config or (list(COST_CONFIGS) if args.cost_only else [CONFIG])
    if not args.cost_only and len(args.config) != 1:
        parser.error("a trained sweep takes one --config (several only with --cost-only)")
    args.repeats = args.repeats or (3 if args.cost_only else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.cost_only else 3)
    bad = [k for k in args.k if k < 1]
    if bad:
        parser.error(f"--k values must be positive (got {bad})")
    if not args.cost_only:
        for path in (args.train_json, args.val_json):
            if not Path(path).is_file():
                parser.error(f"annotations not found: {path}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.spec)
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but CUDA is not available")
    from benchmarks._common import RESULTS_DIR, machine_info, read_results, write_results

    name = args.name or ("k_sweep_cost" if args.cost_only else "k_sweep") + ("_smoke" if args.smoke else "")
    runs = args.runs_dir or (ROOT / "runs" / name)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[k_sweep {time.perf_counter() - started:6.0f}s] {msg}", flush=True)

    log(str(machine_info()))
    if args.cost_only:
        return cost_sweep(args, name, Path(runs), log, write_results)

    log(f"k = {list(args.k)}, seeds {list(args.seeds)}, {args.steps} steps each, {args.config[0]} on {args.device}")

    def write_tables(rows: list, spec: dict, side_by_side: bool = False) -> None:
        summary = summarise(rows)
        notes = trained_notes(args, spec, rows, summary, side_by_side)
        write_results(f"{name}_runs", rows, notes)
        write_results(name, summary, notes)
        # the times are only as comparable as the way they were taken: say which in the plot
        cpu = timing_cpu(rows) or "one CPU"
        speed_title = (f"speed, all runs timed side by side on {cpu}" if side_by_side
                       else f"speed, each run timed alone on {cpu} (load varies)")
        plot(summary, RESULTS_DIR / f"{name}.png", f"this run: {args.config[0]}, {args.steps} steps, {args.device}",
             speed_title)

    rows, spec = [], {}
    together = args.reuse and len(args.k) * len(args.seeds) > 1  # then the side-by-side pass times them
    # rows committed by earlier sessions, whose run folders this clone does not have
    recorded = {} if args.fresh else {(row["k"], row["seed"]): row for row in read_results(f"{name}_runs")
                                      if row.get("recipe_id")}
    for seed in args.seeds:  # seed-major: a sweep stopped early still covers every k
        for k in args.k:
            run_dir = Path(runs) / f"k{k}_s{seed}"
            spec = build_spec(args, k, seed, run_dir)
            rows.append(run_one(args, spec, run_dir, log, retime_alone=args.reuse and not together,
                                recorded=recorded.get((k, seed)), results=f"{name}_runs.csv"))
            rows.sort(key=lambda row: (row["k"], row["seed"]))
            write_tables(rows, spec)  # after every finished run, so an interrupted sweep keeps what it has
    local = [row for row in rows if (Path(runs) / f"k{row['k']}_s{row['seed']}" / "model.pt").is_file()] \
        if together else []
    if local:  # re-timing: every trained model of this machine side by side in one process
        folders = [Path(runs) / f"k{row['k']}_s{row['seed']}" for row in local]
        specs = [json.loads((folder / "spec.json").read_text()) for folder in folders]
        timed = time_together(Path(runs) / "together", specs, args.repeats, log)
        retimed = {(row["k"], row["seed"]): run_row(
            row["k"], row["seed"], json.loads((folder / "train_result.json").read_text()),
            {**json.loads((folder / "measure_result.json").read_text()), **times}, row["config"])
            for row, folder, times in zip(local, folders, timed)}
        rows = [retimed.get((row["k"], row["seed"]), row) for row in rows]
        write_tables(rows, spec, side_by_side=len(local) == len(rows))
    log(f"wrote {RESULTS_DIR / name}.{{csv,md,png}} and {name}_runs.{{csv,md}}")
    print_table(summarise(rows), ("k", "seeds", "mask_AP", "mask_AP_sd", "box_AP", "box_AP_sd", "net_ms",
                                  "mask_branch_ms", "e2e_ms", "infer_peak_MB", "train_peak_MB", "params"))
    return 0


def run_one(args, spec: dict, run_dir: Path, log, retime_alone: bool = False, recorded: dict | None = None,
            results: str = "the results file") -> dict:
    """Train (unless a finished run of the same recipe is there) and measure one (k, seed);
    ``retime_alone``: measure a finished run again in its own process.  ``recorded``: the row
    of this (k, seed) in the results file, kept when its recipe is the command's and this
    machine has no run folder for it (nothing to re-time: its model stayed where it trained)."""
    k, seed = spec["k"], spec["seed"]
    train_file, measure_file = run_dir / "train_result.json", run_dir / "measure_result.json"
    train = json.loads(train_file.read_text()) if train_file.is_file() else None
    finished = (train is not None and train.get("recipe") == spec["recipe"] and (run_dir / "model.pt").is_file()
                and not args.fresh)
    if finished and measure_file.is_file() and not retime_alone:
        log(f"k={k} seed={seed}: finished earlier in {run_dir}: kept")
        return run_row(k, seed, train, json.loads(measure_file.read_text()), spec["recipe"]["config"])
    spec_path = run_dir / "spec.json"
    cut_off = (not finished and not args.fresh and (run_dir / "train" / "last.pt").is_file()
               and spec_path.is_file() and json.loads(spec_path.read_text()).get("recipe") == spec["recipe"])
    if not finished and not cut_off and recorded and recorded.get("recipe_id") == recipe_id(spec["recipe"]):
        log(f"k={k} seed={seed}: finished earlier (row in {results}; no run folder here, so not re-timed): kept")
        return recorded
    if not finished and not cut_off:
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=1))
    if not finished:
        log(f"k={k} seed={seed}: training" + (f", resumed from {run_dir / 'train' / 'last.pt'}" if cut_off else ""))
        _child("train", spec_path, log)
        train = json.loads(train_file.read_text())
    else:
        log(f"k={k} seed={seed}: re-timing the finished run in {run_dir}")
    measure_file.unlink(missing_ok=True)
    _child("measure", spec_path, log)
    row = run_row(k, seed, train, json.loads(measure_file.read_text()), spec["recipe"]["config"])
    log(f"k={k} seed={seed}: {row}")
    return row


def time_together(folder: Path, specs: list, rounds: int, log) -> list:
    """The time columns of ``specs`` measured side by side in one fresh process
    (:func:`worker_time_together`), one dict per spec; the spec list is kept in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps({"specs": specs, "rounds": rounds}, indent=1))
    log(f"timing {len(specs)} models side by side in one process, {rounds} rounds")
    _child("time", folder / "spec.json", log)
    return json.loads((folder / "time_result.json").read_text())


def cost_sweep(args, name: str, runs: Path, log, write_results) -> int:
    """Per config: memory and size of each k in a fresh process, then the time columns of all
    its k side by side in one process (:func:`worker_time_together`)."""
    rows, spec = [], {}
    for config in args.config:
        specs, measured = [], []
        for k in args.k:
            run_dir = runs / f"{Path(config).stem}_k{k}"
            run_dir.mkdir(parents=True, exist_ok=True)
            spec = build_spec(args, k, 0, run_dir, config)
            spec_path = run_dir / "spec.json"
            spec_path.write_text(json.dumps(spec, indent=1))
            log(f"{config} k={k}: memory and size (random weights, fresh process)")
            _child("measure", spec_path, log)
            specs.append(spec)
            measured.append(json.loads((run_dir / "measure_result.json").read_text()))
        timed = time_together(runs / f"{Path(config).stem}_together", specs, args.repeats, log)
        rows += [run_row(k, 0, None, {**meas, **times}, config) for k, meas, times in zip(args.k, measured, timed)]
        write_results(name, rows, cost_notes(args, spec))
    print_table(rows, ("config", "k", "net_ms", "mask_branch_ms", "proto_ms", "coef_ms", "assemble_ms", "crop_ms",
                       "e2e_ms", "infer_peak_MB", "params"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
