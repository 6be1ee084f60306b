#!/usr/bin/env python
"""Run every benchmark script of ``benchmarks/`` as a subprocess and summarise.

Benchmarks, in this order (a missing script is skipped with a note, not a failure):
nms_speed, end_to_end, video_fps, train_speed, allocator, compare_maskrcnn, backends,
precision, tracking, k_sweep, small_objects, finetune_recipe.  ``--quick`` and ``--device``
are forwarded to each script that accepts them (a script whose source does not define the
option does not get it).  Prints which ran, their
wall time and exit codes, writes ``benchmarks/results/run_all[_quick].md``, and exits 1 if
any benchmark failed (non-zero exit or timeout).

``make bench`` (full) must fit in 60 minutes on 2 CPU cores.  Every benchmark runs with its
own defaults except the training benchmarks, whose full defaults (k_sweep: 6 values of k x 3
seeds x 600 steps, ~12 hours in fp32 on 2 cores; small_objects: 7 trained rows x 2 seeds, ~40 min) would not leave room
for the others.
run_all gives them

    k_sweep:        --k 8 64 256 --seeds 0 --steps 40 --eval-max-images 30 --name k_sweep_bench
                    + the sweep's --set model.coefficient_init=zero --set train.lr_multipliers.protonet=0.1
                                                                          (~6 min on 2 quiet cores)
    small_objects:  --only smallest_first mask_size_w0.5 crop_soft tiled --seeds 0
                    --name small_objects_bench                            (~9 min)
    finetune_recipe: --steps 60 --rows baseline aug_none --name finetune_recipe_bench
                                                                          (~9 min)

so they write ``results/k_sweep_bench.*`` / ``results/small_objects_bench*`` /
``results/finetune_recipe_bench.*`` and leave the full
results (made by running the scripts directly) untouched.  ``--own-defaults`` drops these
reduced arguments; ``--args NAME="..."`` replaces a benchmark's extra arguments.
``make bench-quick`` (``--quick``) takes a few minutes; it passes ``--name nms_speed_quick`` to
nms_speed so that quick numbers do not overwrite ``results/nms_speed.*`` (compare_maskrcnn has
no such option: its ``--quick`` run rewrites ``results/compare_maskrcnn.*``).

    python -m benchmarks.run_all [--quick] [--device cpu|cuda] [--only NAME ...] [--skip NAME ...]
                                 [--args NAME="ARGS"] [--own-defaults] [--timeout MINUTES] [--dry-run]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

BENCHMARKS = ("nms_speed", "end_to_end", "video_fps", "train_speed", "allocator", "compare_maskrcnn", "backends",
              "precision", "tracking", "k_sweep", "small_objects", "finetune_recipe")
# Extra arguments of the FULL run (not with --quick) so that `make bench` fits in 60 min on 2 cores.
FULL_RUN_ARGS = {
    "k_sweep": ["--k", "8", "64", "256", "--seeds", "0", "--steps", "40", "--eval-max-images", "30",
                "--set", "model.coefficient_init=zero", "--set", "train.lr_multipliers.protonet=0.1",
                "--name", "k_sweep_bench"],
    "small_objects": ["--only", "smallest_first", "mask_size_w0.5", "crop_soft", "tiled", "--seeds", "0",
                      "--name", "small_objects_bench"],
    "finetune_recipe": ["--steps", "60", "--rows", "baseline", "aug_none", "--name", "finetune_recipe_bench"],
}
# Extra arguments with --quick: keep quick results out of the full results' files.
QUICK_RUN_ARGS = {
    "nms_speed": ["--name", "nms_speed_quick"],
}


def accepts(script: Path, option: str) -> bool:
    """Whether the script defines ``option`` (read from its source: no import, no subprocess)."""
    try:
        text = script.read_text(encoding="utf-8")
    except OSError:
        return False
    return f'"{option}"' in text or f"'{option}'" in text


def command_for(name: str, args) -> tuple[list[str], list[str]]:
    """(argv, notes) for one benchmark."""
    script = HERE / f"{name}.py"
    cmd = [sys.executable, "-m", f"benchmarks.{name}"]
    notes = []
    if args.quick:
        if accepts(script, "--quick"):
            cmd.append("--quick")
        else:
            notes.append("no --quick option: ran in full")
    if args.device:
        if accepts(script, "--device"):
            cmd += ["--device", args.device]
        elif args.device != "cpu":
            notes.append(f"no --device option: --device {args.device} not forwarded")
    if name in args.extra:
        cmd += args.extra[name]
    elif args.quick and name in QUICK_RUN_ARGS:
        cmd += QUICK_RUN_ARGS[name]
    elif not args.quick and not args.own_defaults and name in FULL_RUN_ARGS:
        cmd += FULL_RUN_ARGS[name]
        notes.append("reduced run_all arguments (see run_all.py)")
    return cmd, notes


def run_one(cmd: list[str], timeout_s: float | None) -> tuple[object, str]:
    """(exit code, status).  The benchmark runs in its own session so that a timeout stops it
    together with the workers it started (and nothing else)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return "-", "TIMEOUT"
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait()
        raise
    return code, ("ok" if code == 0 else "FAILED")


