"""Checkpoint files: ours (:mod:`.files`: the file format, safe reading, atomic writing,
keeping classes), the original YOLACT's key layout (:mod:`.original`) and starting a model
from any checkpoint (:mod:`.init_weights`).  What a training checkpoint holds beyond the
weights (optimiser, schedule, RNG states) is :mod:`yolact_lite.engine.checkpointer`'s.

Layer: data / loss / checkpoint.  May import the core, ``model`` and ``ops``; never
``inference``, ``evaluation``, ``engine`` or ``cli``.
"""

from .files import (
    FORMAT,
    FORMAT_VERSION,
    carried_config,
    keep_classes,
    load_original,
    load_weights,
    model_checkpoint,
    read_state_file,
    save_atomic,
)
from .init_weights import InitReport, init_from_checkpoint

__all__ = ["FORMAT", "FORMAT_VERSION", "carried_config", "keep_classes", "load_original", "load_weights",
           "model_checkpoint", "read_state_file", "save_atomic", "InitReport", "init_from_checkpoint"]
