#!/usr/bin/env python
"""Number of prototypes k: accuracy, speed, memory and size (the YOLACT paper's Table 2b).

For every k of ``--k`` (default 8 16 32 64 128 256) the SAME recipe is run: same config
(backbone, input size, anchors), same training data and order, same seed, same number of
training iterations (a fixed iteration budget, not wall clock, so AP does not depend on how
busy the machine is), then

* box and mask AP (overall and AP_small, pycocotools) on the validation set, and with
  ``--fit N`` (the CPU default, N = 12) ``fit_*`` AP on the N training images the model was
  trained on: a CPU budget cannot train a model that generalises from coco_mini (val AP stays
  ~0 for every k), but it can fit a dozen images, and how well each k fits the masks it has
  seen is a real, comparable measure of the prototypes' capacity (not of generalisation);
* ``net_ms``: network latency, median, batch 1, the Predictor's fused eval model (BatchNorm
  folded, channels_last) on a real validation image;
* ``mask_branch_ms``: the k-dependent mask path timed piece by piece with the model's own
  modules on the real feature map of that image: protonet on the prototype level
  (``proto_ms``), the coefficient conv + tanh on every pyramid level (``coef_ms``; the shared
  head conv is common to boxes and classes and is not counted), mask assembly
  ``sigmoid(P @ C^T)`` for 100 detections (``assemble_ms``) and their crop (``crop_ms``),
  all at prototype resolution (the final resize to the image does not depend on k). The
  100 "detections" are the 100 priors with the best foreground score, with their decoded
  boxes, so the count does not depend on how well a short run has trained;
* ``infer_peak_MB``: peak memory of one network forward + that 100-detection mask branch;
  CPU: rise of the process's peak RSS (``VmHWM`` of ``/proc/self/status``, reset through
  ``/proc/self/clear_refs`` after loading) in a FRESH subprocess per k; CUDA:
  ``torch.cuda.max_memory_allocated`` above the allocation before the forward;
  ``train_peak_MB`` the same for the training loop (main process only, data-loader workers
  not counted);
* ``params``: parameters of the inference model (BatchNorm folded, training-only semantic
  head excluded); ``mask_params``: protonet + coefficient conv.

Each k trains in its own subprocess (``runs/k_sweep/k{k}``) and is measured in another fresh
one. ``--reuse`` skips training for a k whose run directory holds a finished run of the same
recipe (only the latency / memory part is redone: useful to re-time on a quiet machine).

Defaults (CPU): a FIT run.  ``yolact_effl0`` (ImageNet-pretrained EfficientNet-Lite0,
offline) at a reduced 256 input with the anchor scales scaled by 256/448, batch 2 (BatchNorm
frozen), SGD lr 1e-3 after a 30-step warm-up, constant, gradient-norm clipping at 10, no
augmentation, 160 iterations (40 epochs), trained on the 8 images with 1-4 instances of the
bundled data/coco_mini/train (``--fit 8``; the learning test's kind of images), evaluated on
those 8 (fit_*) and on the bundled val.  ``--fit 0`` trains on the whole training set with
the schedule of a real run (x0.1 steps at 70% and 90%, augmentation as the config says).
GPU / full COCO, same script::

    python -m benchmarks.k_sweep --device cuda --config yolact_resnet50 --iters 100000 \\
        --batch-size 8 --train-json coco/annotations/instances_train2017.json \\
        --train-images coco/train2017 --val-json coco/annotations/instances_val2017.json \\
        --val-images coco/val2017

(on CUDA the input defaults to the config's own size and the lr to 1e-3 x batch/8).
``--quick``: k in {8, 32}, a handful of iterations, 10 validation images.

Writes ``benchmarks/results/k_sweep.{csv,md,png}`` (``k_sweep_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from yolact_lite.io_utils import write_json_atomic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

DEFAULT_K = (8, 16, 32, 64, 128, 256)
QUICK_K = (8, 32)
CPU_INPUT = 256
CPU_ITERS = 160  # fit run on 2 quiet cores: ~100 s of training per k
CUDA_ITERS = 5000
QUICK_ITERS = 4
CPU_FIT = 8  # training images of a CPU "fit" run (see --fit)
QUICK_VAL_IMAGES = 10
# The paper (Bolya et al., ICCV 2019, Table 2b): YOLACT-550 ResNet-101, COCO val2017, Titan Xp.
PAPER = {8: (26.8, 33.0), 16: (27.1, 32.8), 32: (27.7, 32.4), 64: (27.8, 31.7), 128: (27.6, 31.5),
         256: (27.7, 29.8)}  # k: (mask AP, FPS)
NUM_MASKS = 100  # detections in the mask-branch timing


# --------------------------------------------------------------------------- small helpers


def default_split(split: str, bundled_first: bool = False) -> tuple[Path, Path]:
    """(annotations.json, images/) of the shared coco_mini split when present, else the bundled one
    (``bundled_first``: the bundled one, so that a clean clone reproduces the committed results)."""
    from benchmarks._common import SHARED_DATA

    bases = [SHARED_DATA / "coco_mini", ROOT / "data" / "coco_mini"]
    for base in (bases[::-1] if bundled_first else bases):
        folder = base / split
        if (folder / "annotations.json").is_file() and (folder / "images").is_dir():
            return folder / "annotations.json", folder / "images"
    return ROOT / "data" / "coco_mini" / split / "annotations.json", ROOT / "data" / "coco_mini" / split / "images"


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
        self.reset = False
        try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            pass
        self.base = _proc_status_kb("VmRSS")
        self.method = "VmHWM - VmRSS" + ("" if self.reset else " (peak not reset: lower bound)")
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


def scaled_scales(scales, factor: float) -> list:
    return [[round(s * factor, 1) for s in level] for level in scales]


def build_spec(args, k: int, run_dir: Path) -> dict:
    """Everything a worker needs (JSON), and the recipe signature used by ``--reuse``."""
    from yolact_lite import load_config
    from yolact_lite.data import load_coco_json

    base = load_config(args.config, args.set)
    cpu, fit = args.device == "cpu", bool(args.fit)
    size = args.input_size or (CPU_INPUT if cpu else base.model.input_size)
    num_classes = len(load_coco_json(str(args.train_json))["categories"])
    iters = args.iters
    batch = args.batch_size or (2 if fit else 4 if cpu else 8)
    lr = args.lr or (1e-3 if fit else 2e-3 if cpu else 1e-3 * batch / 8)
    # A fit run keeps the lr after warm-up and sees the images unaugmented: augmentation makes
    # every epoch new images, which a few hundred steps cannot fit (box AP ~0.6 vs ~49 without).
    steps = [iters + 1] if fit else sorted({max(1, int(iters * 0.7)), max(1, int(iters * 0.9))})
    workers = args.workers if args.workers is not None else (1 if args.device == "cpu" else 4)
    overrides = [
        f"model.num_classes={num_classes}",
        f"model.input_size={size}",
        f"model.anchors.scales={json.dumps(scaled_scales(base.model.anchors.scales, size / base.model.input_size))}",
        f"train.batch_size={batch}",
        f"train.lr={lr}",
        "train.autoscale_batch=false",
        f"train.warmup_iters={max(1, min(30 if fit else 500, iters // 5))}",
        # unclipped, a short warm-up diverges (initial grad norms ~1e3)
        f"train.grad_clip={10 if fit else 50}",
        f"train.lr_steps={json.dumps(steps)}",
        *(["train.augment=none"] if fit else []),
        f"train.max_iter={iters}",
        f"train.seed={args.seed}",
        f"train.num_workers={workers}",
        "train.eval_every_iters=0",
        f"train.checkpoint_every_iters={max(iters, 1)}",
        *args.set,  # the user's overrides win
        f"model.num_prototypes={k}",
    ]
    recipe = {
        "config": args.config, "overrides": overrides, "iters": iters, "device": args.device,
        "train_json": str(Path(args.train_json).resolve()), "train_images": str(Path(args.train_images).resolve()),
        "val_json": str(Path(args.val_json).resolve()), "val_images": str(Path(args.val_images).resolve()),
        "pretrained": not args.no_pretrained, "eval_max_images": args.eval_max_images, "fit": args.fit,
    }
    return {"k": k, "recipe": recipe, "run_dir": str(run_dir), "threads": args.threads,
            "repeats": args.repeats, "warmup": args.warmup}


def _config(spec: dict):
    from yolact_lite import load_config

    r = spec["recipe"]
    return load_config(r["config"], r["overrides"])


# --------------------------------------------------------------------------- workers


def worker_train(spec: dict) -> dict:
    """Train one k for the fixed budget, evaluate, save ``last.pt``; returns the metrics."""
    import torch

    from yolact_lite.engine.trainer import Trainer, TrainOptions, make_predictor
    from yolact_lite.evaluation import evaluate

    r = spec["recipe"]
    torch.set_num_threads(spec["threads"])
    config = _config(spec)
    options = TrainOptions(train_json=r["train_json"], train_images=r["train_images"], out=spec["run_dir"],
                           max_iter=r["iters"], device=r["device"], pretrained=r["pretrained"], progress=False)
    trainer = Trainer(config, options)
    t0 = time.perf_counter()
    with PeakMemory(trainer.device) as mem:
        result = trainer.fit()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer.model.eval()
    with torch.no_grad():
        predictor = make_predictor(trainer.model, config, trainer.device, trainer.class_names, trainer.category_ids)
        metrics = evaluate(predictor, r["val_json"], r["val_images"], max_images=r["eval_max_images"],
                           progress=False, leakage=False)
        fit = {}
        if r.get("fit"):  # the training images themselves: how well this k can fit them
            fit = evaluate(predictor, r["train_json"], r["train_images"], progress=False, leakage=False)
    eval_s = time.perf_counter() - t0
    box, mask = metrics.get("box") or {}, metrics.get("mask") or {}
    fit_box, fit_mask = fit.get("box") or {}, fit.get("mask") or {}
    return {
        "recipe": r, "steps": result.step, "skipped_steps": result.skipped_steps,
        "train_s": train_s, "eval_s": eval_s, "train_peak_MB": mem.peak_mb, "memory_method": mem.method,
        "val_images": metrics.get("num_images"), "val_detections": metrics.get("num_detections"),
        "box": {key: box.get(key) for key in ("AP", "AP50", "AP_small")},
        "mask": {key: mask.get(key) for key in ("AP", "AP50", "AP_small")},
        "fit_box": {key: fit_box.get(key) for key in ("AP", "AP50", "AP_small")},
        "fit_mask": {key: fit_mask.get(key) for key in ("AP", "AP50", "AP_small")},
    }


def worker_measure(spec: dict) -> dict:
    """Latency, mask-branch latency, peak memory and size of one trained k (fresh process)."""
    import torch
    import torch.nn.functional as F

    from benchmarks._common import median_ms
    from yolact_lite.box_ops import decode
    from yolact_lite.data import load_coco_json, read_image
    from yolact_lite.inference.predictor import Predictor
    from yolact_lite.masks import assemble_masks, crop_masks
    from yolact_lite.model import count_parameters

    r = spec["recipe"]
    torch.set_num_threads(spec["threads"])
    device = r["device"]
    config = _config(spec)
    m = config.model
    k = m.num_prototypes
    repeats, warmup = spec["repeats"], spec["warmup"]

    images = sorted(load_coco_json(r["val_json"])["images"], key=lambda im: int(im["id"]))
    image = read_image(Path(r["val_images"]) / images[0]["file_name"])
    predictor = Predictor(config, str(Path(spec["run_dir"]) / "last.pt"), device=device, fuse=True)
    model = predictor.model
    batch, _ = predictor.preprocess([image])
    first = m.fpn.min_level - 2  # backbone outputs C2..C5
    proto_index = m.proto_level - m.fpn.min_level
    head = model.head

    def coefficients(shared):
        return torch.tanh(torch.cat([head._flatten(head.coef(x), k) for x in shared], 1))

    def branch_inputs(outputs):
        """The 100 best priors (by foreground score): their coefficients and decoded boxes."""
        probs = torch.softmax(outputs["class_logits"][0].float(), -1)[:, 1:].amax(1)
        index = probs.topk(min(NUM_MASKS, probs.numel())).indices
        boxes = decode(outputs["box_deltas"][0][index].float(), outputs["priors"][index].float())
        return index, boxes.clamp(0, 1)

    with torch.inference_mode():
        # peak memory of one forward + the 100-detection mask branch (the first call of this process)
        with PeakMemory(device) as mem:
            outputs = predictor.network(batch)
            index, boxes = branch_inputs(outputs)
            soft = assemble_masks(outputs["prototypes"][0].float(), outputs["coefficients"][0][index].float())
            crop_masks(soft, boxes, config.inference.crop_padding)
            del soft
        net_ms = median_ms(lambda: predictor.network(batch), repeats, warmup, device)
        e2e_ms = median_ms(lambda: predictor.predict(image), max(3, repeats // 2), 1, device)
        num_dets = len(predictor.predict(image))

        # the k-dependent pieces, with the model's own modules on the real feature map
        levels = model.fpn(model.backbone(batch)[first:])
        proto_source = levels[proto_index]
        shared = [F.relu(head.shared_conv(x)) for x in levels]
        pieces_repeats = repeats * 2
        proto_ms = median_ms(lambda: model.protonet(proto_source), pieces_repeats, warmup, device)
        coef_ms = median_ms(lambda: coefficients(shared), pieces_repeats, warmup, device)
        protos = model.protonet(proto_source)[0].float()
        coefs = coefficients(shared)[0][index].float()
        assemble_ms = median_ms(lambda: assemble_masks(protos, coefs), pieces_repeats, warmup, device)
        soft = assemble_masks(protos, coefs)
        crop_ms = median_ms(lambda: crop_masks(soft, boxes, config.inference.crop_padding), pieces_repeats,
                            warmup, device)

    semantic = count_parameters(model.semantic_head) if model.semantic_head is not None else 0
    return {
        "net_ms": net_ms, "e2e_ms": e2e_ms, "e2e_detections": num_dets,
        "proto_ms": proto_ms, "coef_ms": coef_ms, "assemble_ms": assemble_ms, "crop_ms": crop_ms,
        "mask_branch_ms": proto_ms + coef_ms + assemble_ms + crop_ms,
        "infer_peak_MB": mem.peak_mb, "memory_method": mem.method,
        "params": count_parameters(model) - semantic,
        "mask_params": count_parameters(model.protonet) + count_parameters(head.coef),
        "prototype_size": list(protos.shape[:2]), "input_size": m.input_size,
        "threads": torch.get_num_threads(),
    }


def run_worker(mode: str, spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    result = worker_train(spec) if mode == "train" else worker_measure(spec)
    write_json_atomic(Path(spec["run_dir"]) / f"{mode}_result.json", result, indent=1)


# --------------------------------------------------------------------------- parent


def _child(mode: str, spec_path: Path, log) -> float:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # friendlier to a busy machine
    cmd = [sys.executable, "-m", "benchmarks.k_sweep", "--worker", mode, "--spec", str(spec_path)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"k_sweep: the {mode} worker failed (exit {proc.returncode}) for {spec_path.parent}")
    log(f"  {mode} worker: {seconds:.0f} s")
    return seconds


def _row(k: int, train: dict, meas: dict) -> dict:
    def r(v, nd=2):
        return None if v is None else round(float(v), nd)

    fit_mask, fit_box = train.get("fit_mask") or {}, train.get("fit_box") or {}
    fit = {}
    if fit_mask.get("AP") is not None:
        fit = {"fit_mask_AP": r(fit_mask["AP"]), "fit_mask_AP50": r(fit_mask["AP50"]),
               "fit_mask_AP_small": r(fit_mask["AP_small"]), "fit_box_AP": r(fit_box["AP"])}
    return {
        "k": k, **fit,
        "mask_AP": r(train["mask"]["AP"]), "mask_AP50": r(train["mask"]["AP50"]),
        "mask_AP_small": r(train["mask"]["AP_small"]),
        "box_AP": r(train["box"]["AP"]), "box_AP50": r(train["box"]["AP50"]),
        "box_AP_small": r(train["box"]["AP_small"]),
        "net_ms": r(meas["net_ms"]), "net_fps": r(1000.0 / meas["net_ms"]),
        "mask_branch_ms": r(meas["mask_branch_ms"]), "proto_ms": r(meas["proto_ms"]), "coef_ms": r(meas["coef_ms"]),
        "assemble_ms": r(meas["assemble_ms"]), "crop_ms": r(meas["crop_ms"]),
        "e2e_ms": r(meas["e2e_ms"]), "e2e_detections": meas["e2e_detections"],
        "infer_peak_MB": r(meas["infer_peak_MB"], 1), "train_peak_MB": r(train["train_peak_MB"], 1),
        "params": meas["params"], "mask_params": meas["mask_params"],
        "iters": train["steps"], "train_s": r(train["train_s"], 0), "eval_s": r(train["eval_s"], 0),
    }


def plot(rows: list, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ap_key = "fit_mask_AP" if all("fit_mask_AP" in r for r in rows) else "mask_AP"
    panels = [
        (axes[0], [r["k"] for r in rows], [r[ap_key] if r[ap_key] is not None else float("nan") for r in rows],
         [r["net_fps"] for r in rows], title + (" (AP: fit on the training images)" if ap_key != "mask_AP" else ""),
         "network FPS (batch 1)"),
        (axes[1], sorted(PAPER), [PAPER[k][0] for k in sorted(PAPER)], [PAPER[k][1] for k in sorted(PAPER)],
         "paper, Table 2b (COCO, R-101, Titan Xp)", "FPS"),
    ]
    for ax, ks, ap, fps, name, fps_label in panels:
        ax.plot(ks, ap, "o-", color="tab:blue")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_xlabel("k (number of prototypes)")
        ax.set_ylabel("mask AP", color="tab:blue")
        ax.tick_params(axis="y", labelcolor="tab:blue")
        twin = ax.twinx()
        twin.plot(ks, fps, "s--", color="tab:red")
        twin.set_ylabel(fps_label, color="tab:red")
        twin.tick_params(axis="y", labelcolor="tab:red")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _minutes(seconds) -> str:
    return "?" if seconds is None else f"{seconds / 60:.1f}"


def reading(rows: list, recipe: dict) -> str:
    """The honest reading of a sweep, from its own numbers."""
    aps = [r["mask_AP"] for r in rows if r["mask_AP"] is not None]
    lo, hi = rows[0], rows[-1]
    text = [f"- HONEST READING: {recipe['iters']} iterations per k"]
    if recipe["device"] == "cpu" or recipe["iters"] < 100_000:
        text.append(" is a tiny fraction of the paper's 800k-iteration COCO schedule")
    if aps and max(aps) < 1.0:
        text.append(f"; every validation mask AP is below 1 point (max {max(aps):.2f}): the model has not learnt "
                    "to generalise, so the val AP columns say NOTHING about k here (differences are noise)")
    else:
        text.append("; AP differences between k at this budget are MOSTLY NOISE (seed, data order, a small "
                    "validation set), not evidence for or against any k")
    fits = [(row["k"], row["fit_mask_AP"]) for row in rows if row.get("fit_mask_AP") is not None]
    if fits:
        text.append(f". FIT columns (the {recipe['fit']} training images, evaluated after training on them): "
                    "mask AP " + ", ".join(f"k={k}: {ap}" for k, ap in fits) + "; this measures how well k "
                    "prototypes let the model fit masks it has seen (capacity), not how it generalises, and "
                    "one seed per k: differences of a few points are within seed noise")
    text.append(". The paper's own AP spread over k is only ~1 point (26.8-27.8). The cost side is what "
                "this run measures: ")
    if len(rows) > 1:
        text.append(f"params grow by {hi['params'] - lo['params']:,} from k={lo['k']} to k={hi['k']} (all in the "
                    f"coefficient conv and the protonet's last 1x1 conv); mask_branch_ms {lo['mask_branch_ms']} -> "
                    f"{hi['mask_branch_ms']} ms (coef_ms {lo['coef_ms']} -> {hi['coef_ms']}, assemble_ms "
                    f"{lo['assemble_ms']} -> {hi['assemble_ms']}; the protonet's k-independent 3x3 convs dominate "
                    f"proto_ms); net_ms {lo['net_ms']} -> {hi['net_ms']} ms. ")
    text.append("Timings (and the small CPU infer_peak_MB, which the allocator's reuse makes noisy) come from "
                "the machine as it was: on a shared machine differences under ~10-15% are not significant; "
                "re-time on a quiet one with `--reuse` (no retraining).")
    return "".join(text)


def notes_for(args, spec: dict, rows: list, meas: dict, walls: dict, reused: list) -> str:
    r = spec["recipe"]
    paper = ", ".join(f"k={k}: {ap} AP / {fps} FPS" for k, (ap, fps) in PAPER.items())
    shared = [o for o in r["overrides"] if not o.startswith("model.num_prototypes")]
    total_s = sum((w.get("train_wall_s") or 0) + (w.get("measure_wall_s") or 0) for w in walls.values())
    lines = [
        f"- recipe (identical for every k except `model.num_prototypes`): `{r['config']}` "
        f"{'(ImageNet-pretrained backbone)' if r['pretrained'] else '(random init)'}, device {r['device']}, "
        f"{r['iters']} training iterations, overrides `{' '.join(shared)}`",
        (f"- fit: trained on {r['fit']} images of `{args.full_train_json}` (1-4 instances each, fewest "
         "small ones first; no augmentation, constant lr after warm-up), fit_* columns evaluated on those "
         "same images\n" if r.get("fit") else "")
        + f"- train: `{os.path.relpath(r['train_json'], ROOT)}`; val: `{os.path.relpath(r['val_json'], ROOT)}` "
        f"({'first ' + str(r['eval_max_images']) + ' images' if r['eval_max_images'] else 'all images'}); "
        f"AP = pycocotools COCOeval, percent",
        f"- net_ms: median of {spec['repeats']} after {spec['warmup']} warm-up(s), batch 1, input "
        f"{meas.get('input_size')}, fused eval model, {meas.get('threads')} torch thread(s), OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')} in the workers; mask_branch_ms = "
        f"proto_ms + coef_ms + assemble_ms + crop_ms for {NUM_MASKS} detections at prototype resolution "
        f"{meas.get('prototype_size')} (medians of {spec['repeats'] * 2}); e2e_ms = Predictor.predict on the same "
        f"val image with the trained weights (its mask cost depends on e2e_detections, which differ per k)",
        f"- infer_peak_MB: {meas.get('memory_method')} over one forward + the {NUM_MASKS}-detection mask branch, "
        f"fresh process per k; train_peak_MB: same over the training loop (main process only); "
        f"params: inference model (BN folded, semantic head excluded); mask_params: protonet + coefficient conv",
        "- wall time per k (training + evaluation worker, measuring worker): "
        + ", ".join(f"k={k}: {_minutes(w.get('train_wall_s'))} + {_minutes(w.get('measure_wall_s'))} min"
                    for k, w in walls.items())
        + f"; whole sweep {total_s / 60:.1f} min"
        + (f" (training of k = {reused} reused from an earlier run: its original wall time is counted)"
           if reused else ""),
        f"- paper (Bolya et al. 2019, Table 2b, YOLACT-550 R-101, COCO val, Titan Xp) for reference: {paper}",
    ]
    lines.append(reading(rows, r))
    if args.quick:
        lines.append("- QUICK RUN: a handful of iterations, a few validation images: a smoke test, not a result.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="See the module docstring for what each column means.")
    parser.add_argument("--k", type=int, nargs="+", help=f"values of k (default {' '.join(map(str, DEFAULT_K))})")
    parser.add_argument("--config", default="yolact_effl0", help="config name or YAML path")
    parser.add_argument("--set", action="append", default=[], help="extra config override KEY=VALUE (repeatable)")
    parser.add_argument("--train-json", type=Path)
    parser.add_argument("--train-images", type=Path)
    parser.add_argument("--val-json", type=Path)
    parser.add_argument("--val-images", type=Path)
    parser.add_argument("--iters", type=int,
                        help=f"training iterations per k (default {CPU_ITERS} on CPU, {CUDA_ITERS} on CUDA, "
                             f"{QUICK_ITERS} with --quick)")
    parser.add_argument("--input-size", type=int,
                        help=f"network input (anchors scaled to it); default {CPU_INPUT} on CPU, the config's on CUDA")
    parser.add_argument("--batch-size", type=int, help="default 4 on CPU (BatchNorm frozen), 8 on CUDA")
    parser.add_argument("--lr", type=float, help="default 2e-3 on CPU, 1e-3 x batch/8 on CUDA")
    parser.add_argument("--workers", type=int, help="data-loader workers (default 1 on CPU, 4 on CUDA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-max-images", type=int,
                        help=f"evaluate on the first N val images ({QUICK_VAL_IMAGES} with --quick)")
    parser.add_argument("--fit", type=int, metavar="N",
                        help="train on the first N annotated training images only and also report fit_* AP on "
                             f"those same images (default {CPU_FIT} on CPU, 0 = off on CUDA and with --quick)")
    parser.add_argument("--no-pretrained", action="store_true", help="random backbone init")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads in the workers")
    parser.add_argument("--repeats", type=int, help="timed network calls (default 20; 5 with --quick)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs-dir", type=Path, help="per-k run folders (default runs/k_sweep[_quick])")
    parser.add_argument("--reuse", action="store_true",
                        help="skip training for a k whose run folder has a finished run of the same recipe")
    parser.add_argument("--name", help="results file stem (default k_sweep, or k_sweep_quick)")
    parser.add_argument("--quick", action="store_true", help="k 8 and 32, a handful of iterations, 10 val images")
    parser.add_argument("--worker", choices=("train", "measure"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        run_worker(args.worker, args.spec)
        return 0

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but CUDA is not available")
    if args.fit is None:
        args.fit = CPU_FIT if args.device == "cpu" and not args.quick else 0
    tj, ti = default_split("train", bundled_first=bool(args.fit))
    vj, vi = default_split("val", bundled_first=bool(args.fit))
    args.train_json, args.train_images = args.train_json or tj, args.train_images or ti
    args.val_json, args.val_images = args.val_json or vj, args.val_images or vi
    for p in (args.train_json, args.val_json):
        if not Path(p).is_file():
            raise SystemExit(f"error: {p} not found")
    args.full_train_json = args.train_json
    ks = args.k or (QUICK_K if args.quick else DEFAULT_K)
    if args.iters is None:
        args.iters = QUICK_ITERS if args.quick else (CPU_ITERS if args.device == "cpu" else CUDA_ITERS)
    if args.quick and args.eval_max_images is None:
        args.eval_max_images = QUICK_VAL_IMAGES
    if args.repeats is None:
        args.repeats = 5 if args.quick else 20
    if args.quick:
        args.warmup = min(args.warmup, 2)
    name = args.name or ("k_sweep_quick" if args.quick else "k_sweep")
    runs = args.runs_dir or (ROOT / "runs" / name)
    if args.fit:
        from benchmarks._common import fit_subset

        args.train_json = fit_subset(args.full_train_json, args.fit, Path(runs) / f"fit{args.fit}.json")

    from benchmarks._common import RESULTS_DIR, machine_info, write_results

    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[k_sweep {time.perf_counter() - started:6.0f}s] {msg}", flush=True)

    log(f"k = {list(ks)}, {args.iters} iterations each, {args.config} on {args.device}; "
        f"train {args.train_json}, val {args.val_json}")
    log(str(machine_info()))
    rows, reused, spec, meas, walls = [], [], {}, {}, {}
    for k in ks:
        run_dir = Path(runs) / f"k{k}"
        spec = build_spec(args, k, run_dir)
        train_file = run_dir / "train_result.json"
        train = None
        if args.reuse and train_file.is_file() and (run_dir / "last.pt").is_file():
            saved = json.loads(train_file.read_text())
            if saved.get("recipe") == spec["recipe"]:
                train = saved
                reused.append(k)
                log(f"k={k}: reusing the finished run in {run_dir}")
        if train is None:
            if run_dir.exists():
                shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        spec_path = run_dir / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        wall_file = run_dir / "wall.json"
        wall = json.loads(wall_file.read_text()) if train is not None and wall_file.is_file() else {}
        if train is None:
            log(f"k={k}: training")
            wall["train_wall_s"] = _child("train", spec_path, log)
            train = json.loads(train_file.read_text())
        log(f"k={k}: measuring")
        (run_dir / "measure_result.json").unlink(missing_ok=True)
        wall["measure_wall_s"] = _child("measure", spec_path, log)
        wall_file.write_text(json.dumps(wall))
        walls[k] = wall
        meas = json.loads((run_dir / "measure_result.json").read_text())
        rows.append(_row(k, train, meas))
        log(f"k={k}: {rows[-1]}")
        # results after every k, so that an interrupted sweep keeps what it has
        notes = notes_for(args, spec, rows, meas, walls, reused)
        write_results(name, rows, notes)
    png = RESULTS_DIR / f"{name}.png"
    label = f"this run: {args.config} @ {meas.get('input_size')}, {args.iters} it, {args.device}"
    plot(rows, png, label)
    csv_path, md_path = write_results(name, rows, notes_for(args, spec, rows, meas, walls, reused))
    log(f"wrote {csv_path}, {md_path} and {png}")
    columns = ("k", "mask_AP", "box_AP", "mask_AP_small", "box_AP_small", "net_ms", "mask_branch_ms",
               "infer_peak_MB", "params")
    print("  ".join(f"{c:>14s}" for c in columns))
    for row in rows:
        print("  ".join(f"{str(row[c]):>14s}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
