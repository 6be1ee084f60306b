"""``train``: parse the command line, resolve the config (fresh or resumed), run the Trainer.

    yolact-lite train --config yolact_effl0 --train-json A.json --train-images DIR \\
        --out RUN_DIR [--val-json B.json --val-images DIR] [--max-minutes M] [--amp] [--resume]

Several processes: ``torchrun --nproc_per_node=N -m yolact_lite train ...`` (DDP;
``train.batch_size`` is the total over all processes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..config import config_from_dict, load_config, with_overrides
from ..data.coco import load_coco_json
from ..engine import distributed as D
from ..engine.checkpointer import read_resume
from ..engine.trainer import Trainer, TrainOptions, TrainResult
from ..errors import CheckpointError, ConfigError
from . import add_config_args

__all__ = ["build_parser", "resolve_config", "run", "main"]

EXAMPLES = """examples:
  # fine-tune the CPU model on your COCO json for 15 minutes (bf16 where the CPU has it)
  yolact-lite train --config yolact_effl0 --train-json ann.json --train-images imgs/ --out runs/a \\
      --max-minutes 15 --amp --set train.schedule=cosine --set model.backbone.frozen_stages=3
  # start from an original YOLACT checkpoint with your own classes
  yolact-lite train --config yolact_resnet50 --init-weights yolact_resnet50_54_800000.pth ...
  # continue a stopped run exactly
  yolact-lite train --train-json ann.json --train-images imgs/ --out runs/a --resume
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="yolact-lite train", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train YOLACT on a COCO-format dataset (single process, or DDP under torchrun).")
    add_config_args(p, required=False)  # --config NAME_OR_PATH, --set KEY=VALUE (repeatable)
    p.add_argument("--train-json", required=True, help="COCO annotation file of the training set")
    p.add_argument("--train-images", required=True, help="image folder of the training set")
    p.add_argument("--val-json", help="COCO annotation file for periodic evaluation")
    p.add_argument("--val-images", help="image folder of the validation set")
    p.add_argument("--out", required=True, help="run directory (last.pt, best.pt, log.csv, config.yaml, tb/)")
    p.add_argument("--max-minutes", type=float,
                   help="wall-clock budget of this process: times the first steps, fits the lr schedule "
                        "(warm-up and decay) to the steps that fit, stops and saves at the budget")
    p.add_argument("--max-iter", type=int,
                   help="iterations to run, overriding the (autoscaled) train.max_iter; the lr curve is unchanged")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt (starts fresh when absent)")
    p.add_argument("--init-weights", metavar="CHECKPOINT",
                   help="start from these weights (ours or an original YOLACT .pth), also with another class "
                        "count: class-dependent layers are re-initialised")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: fp16 on CUDA, bf16 on a CPU with native bf16 (AMX/AVX512-BF16), "
                        "else fp32 with a note")
    p.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--no-pretrained", action="store_true", help="random backbone init (no ImageNet weights)")
    p.add_argument("--eval-max-images", type=int, help="evaluate on at most this many validation images")
    p.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms(True)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last weights and inputs (default: CUDA, and CPU bf16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def resolve_config(args: argparse.Namespace, num_classes: int):
    """``(config, resume_state)``: the checkpoint's config on resume (a ``--config`` naming
    another config is refused), else the named config; then ``--set`` overrides, ``--amp``
    and ``model.num_classes`` from the dataset."""
    last = Path(args.out) / "last.pt"
    state = None
    if args.resume and last.is_file():
        if args.init_weights:
            raise ConfigError(f"--init-weights starts a new run, but --resume continues {last}: use one of them")
        state = read_resume(last)
        config = with_overrides(config_from_dict(state.config), args.overrides)
        given = load_config(args.config).name if args.config else config.name
        if given != config.name:
            raise ConfigError(f"--resume continues {last}, a {config.name} run, but --config is {given}: "
                              "drop --config (the run keeps its own) or choose another --out")
    else:
        if last.is_file():
            raise CheckpointError(f"{last} already exists: pass --resume to continue that run, "
                                  "or choose another --out")
        if not args.config:
            raise ConfigError("--config is required (a name such as yolact_effl0, or a YAML path)")
        config = load_config(args.config, args.overrides)
    extra = [f"model.num_classes={num_classes}"]
    if args.amp:
        extra.append("train.amp=true")
    return with_overrides(config, extra), state


def run(args: argparse.Namespace) -> TrainResult:
    if bool(args.val_json) != bool(args.val_images):
        raise ConfigError("--val-json and --val-images go together")
    # the cheap checks before the data is read and cached
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: exists and is not a folder")
    if args.init_weights and not Path(args.init_weights).is_file():
        raise CheckpointError(f"--init-weights {args.init_weights}: no such file")
    info = D.init_distributed(args.device)
    try:
        if args.resume and not (Path(args.out) / "last.pt").is_file() and info.is_main:
            print(f"note: {Path(args.out) / 'last.pt'} not found; starting a new run", file=sys.stderr)
        config, state = resolve_config(args, len(load_coco_json(args.train_json)["categories"]))
        options = TrainOptions(
            train_json=args.train_json, train_images=args.train_images, out=args.out,
            val_json=args.val_json, val_images=args.val_images, max_minutes=args.max_minutes,
            max_iter=args.max_iter, resume=args.resume, device=args.device,
            pretrained=not args.no_pretrained, init_weights=args.init_weights,
            eval_max_images=args.eval_max_images, deterministic=args.deterministic,
            channels_last=args.channels_last, progress=not args.no_progress,
        )
        trainer = Trainer(config, options, resume_state=state, dist_info=info)
        del state
        return trainer.fit()
    finally:
        D.cleanup()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse, train, return 0.  User errors raise :class:`~yolact_lite.errors.YolactError`
    (wrap in :func:`yolact_lite.cli.run_cli`: one ``error:`` line, exit 2)."""
    run(build_parser().parse_args(argv))
    return 0
