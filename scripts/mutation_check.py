#!/usr/bin/env python3
"""Does the suite notice when a behaviour that matters breaks? Flip each one (a mutation),
run only the test files that cover it, restore the file, and report which test failed.

Each mutation replaces one exact piece of source text (found exactly once, else the run
stops: the code moved and the entry needs updating). The original file is always written
back, also on Ctrl-C. A mutation the suite survives is a gap in the tests.

    python scripts/mutation_check.py                    # all, table on stdout
    python scripts/mutation_check.py --only ema_decay --out docs/mutation_check.md
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str  # the behaviour that breaks, in words
    file: str
    old: str
    new: str
    tests: Tuple[str, ...]  # pytest arguments (files, optionally -k)


MUTATIONS: List[Mutation] = [
    Mutation("cross_class_nms", "cross-class NMS runs per class instead",
             "yolact_lite/inference/detection.py",
             'cross_class=config.nms == "cross_class",', "cross_class=False,",
             ("tests/inference/test_postprocess.py",)),
    Mutation("crop_padding", "the mask crop loses its padding before the box's left/top edge",
             "yolact_lite/masks.py",
             "start = (torch.minimum(low, high) * size - padding).clamp(min=0)",
             "start = (torch.minimum(low, high) * size).clamp(min=0)",
             ("tests/core/test_masks.py", "tests/inference/test_postprocess.py")),
    Mutation("mask_threshold", "masks (CPU path) are thresholded at inference.mask_threshold + 0.1",
             "yolact_lite/inference/mask_assembly.py",
             "hp, wp, config.mask_threshold)\n    else:", "hp, wp, config.mask_threshold + 0.1)\n    else:",
             ("tests/inference/test_postprocess.py",)),
    Mutation("letterbox_unmapping", "x is un-mapped as if the image filled the input width (letterbox ignored)",
             "yolact_lite/structures.py",
             "fx = s / self.content_w * self.orig_w", "fx = s / self.input_size * self.orig_w",
             ("tests/data/test_data.py", "tests/inference/test_postprocess.py")),
    Mutation("ema_decay", "the EMA decay has no warm-up ramp",
             "yolact_lite/engine/ema.py",
             "return float(decay) * (1.0 - math.exp(-updates / ramp_steps))", "return float(decay)",
             ("tests/engine/test_hooks.py",)),
    Mutation("frozen_stages", "frozen_stages=k freezes one stage fewer",
             "yolact_lite/model/freeze.py",
             "names = [name for stage in stages[:count] for name in stage]",
             "names = [name for stage in stages[:count - 1] for name in stage]",
             ("tests/model/test_frozen_stages.py",)),
    Mutation("budget_plan", "the time-budget plan counts slow steps (mean step time, not the median)",
             "yolact_lite/engine/hooks/stopping.py",
             "per_step = statistics.median(self.durations)", "per_step = statistics.mean(self.durations)",
             ("tests/engine/test_hooks.py",)),
    Mutation("tracker_order", "lost tracks are matched before the tracks seen in the previous frame",
             "yolact_lite/inference/tracking.py",
             "        high, rest_tracked = associate(high, tracked, s.match_overlap, anchor=True)\n"
             "        high, rest_lost = associate(high, lost, s.match_overlap, anchor=True)\n",
             "        high, rest_lost = associate(high, lost, s.match_overlap, anchor=True)\n"
             "        high, rest_tracked = associate(high, tracked, s.match_overlap, anchor=True)\n",
             ("tests/inference/test_tracking.py",)),
    Mutation("config_migration", "the old inference.conf_threshold migrates to the wrong key",
             "yolact_lite/config/migrations.py",
             'moved("inference.conf_threshold", "inference.candidate_threshold"),',
             'moved("inference.conf_threshold", "inference.detection_threshold"),',
             ("tests/core/test_config.py", "tests/checkpoint/test_compat.py")),
    Mutation("fast_nms_iou", "Fast NMS suppresses at IoU threshold + 0.05, not the one given",
             "yolact_lite/ops/nms.py",
             "thr32 = float(torch.tensor(thr, dtype=torch.float32))",
             "thr32 = float(torch.tensor(thr + 0.05, dtype=torch.float32))",
             ("tests/ops/test_nms.py",)),
    Mutation("cli_roi_ignored", "predict --roi is ignored (the whole image is searched)",
             "yolact_lite/cli/predict.py",
             "tile_overlap=args.tile_overlap, roi=args.roi,", "tile_overlap=args.tile_overlap, roi=None,",
             ("tests/inference/test_small_objects.py", "-k", "infer_cli_tile_and_roi")),
]


def run_one(mutation: Mutation, python: str) -> dict:
    path = ROOT / mutation.file
    original = path.read_text(encoding="utf-8")
    count = original.count(mutation.old)
    if count != 1:
        raise SystemExit(f"error: {mutation.name}: the text to mutate occurs {count} times in {mutation.file} "
                         "(expected once): update the entry")
    t0 = time.monotonic()
    try:
        path.write_text(original.replace(mutation.old, mutation.new), encoding="utf-8")
        proc = subprocess.run([python, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", *mutation.tests],
                              cwd=ROOT, capture_output=True, text=True)
    finally:
        path.write_text(original, encoding="utf-8")
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.MULTILINE)
    return {"mutation": mutation, "caught": proc.returncode == 1 and bool(failed),
            "failed": failed[0] if failed else None, "rc": proc.returncode,
            "seconds": time.monotonic() - t0, "tail": proc.stdout[-1500:]}


def table(results: List[dict]) -> str:
    lines = ["| mutation | what breaks | file | tests run | first failing test |", "|---|---|---|---|---|"]
    for r in results:
        m = r["mutation"]
        verdict = f"`{r['failed']}`" if r["caught"] else f"**SURVIVED** (pytest exit {r['rc']})"
        lines.append(f"| {m.name} | {m.what} | `{m.file}` | {' '.join(m.tests)} | {verdict} |")
    caught = sum(r["caught"] for r in results)
    lines.append("")
    lines.append(f"{caught} of {len(results)} mutations caught.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", metavar="NAME", help="run these mutations only")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    chosen = MUTATIONS
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name}: {m.what} ({m.file})")
        return 0
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in MUTATIONS})
        if unknown:
            raise SystemExit(f"error: unknown mutation(s) {', '.join(unknown)} (see --list)")
        chosen = [m for m in MUTATIONS if m.name in args.only]
    results = []
    for m in chosen:
        print(f"== {m.name}: {m.what}", flush=True)
        r = run_one(m, sys.executable)
        print(f"   {'caught by ' + r['failed'] if r['caught'] else 'SURVIVED'} ({r['seconds']:.0f} s)", flush=True)
        if not r["caught"]:
            print(r["tail"], flush=True)
        results.append(r)
    text = table(results)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0 if all(r["caught"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
