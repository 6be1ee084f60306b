"""Evaluation: COCO mAP, mask leakage and timing of a Predictor (:mod:`.coco_eval`) and the
TIDE error breakdown (:mod:`.tide`).

Layer: evaluation.  May import the core, ``model``, ``ops``, ``data``, ``loss``,
``checkpoint`` and ``inference``; never ``engine`` or ``cli``.
"""

from .coco_eval import evaluate
from .tide import tide_from_coco

__all__ = ["evaluate", "tide_from_coco"]
