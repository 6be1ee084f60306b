"""Start training from any checkpoint (``--init-weights W``): the fine-tuning workflow.

Our checkpoints and original YOLACT state_dicts load into a model with a different class
count. Every tensor whose name and shape match loads; the layers whose shapes follow the class
count (``model.yolact.CLASS_DEPENDENT_LAYERS``: the class conv, the semantic-segmentation head
and the mask-IoU head's classifier) are re-initialised as a new model initialises them and
reported as skipped. Any other missing, unexpected or mis-shaped tensor is a CheckpointError
naming the keys: a checkpoint of another backbone or head layout is a user error, not
something to half-load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from torch import Tensor, nn

from ..errors import CheckpointError
from ..model.yolact import CLASS_DEPENDENT_LAYERS, init_conv_
from . import original
from .files import FORMAT, load_state_strict, read_state_file
from .original import check_tensor_dict

__all__ = ["InitReport", "SkippedLayer", "init_from_checkpoint"]

Shape = Tuple[int, ...]


@dataclass
class SkippedLayer:
    """A class-dependent layer that was not loaded: re-initialised, or absent from the model."""

    name: str  # module name, e.g. "head.cls"
    reason: str  # e.g. "class count 80 -> 1"
    shapes: Dict[str, Tuple[Optional[Shape], Optional[Shape]]]  # tensor -> (checkpoint, model)
    reinitialised: bool  # False: the checkpoint has the layer, this model does not


@dataclass
class InitReport:
    """What :func:`init_from_checkpoint` did; ``lines()`` / ``str()`` for the training log."""

    source: str
    source_format: str  # "yolact_lite checkpoint" | "original YOLACT checkpoint"
    loaded: List[str] = field(default_factory=list)  # model state keys taken from the checkpoint
    skipped: List[SkippedLayer] = field(default_factory=list)
    source_classes: Optional[int] = None  # foreground classes of the checkpoint, when known
    model_classes: int = 0

    @property
    def reinitialised(self) -> List[str]:
        return [s.name for s in self.skipped if s.reinitialised]

    def lines(self) -> List[str]:
        total = len(self.loaded) + sum(len(s.shapes) for s in self.skipped if s.reinitialised)
        out = [f"init weights: {self.source} ({self.source_format}): "
               f"{len(self.loaded)} of {total} tensors loaded"]
        for s in self.skipped:
            action = "re-initialised" if s.reinitialised else "not in this model, ignored"
            shapes = ", ".join(f"{k} {_fmt(a)} -> {_fmt(b)}" for k, (a, b) in s.shapes.items())
            out.append(f"  {action}: {s.name} ({s.reason}): {shapes}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _fmt(shape: Optional[Shape]) -> str:
    return "absent" if shape is None else "x".join(str(n) for n in shape) or "scalar"


def _layer_of(key: str) -> Optional[str]:
    for layer in CLASS_DEPENDENT_LAYERS:
        if key.startswith(layer + "."):
            return layer
    return None


def _read_source(source: Union[str, Path, Mapping[str, Any]], model: nn.Module) -> Tuple[Dict[str, Tensor], str]:
    """The checkpoint's tensors under our names, and its format's name."""
    data = dict(source) if isinstance(source, Mapping) else read_state_file(source)
    if original.is_original_state_dict(data):
        return original.rename_original_state_dict(data, model.config), "original YOLACT checkpoint"
    if data.get("format") != FORMAT or not isinstance(data.get("model"), Mapping):
        raise CheckpointError(f"{_name(source)} is neither a yolact_lite checkpoint nor an original "
                              "YOLACT state_dict")
    state = dict(data["model"])  # the inference weights (the EMA when training used one)
    check_tensor_dict(state)
    return state, "yolact_lite checkpoint"


def _name(source: Any) -> str:
    return "checkpoint (in memory)" if isinstance(source, Mapping) else str(source)


def _class_count(state: Mapping[str, Tensor], num_anchors: int) -> Optional[int]:
    """Foreground classes of a checkpoint, from its class conv ([A * (C + 1), F, 3, 3])."""
    weight = state.get("head.cls.weight")
    if weight is None or weight.dim() != 4 or weight.shape[0] % num_anchors:
        return None
    return weight.shape[0] // num_anchors - 1


def init_from_checkpoint(model: nn.Module, source: Union[str, Path, Mapping[str, Any]]) -> InitReport:
    """Initialise ``model`` (a :class:`~yolact_lite.model.Yolact`) from ``source``, in place.

    ``source``: a path or an already-loaded dict, either our checkpoint (its ``"model"``
    weights) or an original YOLACT state_dict. Tensors with the same name and shape load;
    class-dependent layers that differ are re-initialised; anything else that differs raises
    CheckpointError naming the keys (the model is then unchanged).
    """
    state, source_format = _read_source(source, model)
    own = model.state_dict()
    num_anchors = own["head.box.weight"].shape[0] // 4
    report = InitReport(_name(source), source_format, source_classes=_class_count(state, num_anchors),
                        model_classes=model.config.num_classes)
    reason = (f"class count {report.source_classes} -> {report.model_classes}"
              if report.source_classes is not None and report.source_classes != report.model_classes
              else "shape differs")

    layer_keys: Dict[str, List[str]] = {}
    for key in list(own) + [k for k in state if k not in own]:
        layer = _layer_of(key)
        if layer is not None:
            layer_keys.setdefault(layer, []).append(key)
    skipped_keys = set()
    for layer, keys in layer_keys.items():
        if all(k in own and k in state and own[k].shape == state[k].shape for k in keys):
            continue  # same class count: loads like any other layer
        in_model = any(k in own for k in keys)
        in_checkpoint = any(k in state for k in keys)
        why = reason if in_model and in_checkpoint else (
            "not in the checkpoint" if in_model else "this model has no such layer")
        shapes = {k[len(layer) + 1:]: (tuple(state[k].shape) if k in state else None,
                                       tuple(own[k].shape) if k in own else None) for k in keys}
        report.skipped.append(SkippedLayer(layer, why, shapes, reinitialised=in_model))
        skipped_keys.update(keys)

    missing = sorted(k for k in own if k not in state and k not in skipped_keys)
    unexpected = sorted(k for k in state if k not in own and k not in skipped_keys)
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in state and k not in skipped_keys and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{report.source} does not fit this model outside the class-dependent layers "
            f"(backbone {model.config.backbone.name}, {model.config.num_classes} classes): "
            + original.describe_key_problems(missing, unexpected, mismatched)
        )

    report.loaded = [k for k in own if k not in skipped_keys]
    merged = {k: (own[k] if k in skipped_keys else state[k]) for k in own}
    load_state_strict(model, merged, f"{report.source}:")
    for layer in report.reinitialised:
        init_conv_(model.get_submodule(layer))
    return report
