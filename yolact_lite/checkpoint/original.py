"""Checkpoints released by the original YOLACT project (plain state_dicts) -> our key names.

Pure mapping and checking of state dicts; reading files is :mod:`.files`'s job
(its ``load_original`` loads a file through this module).

The original's key layout differs from ours in names only: the FPN lists are stored
coarse-to-fine (``fpn.lat_layers.0`` acts on C5), the ResNet stages are ``backbone.layers.N``
(ours use torchvision's ``layerN+1`` so torchvision's ImageNet files load directly), and the
heads have other names. Every key is mapped, every shape checked, every key used.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping

import torch
from torch import Tensor, nn

from ..errors import CheckpointError

# Fixed renames, applied in order (first match wins). Level-reversed FPN lists and backbone
# stages depend on the model and are handled in `original_key_to_ours`.
_RENAMES = [
    (r"^proto_net\.0\.", "protonet.convs.0."),
    (r"^proto_net\.2\.", "protonet.convs.1."),
    (r"^proto_net\.4\.", "protonet.convs.2."),
    (r"^proto_net\.8\.", "protonet.upsampled_conv."),
    (r"^proto_net\.10\.", "protonet.project."),
    (r"^prediction_layers\.0\.upfeature\.0\.", "head.shared_conv."),
    (r"^prediction_layers\.0\.bbox_layer\.", "head.box."),
    (r"^prediction_layers\.0\.conf_layer\.", "head.cls."),
    (r"^prediction_layers\.0\.mask_layer\.", "head.coef."),
    (r"^semantic_seg_conv\.", "semantic_head."),
    (r"^maskiou_net\.maskiou_net\.(0|2|4|6|8)\.", lambda m: f"mask_iou_head.convs.{int(m.group(1)) // 2}."),
    (r"^maskiou_net\.maskiou_net\.10\.", "mask_iou_head.classify."),
    (r"^fpn\.downsample_layers\.", "fpn.downsample."),
    (r"^backbone\._preconv\.", "backbone.stem."),
    (r"\.conv_offset_mask\.", ".offset_mask."),
]


def check_tensor_dict(state: Any, what: str = "checkpoint weights") -> None:
    """``state`` must map str keys to dense CPU-loadable tensors; else CheckpointError."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what}: expected a mapping of names to tensors, got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{what}: key {key!r} is not a string")
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{what}: '{key}' holds a {type(value).__name__}, not a tensor")
        if value.layout != torch.strided or value.is_meta:
            raise CheckpointError(f"{what}: '{key}' is not a dense tensor with data")
        if value.is_complex():
            raise CheckpointError(f"{what}: '{key}' is a complex tensor ({value.dtype})")


def is_original_state_dict(state: Mapping[str, object]) -> bool:
    """True for a state_dict in the original YOLACT layout (recognised by its head keys)."""
    return any(isinstance(k, str) and k.startswith(("proto_net.", "prediction_layers.0.")) for k in state)


def original_key_to_ours(key: str, backbone: str, num_fpn_inputs: int = 3) -> str:
    for pattern, repl in _RENAMES:
        key = re.sub(pattern, repl, key)
    match = re.match(r"^fpn\.(lat_layers|pred_layers)\.(\d+)\.(.*)$", key)
    if match:
        kind = {"lat_layers": "lateral", "pred_layers": "output"}[match.group(1)]
        key = f"fpn.{kind}.{num_fpn_inputs - 1 - int(match.group(2))}.{match.group(3)}"
    match = re.match(r"^backbone\.layers\.(\d+)\.(.*)$", key)
    if match:
        stage, rest = int(match.group(1)), match.group(2)
        resnet = backbone.startswith("resnet")
        key = f"backbone.layer{stage + 1}.{rest}" if resnet else f"backbone.stages.{stage}.{rest}"
    return key


def _drop_legacy_keys(state: Dict[str, Tensor], num_downsample: int) -> Dict[str, Tensor]:
    """Keys the original itself ignores: torchvision-style backbone duplicates in early
    checkpoints and FPN downsample layers beyond the config's count (v1.0 checkpoints)."""
    out = {}
    for key, value in state.items():
        if key.startswith("backbone.layer") and not key.startswith("backbone.layers"):
            continue
        match = re.match(r"^fpn\.downsample_layers\.(\d+)\.", key)
        if match and int(match.group(1)) >= num_downsample:
            continue
        out[key] = value
    return out


def rename_original_state_dict(state: Mapping[str, Tensor], config) -> Dict[str, Tensor]:
    """An original state_dict under our names for a model with ``config`` (a ModelConfig),
    legacy keys dropped; nothing is checked against a model (``convert_original_state_dict`` does)."""
    check_tensor_dict(state, "original checkpoint")
    state = _drop_legacy_keys(dict(state), config.fpn.num_downsample)
    return {original_key_to_ours(k, config.backbone.name): v for k, v in state.items()}


def convert_original_state_dict(state: Mapping[str, Tensor], model: nn.Module) -> Dict[str, Tensor]:
    """Rename an original state_dict to our names and check it against ``model``.

    Raises CheckpointError (a ValueError) listing missing, unexpected and mis-shaped keys.
    """
    check_tensor_dict(state, "original checkpoint")
    config = model.config
    state = _drop_legacy_keys(dict(state), config.fpn.num_downsample)
    if model.semantic_head is None:  # training-only head: its weights are unused at inference
        state = {k: v for k, v in state.items() if not k.startswith("semantic_seg_conv.")}
    renamed = rename_original_state_dict(state, config)
    own = model.state_dict()
    missing = sorted(set(own) - set(renamed))
    unexpected = sorted(k for k in state if original_key_to_ours(k, config.backbone.name) not in own)
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in renamed.items() if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            "original checkpoint does not match this config "
            f"(backbone {config.backbone.name}, {config.num_classes} classes, k={config.num_prototypes}): "
            + describe_key_problems(missing, unexpected, mismatched)
        )
    return renamed


def describe_key_problems(missing, unexpected, mismatched, limit: int = 4) -> str:
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)):
        if keys:
            more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            parts.append(f"{len(keys)} {label}: {', '.join(keys[:limit])}{more}")
    return "; ".join(parts)
