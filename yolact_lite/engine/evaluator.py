"""Evaluation during training: a Predictor over a snapshot of the weights, COCO metrics on the
main process, the mask AP shared with every process."""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..checkpoint.files import model_checkpoint
from ..config import Config
from . import distributed as D

__all__ = ["make_predictor", "TrainingEvaluator"]


def make_predictor(model: nn.Module, config: Config, device: torch.device, class_names: Sequence[str] = (),
                   category_ids: Sequence[int] = ()):
    """A :class:`~yolact_lite.inference.predictor.Predictor` over a snapshot of ``model``'s current
    weights (the predictor builds, loads and fuses its own copy; ``model`` is not touched)."""
    from ..inference.predictor import Predictor  # imported lazily: it pulls in the NMS extension

    extra = {}
    if class_names:
        extra["class_names"] = list(class_names)
    if category_ids:
        extra["category_ids"] = list(category_ids)
    return Predictor(config, weights=model_checkpoint(model, config.to_dict(), **extra), device=str(device))


class TrainingEvaluator:
    """``evaluate(step) -> (metrics or None, mask AP)`` of the weights ``model_fn()`` gives, on
    ``val_json`` / ``val_images``; ``training_module`` is put in eval mode meanwhile, and the
    RNG streams of training are left as they were."""

    def __init__(self, config: Config, device: torch.device, model_fn: Callable[[], nn.Module],
                 training_module: nn.Module, val_json: str, val_images: str, max_images: Optional[int],
                 class_names: Sequence[str], category_ids: Sequence[int], is_main: bool,
                 note: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)):
        self.config, self.device, self.model_fn, self.training_module = config, device, model_fn, training_module
        self.val = (val_json, val_images, max_images)
        self.labels = (list(class_names), list(category_ids))
        self.is_main, self.note = is_main, note
        self.last_metrics: Optional[Dict[str, Any]] = None

    def __call__(self, step: int) -> Tuple[Optional[Dict[str, Any]], Optional[float]]:
        metrics, mask_ap = None, None
        if self.is_main:
            metrics = self._evaluate_here()
            self.last_metrics = metrics
            mask_ap = (metrics.get("mask") or {}).get("AP")
            box_ap = (metrics.get("box") or {}).get("AP")
            fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
            self.note(f"[eval @ step {step}] box AP {fmt(box_ap)} | mask AP {fmt(mask_ap)} "
                      f"({metrics.get('num_images')} images)")
        return metrics, D.broadcast_object(mask_ap)

    def _evaluate_here(self) -> Dict[str, Any]:
        from ..evaluation.coco_eval import evaluate

        was_training = self.training_module.training
        self.training_module.eval()
        val_json, val_images, max_images = self.val
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                with torch.no_grad():
                    predictor = make_predictor(self.model_fn(), self.config, self.device, *self.labels)
                    return evaluate(predictor, val_json, val_images, max_images=max_images, progress=False,
                                    note=self.note)
        finally:
            self.training_module.train(was_training)
