#!/usr/bin/env python3
"""Train YOLACT on a COCO-format dataset.

    python scripts/train.py --config yolact_effl0 \\
        --train-json A.json --train-images DIR [--val-json B.json --val-images DIR] \\
        --out RUN_DIR [--max-minutes M] [--max-iter N] [--resume] [--amp] [--device cpu|cuda] \\
        [--set train.lr=...] [--no-pretrained] [--eval-max-images N]

Several processes / GPUs: ``torchrun --nproc_per_node=N scripts/train.py ...`` (DDP;
``train.batch_size`` is the total over all processes).  Details: yolact_lite/engine/trainer.py and docs/training.md.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from yolact_lite.cli import run_cli  # noqa: E402
from yolact_lite.cli.train import main  # noqa: E402

if __name__ == "__main__":
    run_cli(main)
