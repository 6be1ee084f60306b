"""Do the prototypes survive the first steps of training?  The fine-tune recipe against the
changes that could keep its ReLU prototypes from dying.

For each variant (the CPU fine-tune recipe ``yolact_effl0_finetune`` on the bundled person
set, identical except the variant's config overrides), train the first ``--steps`` steps of
the k sweep's 600-step schedule from the same seed and record, every ``--every`` steps, on that step's training batch:

- ``mean``: the mean prototype value (after the ReLU);
- ``alive``: prototypes above zero on some pixel of the batch;
- ``active``: prototypes above zero on at least 1% of the batch's pixels;
- ``mask_loss`` and ``lr``.

A prototype that is zero everywhere gets no gradient and stays dead; with all k dead every
mask is sigmoid(0) = 0.5 and mask AP is 0 (docs/k_sweep.md).  ``no_mask_loss`` is the
control: the same run without the mask loss, so what changes the prototypes there is not the
mask loss.

    python -m benchmarks.prototype_health                 # k = 8, 80 steps, every variant
    python -m benchmarks.prototype_health --k 32 --steps 120 --variants recipe fix
    python -m benchmarks.prototype_health --smoke         # 2 steps at 128 px: checks it runs

Writes ``results/prototype_health{_smoke}.{csv,md,png}`` (every recorded step) and
``..._summary.{csv,md}`` (per variant: the last step, the lowest mean).  Training is fp32 on
the CPU (bf16 would change what is measured between machines).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import RESULTS_DIR, ROOT, machine_info, write_results
from benchmarks.k_sweep import ACTIVE_SHARE
from yolact_lite import load_config
from yolact_lite.engine.loop import HookBase
from yolact_lite.engine.trainer import Trainer, TrainOptions
from yolact_lite.masks import prototype_activity

DATA = ROOT / "data" / "coco_mini" / "train"
FIX = ["model.coefficient_init=zero", "train.lr_multipliers.protonet=0.1"]
VARIANTS = {
    "recipe": [],
    "no_mask_loss": ["loss.mask_weight=0"],
    "sgd": ["train.optimizer=sgd"],
    "coefficients_zero": FIX[:1],
    "protonet_lr_0.1": FIX[1:],
    "fix": FIX,  # both: coefficient_init=zero + protonet lr x 0.1
}
SMOKE = ["model.input_size=128", "model.anchors.scales=[[5],[11],[22],[44],[89]]", "train.batch_size=2",
         "train.num_workers=0", "train.cache_samples=false"]


class PrototypeRecorder(HookBase):
    """Every ``every`` steps: a row from the prototypes of that step's forward (``latest``,
    filled by a forward hook on the protonet) and the step's loss row; stops the run after
    ``last`` steps (the schedule stays the full run's)."""

    reads = ("last_row",)

    def __init__(self, latest: dict, every: int, last: int, rows: list, variant: str):
        self.latest, self.every, self.last, self.rows, self.variant = latest, every, last, rows, variant

    def after_step(self) -> None:
        step = self.trainer.iter
        if step >= self.last:
            self.trainer.stop_reason = "enough steps for the study"
        elif step % self.every and step != 1:
            return
        prototypes = self.latest["prototypes"]
        share = prototype_activity(prototypes)
        row = self.state.last_row
        self.rows.append({"variant": self.variant, "step": step, "mean": round(float(prototypes.mean()), 4),
                          "alive": int((share > 0).sum()), "active": int((share >= ACTIVE_SHARE).sum()),
                          "mask_loss": round(row.get("mask", float("nan")), 4), "lr": row.get("lr")})


def run_variant(args, name: str, overrides: list, out: Path) -> list:
    config = load_config("yolact_effl0_finetune", [
        "model.num_classes=1", f"model.num_prototypes={args.k}", f"train.seed={args.seed}",
        f"train.max_iter={args.schedule_steps}", "train.checkpoint_every_iters=0", "train.eval_every_iters=0",
        *(SMOKE if args.smoke else []), *overrides])
    options = TrainOptions(train_json=str(args.train_json), train_images=str(args.train_images), out=str(out / name),
                           max_iter=args.schedule_steps, device="cpu", pretrained=not args.smoke, progress=False)
    rows, latest = [], {}
    recorder = PrototypeRecorder(latest, args.every, args.steps, rows, name)
    trainer = Trainer(config, options, extra_hooks=[recorder])
    trainer.model.protonet.register_forward_hook(lambda module, inputs, out: latest.update(prototypes=out.detach()))
    started = time.perf_counter()
    trainer.fit()
    print(f"{name}: {args.steps} steps in {time.perf_counter() - started:.0f} s; last {rows[-1]}", flush=True)
    return rows


def summarise(rows: list) -> list:
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        runs = [r for r in rows if r["variant"] == variant]
        last, low = runs[-1], min(runs, key=lambda r: r["mean"])
        out.append({"variant": variant, "overrides": " ".join(VARIANTS[variant]) or "(the recipe)",
                    "steps": last["step"], "alive_last": last["alive"], "active_last": last["active"],
                    "mean_last": last["mean"], "lowest_mean": low["mean"], "lowest_mean_step": low["step"],
                    "mask_loss_last": last["mask_loss"]})
    return out


def plot(rows: list, k: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        runs = [r for r in rows if r["variant"] == variant]
        steps = [r["step"] for r in runs]
        axes[0].plot(steps, [r["mean"] for r in runs], "o-", ms=3, label=variant)
        axes[1].plot(steps, [r["active"] for r in runs], "o-", ms=3, label=variant)
    axes[0].set_ylabel("mean prototype value (training batch)")
    axes[0].set_yscale("symlog", linthresh=1e-3)
    axes[1].set_ylabel(f"prototypes active on >= {ACTIVE_SHARE:.0%} of pixels (of k={k})")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=8, help="number of prototypes (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--schedule-steps", type=int, default=600,
                        help="the run the lr schedule is planned for (the k sweep's 600): the study sees its start")
    parser.add_argument("--every", type=int, default=5, help="record every so many steps (and step 1 and the last)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-json", type=Path, default=DATA / "annotations_person.json")
    parser.add_argument("--train-images", type=Path, default=DATA / "images")
    parser.add_argument("--name", help="result file stem (default prototype_health[_k{k}][_smoke])")
    parser.add_argument("--smoke", action="store_true", help="2 steps at 128 px, random weights, 2 variants")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.schedule_steps, args.every, args.variants = 2, 4, 1, ["recipe", "fix"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    suffix = (f"_k{args.k}" if args.k != 8 else "") + ("_smoke" if args.smoke else "")
    name = args.name or f"prototype_health{suffix}"
    print(machine_info(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="prototype_health_") as tmp:
        for variant in args.variants:
            rows += run_variant(args, variant, VARIANTS[variant], Path(tmp))
    notes = "\n".join([
        f"- yolact_effl0_finetune, k = {args.k}, seed {args.seed}, the first {args.steps} steps of a "
        f"{args.schedule_steps}-step schedule, fp32, "
        f"{args.threads} torch threads, train `{Path(args.train_json).name}`; "
        "each variant = the recipe + its overrides",
        f"- per recorded step, on that step's training batch: `mean` prototype value after the ReLU, `alive` = "
        f"prototypes above zero on some pixel, `active` = above zero on >= {ACTIVE_SHARE:.0%} of the pixels",
        "- a dead prototype (zero everywhere) gets no gradient and stays dead; see docs/k_sweep.md",
    ] + (["- SMOKE RUN: 2 steps at 128 px, random weights: checks that the study runs, measures nothing"]
         if args.smoke else []))
    summary = summarise(rows)
    write_results(name, rows, notes)
    write_results(f"{name}_summary", summary, notes)
    plot(rows, args.k, RESULTS_DIR / f"{name}.png")
    for row in summary:
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
