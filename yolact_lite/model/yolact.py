"""The YOLACT / YOLACT++ network: backbone -> FPN -> protonet + shared prediction head."""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor, nn

from ..config import Config, ModelConfig, require_config
from .backbones import build_backbone
from .fpn import FPN
from .freeze import freeze_backbone_stages
from .heads import MaskIoUHead, PredictionHead, ProtoNet
from .pretrained import load_imagenet_weights
from .priors import anchors_per_location, make_priors

# Layers whose shapes depend on the class count (module names in a Yolact model); a model
# fine-tuned on other classes re-initialises them (init_weights.py).
CLASS_DEPENDENT_LAYERS = ("head.cls", "semantic_head", "mask_iou_head.classify")


@torch.no_grad()
def init_conv_(conv: nn.Conv2d) -> None:
    """Xavier-uniform weight and zero bias: every conv outside the backbone, as the original."""
    nn.init.xavier_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class Yolact(nn.Module):
    """YOLACT network.

    ``forward(images)`` takes a normalised RGB batch [B, 3, S, S] and returns a dict:

    - ``box_deltas`` [B, P, 4]: SSD-encoded offsets against ``priors`` (variances 0.1, 0.2)
    - ``class_logits`` [B, P, C+1]: raw logits, index 0 = background
    - ``coefficients`` [B, P, k]: mask coefficients after tanh
    - ``prototypes`` [B, Hp, Wp, k]: prototypes after ReLU (Hp = 2 x the proto level's height)
    - ``priors`` [P, 4]: (cx, cy, w, h) relative to the input
    - ``semantic_logits`` [B, C, H, W] at the proto level: training mode only, when the config has the head

    YOLACT++'s mask-IoU head runs on assembled masks after NMS, so it is not part of this
    output: call ``model.mask_iou_head`` (present when ``config.mask_iou_head``).

    With ``config.backbone.frozen_stages != 0`` the first backbone stages are frozen at
    construction (``model/freeze.py``); ``frozen_backbone_modules`` names them.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        bb = config.backbone
        self.backbone = build_backbone(bb.name, bb.dcn_layers, bb.dcn_interval)
        # Backbones return C2..C5; the FPN starts at C3 (original) or C2 (P2 level).
        self._first_feature = config.fpn.min_level - 2
        self._proto_index = config.proto_level - config.fpn.min_level
        in_channels = self.backbone.out_channels[self._first_feature:]
        self.fpn = FPN(in_channels, config.fpn.num_features, config.fpn.num_downsample)
        self.protonet = ProtoNet(config.fpn.num_features, config.protonet_channels, config.num_prototypes)
        num_anchors = anchors_per_location(config.anchors.scales[0], config.anchors.aspect_ratios)
        self.head = PredictionHead(
            config.fpn.num_features, config.head_channels, num_anchors,
            config.num_classes, config.num_prototypes,
        )
        self.semantic_head = (
            nn.Conv2d(config.fpn.num_features, config.num_classes, 1) if config.semantic_head else None
        )
        self.mask_iou_head = MaskIoUHead(config.num_classes) if config.mask_iou_head else None
        self._init_weights()
        # Frozen here, not by the trainer, so that training, the Predictor and export all see
        # the same modules (the state-dict keys do not change).
        self.frozen_backbone_modules = freeze_backbone_stages(self.backbone, bb.frozen_stages)

    def _init_weights(self) -> None:
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d) and not name.startswith("backbone."):
                init_conv_(module)
        if self.config.coefficient_init == "zero":
            nn.init.zeros_(self.head.coef.weight)

    def priors_for(self, level_sizes) -> Tensor:
        a = self.config.anchors
        return make_priors(level_sizes, self.config.input_size, a.scales, a.aspect_ratios, a.square_anchors)

    def forward(self, images: Tensor) -> Dict[str, Tensor]:
        levels = self.fpn(self.backbone(images)[self._first_feature:])
        box_deltas, class_logits, coefficients = self.head(levels)
        priors = self.priors_for([tuple(x.shape[-2:]) for x in levels]).to(images.device)
        proto_source = levels[self._proto_index]
        out = {
            "box_deltas": box_deltas,
            "class_logits": class_logits,
            "coefficients": coefficients,
            "prototypes": self.protonet(proto_source),
            "priors": priors,
        }
        if self.training and self.semantic_head is not None:
            out["semantic_logits"] = self.semantic_head(proto_source)
        return out


def build_model(config: Config | ModelConfig, pretrained: bool = True) -> Yolact:
    """Build the network for ``config``; ``pretrained`` loads the backbone's ImageNet weights
    (offline for EfficientNet-Lite0; torchvision's download or ``backbone.weights`` for ResNet).
    ``model.backbone.frozen_stages`` is applied (see :class:`Yolact`)."""
    model_config = config if isinstance(config, ModelConfig) else require_config(config, "build_model").model
    model = Yolact(model_config)
    if pretrained:
        load_imagenet_weights(model.backbone, model_config.backbone)
    return model


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

