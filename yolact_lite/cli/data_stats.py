"""Statistics of a COCO-format annotation file: class balance, object sizes, crowding, anomalies.

    yolact-lite data stats DATA.json [--config C] [--set k=v ...] [--out DIR]
        [--no-mask-check] [--beta 0.999] [--compare OTHER_CONFIG ...]

Prints the tables and writes ``DIR/data_stats.md``, ``DIR/data_stats.json`` and
``DIR/data_stats.png`` (default ``runs/data_stats``).  ``--config`` (default yolact_base)
gives the input size, anchor scales, resize mode and ``loss.masks_to_train`` used by the
prior-scale size bins and the crowding table; ``--compare`` adds the prior-scale bins of
further configs.  No image is read; ``--no-mask-check`` also skips rasterising the masks
(the box-vs-mask and empty-polygon checks), which is much faster on large files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config
from ..data.coco import load_coco_json
from ..data.stats import dataset_stats
from ..data.stats_report import write_stats_report
from . import add_config_args, config_from_args, run_cli

DEFAULT_CONFIG = "yolact_base"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yolact-lite data stats", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA.json", help="COCO annotation json")
    add_config_args(p, required=False)
    p.add_argument("--out", default="runs/data_stats", help="output directory (default: %(default)s)")
    p.add_argument("--no-mask-check", action="store_true",
                   help="do not rasterise masks (skips the box-vs-mask and empty-mask checks)")
    p.add_argument("--beta", type=float, default=0.999,
                   help="beta of the class-balanced weights (default: %(default)s)")
    p.add_argument("--compare", action="append", default=[], metavar="CONFIG",
                   help="also bin object sizes by this config's anchors (repeatable)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.config is None:
        args.config = DEFAULT_CONFIG
    config = config_from_args(args)
    compare = [(name, load_config(name)) for name in args.compare]
    coco = load_coco_json(args.data)
    report = dataset_stats(coco, config, check_masks=not args.no_mask_check, beta=args.beta,
                           compare_configs=compare)
    report["source"] = str(args.data)
    markdown, paths = write_stats_report(report, Path(args.out), str(args.data))
    print(markdown)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