def _fmt_time(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--quick", action="store_true", help="forward --quick (a few minutes in total)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="forwarded to scripts that take --device")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--skip", nargs="+", metavar="NAME", default=[], help="do not run these")
    parser.add_argument("--args", action="append", default=[], metavar='NAME="ARGS"',
                        help="extra arguments for one benchmark, replacing run_all's (repeatable)")
    parser.add_argument("--own-defaults", action="store_true",
                        help="no reduced run_all arguments: every benchmark with its own defaults")
    parser.add_argument("--timeout", type=float, metavar="MINUTES", help="stop a benchmark after this long")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)

    unknown = sorted((set(args.only or []) | set(args.skip)) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    args.extra = {}
    for item in args.args:
        name, sep, rest = item.partition("=")
        if not sep or name not in BENCHMARKS:
            parser.error(f"--args wants NAME=\"ARGS\" with NAME one of {', '.join(BENCHMARKS)}; got {item!r}")
        args.extra[name] = shlex.split(rest)

    selected = [n for n in BENCHMARKS if (args.only is None or n in args.only) and n not in args.skip]
    rows = []
    started = time.perf_counter()
    for name in selected:
        script = HERE / f"{name}.py"
        if not script.is_file():
            print(f"--- {name}: benchmarks/{name}.py does not exist: skipped", flush=True)
            rows.append({"benchmark": name, "status": "missing", "exit_code": "", "wall": "", "command": "",
                         "notes": "script not found"})
            continue
        cmd, notes = command_for(name, args)
        shown = " ".join(shlex.quote(c) for c in [Path(cmd[0]).name, *cmd[1:]])
        print(f"--- {name}: {shown}" + (f"   ({'; '.join(notes)})" if notes else ""), flush=True)
        if args.dry_run:
            rows.append({"benchmark": name, "status": "dry-run", "exit_code": "", "wall": "", "command": shown,
                         "notes": "; ".join(notes)})
            continue
        t0 = time.perf_counter()
        code, status = run_one(cmd, args.timeout * 60 if args.timeout else None)
        if status == "TIMEOUT":
            notes.append(f"stopped after {args.timeout:g} min")
        wall = time.perf_counter() - t0
        print(f"--- {name}: {status} (exit {code}) in {_fmt_time(wall)}", flush=True)
        rows.append({"benchmark": name, "status": status, "exit_code": code, "wall": _fmt_time(wall),
                     "command": shown, "notes": "; ".join(notes)})
    total = time.perf_counter() - started

    failed = [r["benchmark"] for r in rows if r["status"] in ("FAILED", "TIMEOUT")]
    print(f"\n=== run_all {'--quick ' if args.quick else ''}summary ({_fmt_time(total)} in all)")
    width = max([len(r["benchmark"]) for r in rows] + [9])
    print(f"{'benchmark':{width}s}  {'status':8s}  {'exit':4s}  {'wall':>8s}  notes")
    for r in rows:
        print(f"{r['benchmark']:{width}s}  {r['status']:8s}  {str(r['exit_code']):4s}  {r['wall']:>8s}  {r['notes']}")
    if not args.dry_run and rows:
        write_summary(rows, total, args)
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


def write_summary(rows, total: float, args) -> None:
    """``results/run_all[_quick].md``: the table above, with the date and machine load."""
    from benchmarks._common import RESULTS_DIR as results

    results.mkdir(parents=True, exist_ok=True)
    name = "run_all_quick" if args.quick else "run_all"
    load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"
    lines = [f"# {name}", "",
             f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
             f"- cores: {os.cpu_count()}; load average (1 min) at the end: {load}",
             f"- total wall time: {_fmt_time(total)}", "",
             "| benchmark | status | exit | wall | command | notes |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['benchmark']} | {r['status']} | {r['exit_code']} | {r['wall']} | `{r['command']}` | "
                     f"{r['notes']} |")
    (results / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
