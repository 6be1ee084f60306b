"""``yolact-lite COMMAND ...``: one entry point for every user command.

Each command is a module with its own parser (``yolact-lite COMMAND --help`` shows its options
and examples); this module only dispatches and turns user errors into one ``error:`` line
(:func:`yolact_lite.cli.run_cli`).
"""

from __future__ import annotations

import importlib
import sys
from typing import Dict, Optional, Sequence, Tuple

from . import run_cli

__all__ = ["COMMANDS", "main"]

# command -> (module, one-line description)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "train": ("yolact_lite.cli.train", "train or fine-tune on a COCO-format dataset (CPU, GPU, DDP under torchrun)"),
    "predict": ("yolact_lite.cli.predict", "run a model on images, folders, globs, videos, cameras or streams"),
    "eval": ("yolact_lite.cli.eval", "COCO box/mask AP on an annotated set, or --benchmark for FPS"),
    "export": ("yolact_lite.cli.export", "export to ONNX (fp32, int8) or TorchScript"),
    "benchmark": ("yolact_lite.cli.eval", "time a model on images (same as: eval --benchmark N)"),
    "data check": ("yolact_lite.cli.data_check", "find what would break or hurt training in a COCO json"),
    "data stats": ("yolact_lite.cli.data_stats", "class balance, object sizes, crowding and anomalies"),
}


def _usage() -> str:
    lines = ["usage: yolact-lite COMMAND [options]   (yolact-lite COMMAND --help for each)", "", "commands:"]
    lines += [f"  {name:12s} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "examples:",
              "  yolact-lite predict --weights data/models/person_effl0.pt "
              "--input data/photos --out runs/pred",
              "  yolact-lite train --config yolact_effl0_finetune --train-json ann.json --train-images imgs/ "
              "--out runs/a --max-minutes 15 --amp",
              "  yolact-lite data check ann.json --images imgs/"]
    return "\n".join(lines)


def _resolve(argv: Sequence[str]) -> Tuple[Optional[str], list]:
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in COMMANDS:
        return f"{argv[0]} {argv[1]}", list(argv[2:])
    if argv and argv[0] in COMMANDS:
        return argv[0], list(argv[1:])
    return None, list(argv)


def dispatch(argv: Sequence[str]) -> int:
    name, rest = _resolve(argv)
    if name is None:
        if argv and argv[0] not in ("-h", "--help", "help"):
            print(f"yolact-lite: unknown command {' '.join(argv[:2])!r}\n", file=sys.stderr)
            print(_usage(), file=sys.stderr)
            return 2
        print(_usage())
        return 0
    if name == "benchmark" and "--benchmark" not in rest:
        rest = rest + ["--benchmark", "50"]
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_cli(dispatch, list(sys.argv[1:] if argv is None else argv))
