"""What the engine tests share to start training runs: a subset of the bundled training set
written to a file, and the ``yolact-lite train`` arguments of a tiny CPU run on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from tests.paths import DATA
from yolact_lite.data import coco_subset
from yolact_lite.engine.loop import HookBase

TRAIN_JSON = DATA / "coco_mini" / "train" / "annotations.json"
IMAGES = DATA / "coco_mini" / "train" / "images"


def write_subset(folder: Path, image_ids: Iterable[int], name: str = "subset.json") -> Path:
    """The bundled training json cut to ``image_ids``, written to ``folder / name``."""
    path = folder / name
    path.write_text(json.dumps(coco_subset(json.loads(TRAIN_JSON.read_text()), tuple(image_ids))))
    return path


def train_args(ann: Path, out: Path, steps: int, base: Sequence[str], *extra: str, sets=()) -> list:
    """CLI arguments of a ``steps``-iteration run of yolact_effl0 (random init) on ``ann``,
    with the ``base`` overrides, then ``sets``, then ``extra`` flags."""
    args = ["--config", "yolact_effl0", "--train-json", str(ann), "--train-images", str(IMAGES),
            "--out", str(out), "--max-iter", str(steps), "--no-pretrained", "--no-progress"]
    for item in list(base) + list(sets):
        args += ["--set", item]
    return args + list(extra)


class InterruptAt(HookBase):
    """Stops a run the way Ctrl-C does, just before ``step``: the trainer saves ``last.pt``."""

    def __init__(self, step: int):
        self.step = step

    def before_step(self):
        if self.trainer.iter == self.step:
            raise KeyboardInterrupt(f"test interrupt before step {self.step}")
