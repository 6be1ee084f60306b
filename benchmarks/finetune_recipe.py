"""The CPU fine-tuning recipe, one lever at a time: person val AP after a FIXED number of steps.

Every row trains ``yolact_lite/configs/yolact_effl0_finetune.yaml`` (+ the row's overrides) on the bundled
person training set (``data/coco_mini/train/annotations_person.json``: the 101 COCO images with
people, and one without) for ``--steps`` steps from the ImageNet backbone, then evaluates the
inference weights (EMA when on) with pycocotools on ALL 90 bundled val images, person
annotations only (so false positives on person-free images count).  A few rows train on
another set (``ROW_TRAIN_SET``: the same images with all 80 classes, or all 209 images of the
shared set with person-free ones as negatives); an 80-class model is evaluated on its person
logits alone (:func:`yolact_lite.checkpoint.files.keep_classes`).  A fixed step count makes
rows comparable across CPUs and loads; ``s_per_step`` says what each costs on this machine.

    python -m benchmarks.finetune_recipe [--steps 300 | --minutes 15] [--seeds 0 1] [--rows baseline aug_ssd ...]
        [--config yolact_effl0_finetune_384] [--precision fp32]

``--minutes M`` trains each run for a wall-clock budget instead (``yolact-lite train
--max-minutes``: the cosine schedule is fitted to the steps that fit), for comparisons at a
user's budget; then AP also depends on the machine and its load, so run the rows of one
comparison on one quiet machine.

Each run also gets the TIDE breakdown (:mod:`yolact_lite.evaluation.tide`) of its boxes and
masks: ``{box,mask}_tide_{loc,dupe,bkg,miss,fp,fn}``, AP50 points gained by fixing that error
type alone (``cls`` and ``both`` need a second class and are 0 for a person model).  The
markdown opens with a summary per (row, budget): mean and sample standard deviation over
seeds, and whether the row differs from ``baseline`` by more than the seed spread.

Resumable: rows already in the results file (same row, seed, budget and precision) are kept,
so running the same command again trains only what is missing; a run cut off mid-training
goes on from its checkpoint in ``runs/finetune_recipe/NAME/ROW_sSEED`` (a budget run goes on to
the step count its plan fixed).

Rows go to ``benchmarks/results/finetune_recipe.{csv,md,png}`` for the recipe and
``finetune_recipe_384.*`` for the 384 px variant (``--name`` to change).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import RESULTS_DIR, SHARED_DATA, machine_info, read_results, run_conditions, write_results
from benchmarks._seeds import exceeds_spread, mean_sd
from yolact_lite.checkpoint.files import carried_config, keep_classes, model_checkpoint
from yolact_lite.config import load_config, with_overrides
from yolact_lite.engine.checkpointer import read_resume
from yolact_lite.engine.trainer import Trainer, TrainOptions
from yolact_lite.evaluation.coco_eval import coco_evaluate, evaluate, load_coco_gt
from yolact_lite.hardware import bf16_supported
from yolact_lite.inference.predictor import Predictor
from yolact_lite.model.priors import anchor_scales_override

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT / "data" / "coco_mini"
TRAIN_JSON, TRAIN_IMAGES = DATA / "train" / "annotations_person.json", DATA / "train" / "images"
VAL_JSON, VAL_IMAGES = DATA / "val" / "annotations_person.json", DATA / "val" / "images"
CONFIG = "yolact_effl0_finetune"
CHECKPOINT_EVERY = 50  # steps: a run cut off (the end of a session, a kill) loses at most this many

ROWS = {
    "baseline": [],
    "aug_none": ["train.augment=none"],
    "aug_ssd": ["train.augment=ssd"],
    "frozen_all": ["model.backbone.frozen_stages=-1"],
    "frozen_none": ["model.backbone.frozen_stages=0"],
    "square_anchors": ["model.anchors.square_anchors=true"],
    "no_ema": ["train.ema_decay=0"],
    "input_384": ["model.input_size=384", anchor_scales_override(384)],
    "input_448": ["model.input_size=448", anchor_scales_override(448)],
    "sgd": ["train.optimizer=sgd", "train.lr=5e-3", "train.weight_decay=5e-4"],
    "mask_weight_x2": ["loss.mask_weight=12.25"],
    "small_mask_weight": ["loss.mask_size_weight_power=0.5"],
    "weight_decay_0.05": ["train.weight_decay=0.05"],
    "width_256": ["model.fpn.num_features=256", "model.protonet_channels=256", "model.head_channels=256"],
    # narrower FPN / protonet / heads at 448: the protonet's 3x3 convs at stride 8 and 4 are about half
    # the network's multiply-adds at 128 channels (docs/inference.md), so these are the real-time levers
    "width_96": ["model.fpn.num_features=96", "model.protonet_channels=96", "model.head_channels=96"],
    "width_64": ["model.fpn.num_features=64", "model.protonet_channels=64", "model.head_channels=64"],
    "p2_level": ["model.fpn.min_level=2", "model.anchors.scales=[[9],[19],[39],[78],[156],[312]]"],
    "p2_protos": ["model.fpn.min_level=2", "model.proto_level=2",
                  "model.anchors.scales=[[9],[19],[39],[78],[156],[312]]"],  # = yolact_effl0_small
    "focal": ["loss.classification=focal"],
    "negatives_focal": ["loss.classification=focal", "train.empty_images=true"],
    "all_classes": [],
    "all_classes_209": [],
    # issue 25's levers (docs/augmentation.md, "Ablation"): screen each at 600 steps, 2 seeds
    "lsj": ["train.augment.scale_range=[0.1,2.0]"],
    # between the recipe's zoom (0.6-2.0) and large-scale jitter: shrinks people less far
    "lsj_mild": ["train.augment.scale_range=[0.3,2.0]"],
    "copy_paste": ["train.augment.copy_paste=0.5"],
    "mosaic": ["train.augment.mosaic=0.5"],
    "mask_rescoring": ["model.mask_iou_head=true"],
    # keeps the prototypes alive (docs/k_sweep.md, benchmarks/prototype_health.py)
    "prototypes_alive": ["model.coefficient_init=zero", "train.lr_multipliers.protonet=0.1"],
}
# Rows trained on another set than the bundled person set (training_set()), then evaluated like
# every row: a many-class model keeps only its person logits (checkpoint.keep_classes).
ROW_TRAIN_SET = {"negatives_focal": "shared_person_209", "all_classes": "bundled_all_classes",
                 "all_classes_209": "shared_all_classes_209"}


# TIDE error types of a one-class model (cls and both need a second class), and the FP / FN totals.
TIDE_COLUMNS = ("loc", "dupe", "bkg", "miss", "fp", "fn")
# Columns of the markdown summary (mean and standard deviation over seeds), and the ones a row is
# judged on against the baseline.
SUMMARY_COLUMNS = ("mask_AP", "box_AP", "mask_AP_S", "mask_AP_M", "mask_AP_L",
                   *(f"mask_tide_{t}" for t in TIDE_COLUMNS))
VERDICT_COLUMNS = ("mask_AP", "box_AP", "mask_AP_M")  # a subset of SUMMARY_COLUMNS

SMOKE_OVERRIDES = ["model.input_size=128", anchor_scales_override(128), "train.batch_size=2",
                   "train.cache_samples=false", "train.num_workers=0"]


def recipe_config(seed: int, amp: bool, overrides=(), config_name: str = CONFIG):
    """The recipe (or its variant ``config_name``) + ``overrides`` (1 class unless they say
    otherwise), no periodic checkpoints."""
    fixed = [f"train.seed={seed}", "train.checkpoint_every_iters=0",
             f"train.amp={'true' if amp else 'false'}"]
    return load_config(config_name, ["model.num_classes=1"] + list(overrides) + fixed)


def training_set(name: str, tmp: Path) -> tuple:
    """(annotation json, image folder, number of classes) of a row's training set.

    ``person``: the bundled person set; ``bundled_all_classes``: the same 102 images with all
    their COCO classes; ``shared_*_209``: all 209 training images of the shared set
    (``benchmarks._common.SHARED_DATA``), either with all classes or with person annotations
    only (107 person-free images then serve as negatives)."""
    if name == "person":
        return TRAIN_JSON, TRAIN_IMAGES, 1
    if name == "bundled_all_classes":
        path = DATA / "train" / "annotations.json"
        return path, TRAIN_IMAGES, len(json.loads(path.read_text())["categories"])
    shared = SHARED_DATA / "coco_mini" / "train"
    if not (shared / "annotations.json").is_file():
        raise SystemExit(f"error: row needs the shared data set at {SHARED_DATA} (set YOLACT_LITE_SHARED_DATA)")
    data = json.loads((shared / "annotations.json").read_text())
    if name == "shared_all_classes_209":
        return shared / "annotations.json", shared / "images", len(data["categories"])
    person = [c for c in data["categories"] if c["name"] == "person"]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] == person[0]["id"]]
    data["categories"] = person
    (tmp / "person_209.json").write_text(json.dumps(data))
    return tmp / "person_209.json", shared / "images", 1


def person_metrics(trainer: Trainer, max_images=None, results_dir: Path | None = None) -> dict:
    """pycocotools metrics and the TIDE breakdown of the run's inference weights on the person
    val set (person logits only when the model has more classes); with ``results_dir`` the
    detections are also written there (:func:`yolact_lite.evaluation.coco_eval.evaluate`)."""
    ckpt = model_checkpoint(trainer.inference_model(), trainer.config.to_dict(),
                            class_names=list(trainer.class_names), category_ids=list(trainer.category_ids))
    if len(trainer.class_names) > 1:
        ckpt = keep_classes(ckpt, ["person"])
    with torch.no_grad():
        predictor = Predictor(carried_config(ckpt), weights=ckpt)
        return evaluate(predictor, VAL_JSON, VAL_IMAGES, max_images=max_images, progress=False, tide=True,
                        results_dir=results_dir)


def unrescored_columns(config, results_dir: Path, max_images=None) -> dict:
    """For a model with YOLACT++'s mask-IoU head, ``mask_AP_unrescored``: mask AP of the
    detections :func:`person_metrics` wrote to ``results_dir`` with each mask scored by its
    box's score, so a row tells the re-scoring's share of its mask AP from what the head's
    loss did to the rest of the network; ``{}`` for other models.  Evaluation applies no
    display filter, so re-scoring changes the masks' scores only, not which are kept, and
    the box and mask results are the same detections in the same order."""
    if not (config.model.mask_iou_head and config.inference.rescore_masks):
        return {}
    boxes = json.loads((results_dir / "bbox_detections.json").read_text())
    masks = json.loads((results_dir / "mask_detections.json").read_text())
    by_box_score = [{**mask, "score": box["score"]} for box, mask in zip(boxes, masks, strict=True)]
    ground_truth = load_coco_gt(VAL_JSON)
    image_ids = sorted(ground_truth.getImgIds())[:max_images]
    metrics = coco_evaluate(ground_truth, boxes, by_box_score, image_ids=image_ids)
    return {"mask_AP_unrescored": metrics["mask"]["AP"]}


def tide_columns(metrics: dict) -> dict:
    """``{box,mask}_tide_{type}``: the dAP of each TIDE_COLUMNS type (None where nothing was scored)."""
    out = {}
    for kind in ("box", "mask"):
        breakdown = metrics["tide"][kind]
        values = {**breakdown["dap"], "fp": breakdown["dap_fp"], "fn": breakdown["dap_fn"]}
        out.update({f"{kind}_tide_{t}": None if values[t] is None else round(values[t], 2) for t in TIDE_COLUMNS})
    return out


def budget_label(steps, minutes) -> str:
    """``"600 steps"`` or, with ``minutes``, ``"15 min"``: rows compare within one budget."""
    return f"{float(minutes):g} min" if minutes not in (None, "") else f"{int(steps)} steps"


def budget_of(row: dict) -> str:
    """What a result row trained for (:func:`budget_label`)."""
    return budget_label(row["steps"], row.get("minutes"))


def row_key(row: dict) -> tuple:
    """What makes two result rows the same run: row, seed, budget and precision (its first
    word: rows record the trainer's description, ``"bf16 autocast (this CPU has ...)"``)."""
    return row["row"], row["seed"], budget_of(row), str(row["precision"]).split()[0]


def recorded_rows(name: str) -> dict:
    """The rows of ``results/{name}.csv`` by :func:`row_key`."""
    return {row_key(r): r for r in read_results(name)}


def run_row(name: str, seed: int, steps: int | None, amp: bool, config_name: str = CONFIG, smoke: bool = False,
            run_dir: Path | None = None, extra_hooks=(), minutes: float | None = None) -> dict:
    """One (row, seed) run of ``steps`` steps, or of a ``minutes`` budget (then ``steps`` is
    None); ``smoke``: at 128 px, batch 2, no sample cache, evaluated on 2 images.

    ``run_dir``: train there with a checkpoint every ``CHECKPOINT_EVERY`` steps, going on from a
    ``last.pt`` of the same config left by a run that was cut off (resume is bit-exact, so the
    row is that of an uninterrupted run; ``train_s`` then counts the last stretch); the folder
    is removed once the row is measured.  Without it the run lives in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        train_json, train_images, num_classes = training_set(ROW_TRAIN_SET.get(name, "person"), Path(tmp))
        tiny = SMOKE_OVERRIDES if smoke else []
        config = recipe_config(seed, amp, ROWS[name] + [f"model.num_classes={num_classes}"] + tiny, config_name)
        out, state = Path(tmp) / "run", None
        if run_dir is not None:
            out, config = run_dir, with_overrides(config, [f"train.checkpoint_every_iters={CHECKPOINT_EVERY}"])
            state = read_resume(out / "last.pt") if (out / "last.pt").is_file() else None
            if state is not None and state.config != config.to_dict():  # another recipe: start again
                shutil.rmtree(out)
                state = None
        options = TrainOptions(train_json=str(train_json), train_images=str(train_images), out=str(out),
                               max_iter=steps, max_minutes=minutes, progress=not smoke, resume=state is not None)
        trainer = Trainer(config, options, resume_state=state, extra_hooks=extra_hooks)
        start = trainer.start_iter_from_state
        del state
        t0 = time.perf_counter()
        result = trainer.fit()
        seconds = time.perf_counter() - t0
        detections = Path(tmp) / "detections"
        metrics = person_metrics(trainer, 2 if smoke else None, detections)
        unrescored = unrescored_columns(trainer.config, detections, 2 if smoke else None)
        if run_dir is not None:
            shutil.rmtree(run_dir)
    box, mask = metrics["box"], metrics["mask"]
    row = {"row": name, "seed": seed, "steps": result.step, **({"minutes": minutes} if minutes else {}),
           "train_set": ROW_TRAIN_SET.get(name, "person"), "overrides": " ".join(ROWS[name]) or "-",
           "mask_AP": mask["AP"], "mask_AP50": mask["AP50"], "box_AP": box["AP"], "box_AP50": box["AP50"],
           "mask_AP_S": mask.get("AP_small"), "mask_AP_M": mask.get("AP_medium"), "mask_AP_L": mask.get("AP_large"),
           **tide_columns(metrics), **unrescored,
           "train_s": round(seconds, 1), "s_per_step": round(seconds / max(result.step - start, 1), 2),
           "precision": trainer.precision, **measured_at()}
    print(json.dumps(row), flush=True)
    return row


def measured_at() -> dict:
    """The torch threads, load and time a result row was measured at."""
    return {**run_conditions(), "date": machine_info()["date"][:16]}


def plot(rows, path: Path, config_name: str = CONFIG) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["row"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for i, name in enumerate(names):
        runs = [r for r in rows if r["row"] == name]
        for offset, key, color in ((-0.1, "mask_AP", "tab:blue"), (0.1, "box_AP", "tab:orange")):
            values = [r[key] for r in runs if r[key] is not None]  # None: nothing to score
            first = i == 0  # one legend entry per metric, not one per seed
            ax.scatter([i + offset] * len(values), values, color=color, label=key.replace("_", " ") if first else None)
            if values:
                ax.scatter(i + offset, sum(values) / len(values), color="black", marker="_", s=300,
                           label="mean of seeds" if first and key == "box_AP" else None)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("person val AP (90 images)")
    budgets = ", ".join(dict.fromkeys(budget_of(r) for r in rows))
    ax.set_title(f"{config_name}, {budgets} per row (dots: seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=300, help="steps per run (default 300)")
    budget.add_argument("--minutes", type=float, help="a wall-clock training budget per run instead of --steps")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--config", default=CONFIG, help="the recipe variant the rows change")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", help="results file stem (default: finetune_recipe[_<variant>])")
    ap.add_argument("--precision", choices=("auto", "fp32"), default="auto",
                    help="auto: bf16 where the CPU has it natively; fp32: on every CPU, so that runs of one "
                         "study on different machines compare")
    ap.add_argument("--runs-dir", type=Path, help="run folders, kept until each row is measured "
                                                  "(default runs/finetune_recipe/NAME)")
    ap.add_argument("--fresh", action="store_true",
                    help="drop the rows of earlier runs (else finished rows are kept and only missing ones trained)")
    ap.add_argument("--smoke", action="store_true", help="row baseline, 2 steps at 128 px, 2 val images: a test "
                                                         "that it runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rows, args.steps = ["baseline"], 2
    if args.minutes is not None and args.minutes <= 0:
        ap.error(f"--minutes must be positive (got {args.minutes:g})")
    steps = None if args.minutes else args.steps
    budget = budget_label(args.steps, args.minutes)
    variant = args.config[len(CONFIG):] if args.config.startswith(CONFIG) else "_" + Path(args.config).stem
    args.name = args.name or "finetune_recipe" + variant
    runs = args.runs_dir or (None if args.smoke else ROOT / "runs" / "finetune_recipe" / args.name)
    torch.set_num_threads(args.threads)
    amp = args.precision == "auto" and bf16_supported("cpu")
    precision = "bf16" if amp else "fp32"
    done = {} if args.fresh else recorded_rows(args.name)
    for seed in args.seeds:  # seed-major: a study stopped early still has every row once
        for name in args.rows:
            if (name, seed, budget, precision) in done:
                print(f"{name} seed {seed}: finished earlier ({budget}, {precision}): kept", flush=True)
                continue
            row = run_row(name, seed, steps, amp, args.config, smoke=args.smoke,
                          run_dir=runs / f"{name}_s{seed}" if runs else None, minutes=args.minutes)
            done[row_key(row)] = row
            # rows another screen wrote to the same file meanwhile are kept, not overwritten
            done = {**({} if args.fresh else recorded_rows(args.name)), **done}
            write_rows(args.name, list(done.values()), args.config, budget, amp, args.threads)
    print(json.dumps(machine_info()))


def summarise(rows) -> list:
    """Per (row, budget, precision), in ROWS order: the number of seeds and, for each
    SUMMARY_COLUMNS column, ``(mean, sd)`` over them (absent where no run has the column)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["row"], budget_of(r), r["precision"]), []).append(r)
    out = []
    for (name, budget, precision), runs in sorted(groups.items(), key=lambda g: list(ROWS).index(g[0][0])):
        entry = {"row": name, "budget": budget, "precision": precision, "seeds": len(runs), "values": {}}
        for column in SUMMARY_COLUMNS:  # VERDICT_COLUMNS are among them: verdict() reads their values
            values = [float(r[column]) for r in runs if r.get(column) not in (None, "")]
            entry["values"][column] = values
            if values:
                entry[column] = mean_sd(values)
        out.append(entry)
    return out


