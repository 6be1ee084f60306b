"""Training steps with glibc's default allocator behaviour against ``keep_freed_memory``.

Each run is a fresh process (the allocator settings are process-wide and stick), the two
variants alternate round by round: ``default`` (``TrainOptions(keep_freed_memory=False)``:
glibc maps large blocks fresh and returns them on free) and ``kept`` (the trainer's default:
freed blocks stay in the process for reuse).  A run trains the CPU recipe
(``yolact_effl0_finetune``, batch 8 at 448, fp32) on the bundled person set for ``--steps``
steps; per run: the median step time from ``log.csv`` (the first two steps left out), and
the kernel time and minor page faults of the process over ``fit``.  The weights checksum of
both variants must be equal: the setting changes where memory comes from, not what is
computed.

    python -m benchmarks.allocator [--steps 8] [--rounds 2] [--smoke]
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._common import machine_info, write_results
from yolact_lite.model.priors import anchor_scales_override

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "coco_mini" / "train"
VARIANTS = ("default", "kept")
SMOKE_SET = ["model.input_size=128", anchor_scales_override(128), "train.batch_size=2", "train.cache_samples=false",
             "train.num_workers=0"]


def worker(variant: str, steps: int, overrides: list, out: Path) -> dict:
    """Train ``steps`` steps in this process; the step times, kernel time and faults of ``fit``."""
    import torch

    from yolact_lite import load_config
    from yolact_lite.engine.state import state_checksum
    from yolact_lite.engine.trainer import Trainer, TrainOptions

    torch.set_num_threads(2)
    config = load_config("yolact_effl0_finetune", ["model.num_classes=1", *overrides])
    options = TrainOptions(train_json=str(DATA / "annotations_person.json"), train_images=str(DATA / "images"),
                           out=str(out), max_iter=steps, progress=False, keep_freed_memory=variant == "kept")
    trainer = Trainer(config, options)
    before = resource.getrusage(resource.RUSAGE_SELF)
    trainer.fit()
    after = resource.getrusage(resource.RUSAGE_SELF)
    with (out / "log.csv").open(newline="") as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    timed = seconds[2:] or seconds
    return {"variant": variant, "s_per_step": statistics.median(timed), "steps_timed": len(timed),
            "kernel_s": after.ru_stime - before.ru_stime, "user_s": after.ru_utime - before.ru_utime,
            "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
            "weights": state_checksum(trainer.model)[:16]}


def run_child(variant: str, steps: int, overrides: list) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "benchmarks.allocator", "--worker", variant, "--steps", str(steps),
               "--out", tmp, *[f"--set={o}" for o in overrides]]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"allocator: the {variant} run failed: {proc.stderr.strip().splitlines()[-1:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="3 steps at 128 px, batch 2, 1 round (a test, not a result)")
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.set, args.out)))
        return 0
    overrides = SMOKE_SET if args.smoke else []
    steps, rounds = (3, 1) if args.smoke else (args.steps, args.rounds)
    runs = []
    for r in range(rounds):
        for variant in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            runs.append({"round": r, **run_child(variant, steps, overrides)})
            print(json.dumps(runs[-1]), flush=True)
    if len({run["weights"] for run in runs}) != 1:
        raise SystemExit(f"allocator: the variants trained different weights: {[r['weights'] for r in runs]}")
    base = statistics.median(r["s_per_step"] for r in runs if r["variant"] == "default")
    rows = []
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        s = statistics.median(r["s_per_step"] for r in mine)
        rows.append({"variant": variant, "runs": len(mine), "s_per_step": round(s, 3),
                     "speedup_vs_default": round(base / s, 2),
                     "kernel_s_per_step": round(statistics.median(r["kernel_s"] for r in mine) / steps, 3),
                     "user_s_per_step": round(statistics.median(r["user_s"] for r in mine) / steps, 3),
                     "minor_faults_per_step": round(statistics.median(r["minor_faults_per_step"] for r in mine)),
                     "weights": mine[0]["weights"]})
    notes = (f"yolact_effl0_finetune (+ `{' '.join(overrides) or 'its own settings: batch 8 at 448'}`), 1 class, "
             f"fp32, 2 torch threads, bundled person set; {steps} steps per run, runs in fresh processes, variants "
             f"alternating over {rounds} round(s); s_per_step: median over runs of each run's median step (the "
             "first two steps left out); kernel / user time and minor page faults of the training process over "
             "fit (DataLoader workers not counted). Equal weights checksums: the same computation.")
    name = "allocator_smoke" if args.smoke else "allocator"
    write_results(name, rows, notes)
    for row in rows:
        print(row)
    print(json.dumps(machine_info()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
