"""``yolact-lite data check``: find what would break or silently hurt training in a COCO
annotation file and its images (:func:`yolact_lite.data.check.check_dataset`).

    yolact-lite data check ANN.json [--images DIR] [--other-split ANN2.json]
        [--no-image-read] [--no-mask-check] [--examples N] [--json OUT.json]

Exit codes: 0 nothing at ``break`` or ``hurt`` level, 1 at least one such problem, 2 the input
could not be read (no such file, not JSON, not a COCO object, no image folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..data.check import check_dataset
from ..errors import DataError
from . import run_cli

EXAMPLES = """examples:
  yolact-lite data check data/coco_mini/train/annotations.json --images data/coco_mini/train/images
  yolact-lite data check val.json --images val/ --other-split train.json --json check.json

exit status: 0 nothing that would break or hurt training, 1 such problems found,
2 the input could not be read"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolact-lite data check",
                                     description="Find what would break or silently hurt training "
                                                 "in a COCO annotation file and its images.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("annotations", metavar="ANN.json", help="COCO annotation file")
    parser.add_argument("--images", metavar="DIR", help="folder the images' file_name entries are relative to "
                                                        "(without it, image files are not checked)")
    parser.add_argument("--other-split", metavar="ANN2.json",
                        help="the other split's annotation file (train for val, val for train): "
                             "compares the categories")
    parser.add_argument("--no-image-read", action="store_true",
                        help="only check that image files exist (no decoding, no size check)")
    parser.add_argument("--no-mask-check", action="store_true",
                        help="do not rasterise masks (skips box-vs-mask and empty-polygon checks)")
    parser.add_argument("--examples", type=int, default=5, metavar="N",
                        help="examples listed per problem kind (default: %(default)s)")
    parser.add_argument("--json", metavar="OUT.json", help="also write the report as JSON")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv``, print the report (or one ``error:`` line) and return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        report = check_dataset(args.annotations, args.images, args.other_split,
                               read_images=not args.no_image_read, check_masks=not args.no_mask_check,
                               max_examples=max(0, args.examples), progress=True)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.to_text())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8")
    return report.exit_code


if __name__ == "__main__":
    run_cli(main)