def verdict(entry: dict, baseline: dict | None) -> str:
    """Plain words: where ``entry`` differs from the baseline row of its budget by more than the
    seed spread (more than 2 standard errors of the difference of the means)."""
    if baseline is None:
        return "no baseline at this budget"
    if entry is baseline:
        return "the reference"
    if min(entry["seeds"], baseline["seeds"]) < 2:
        return "fewer than 2 seeds: not comparable with seed noise"
    words = []
    for column in VERDICT_COLUMNS:
        a, b = baseline["values"][column], entry["values"][column]
        if len(a) < 2 or len(b) < 2:
            continue
        diff, se, beyond = exceeds_spread(a, b)
        words.append(f"{column} {diff:+.2f} +- {se:.2f}" + (" BEYOND the spread" if beyond else ""))
    return "; ".join(words)


def summary_table(rows) -> str:
    """The markdown summary: mean +- sd over seeds per (row, budget), and the verdict."""
    def cell(value):
        if value is None:
            return "-"
        mean, sd = value
        return f"{mean:.2f}" if math.isnan(sd) else f"{mean:.2f} +- {sd:.2f}"

    summary = summarise(rows)
    baselines = {(e["budget"], e["precision"]): e for e in summary if e["row"] == "baseline"}
    header = ["row", "budget", "precision", "seeds", *SUMMARY_COLUMNS, "against baseline (diff +- standard error)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in summary:
        cells = [e["row"], e["budget"], e["precision"], str(e["seeds"]), *(cell(e.get(c)) for c in SUMMARY_COLUMNS),
                 verdict(e, baselines.get((e["budget"], e["precision"])))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_rows(name: str, rows, config_name: str, budget: str, amp: bool, threads: int) -> None:
    """``benchmarks/results/{name}.{csv,md,png}`` from every row of the file."""
    rows = sorted(rows, key=lambda r: (list(ROWS).index(r["row"]), int(r["seed"])))
    for r in rows:  # rows from before the column existed all trained on the person set
        r["train_set"] = r.get("train_set") or "person"
    notes = (f"{config_name} + the row's overrides, {budget} per run, seeds as listed, "
             f"{'bf16' if amp else 'fp32'}, torch threads per run in `threads` ({threads} in the last "
             "command); person val AP (pycocotools, 90 images, "
             "person annotations only). s_per_step includes data loading (2 workers), not "
             "the evaluation; compare AP across rows, time only between rows of the same date (one run). "
             "TIDE columns: AP50 points gained by fixing that error type alone (docs/tide.md).\n\n"
             "Summary: mean +- sample standard deviation over seeds. A row differs from the baseline "
             "BEYOND the spread when the difference of the means is more than twice its standard error; "
             "with 2-3 seeds this is a rough screen, not a significance test.\n\n" + summary_table(rows)
             + "\n\nEvery run:")
    write_results(name, rows, notes)
    plot(rows, RESULTS_DIR / f"{name}.png", config_name)


if __name__ == "__main__":
    main()
