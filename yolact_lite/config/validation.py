"""Range and consistency checks of a built :class:`~.schema.Config` that types alone
cannot express; each failure is a one-line :class:`~yolact_lite.errors.ConfigError`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import ConfigError
from .schema import (
    AUGMENTATIONS,
    BACKBONES,
    CLASS_BALANCES,
    CLASSIFICATIONS,
    COEFFICIENT_INITS,
    CROP_MODES,
    MASK_CROPS,
    MASK_SELECTIONS,
    NMS_MODES,
    OPTIMIZERS,
    SCHEDULES,
    AugmentConfig,
    Config,
    ModelConfig,
    TrainConfig,
    autoscaled,
)

# YOLACT++'s mask-IoU head (model.heads.MaskIoUHead) runs five unpadded 3x3 stride-2 convs:
# a mask narrower than this leaves nothing for the last one.
MASK_IOU_MIN_SIDE = 63


def prototype_side(m: ModelConfig) -> int:
    """Side of the prototypes: the proto level's feature map (each stride-2 step rounds up, as
    padded convs do) upsampled 2x by the protonet."""
    return 2 * math.ceil(m.input_size / 2 ** m.proto_level)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _one_of(value: str, choices: tuple, key: str) -> None:
    _check(value in choices, f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _check_finite(node: Any, where: str) -> None:
    """Every float in the tree (lists included) must be finite: NaN/inf are never meant."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            _check_finite(getattr(node, f.name), f"{where}.{f.name}" if where else f.name)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_finite(v, f"{where}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{where} must be a finite number; got {node}")


def validate(config: Config) -> None:
    """Range and consistency checks that types alone cannot express (first failure raised)."""
    _check_finite(config, "")
    _validate_train(config.train)
    _validate_model(config.model)
    _validate_loss_and_inference(config)


def _validate_train(t: TrainConfig) -> None:
    # values torch's optimisers / the schedule would refuse with a traceback
    _check(t.momentum >= 0, f"train.momentum must be >= 0; got {t.momentum}")
    _check(t.weight_decay >= 0, f"train.weight_decay must be >= 0; got {t.weight_decay}")
    _check(t.gamma > 0 and t.warmup_init >= 0, "train.gamma must be > 0 and train.warmup_init >= 0")
    _check(t.reference_batch >= 1, f"train.reference_batch must be >= 1; got {t.reference_batch}")
    _check(t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 disables); got {t.grad_clip}")
    _check(t.batch_size >= 1, f"train.batch_size must be >= 1; got {t.batch_size}")
    lr, max_iter, _, factor = autoscaled(t)
    _check(max_iter >= 1, f"train.max_iter is {max_iter} after autoscaling by batch_size / reference_batch "
                          f"= {factor:g}; it must be >= 1")
    _check(math.isfinite(lr), "train.lr (after autoscaling) must be finite")
    _one_of(t.schedule, SCHEDULES, "train.schedule")
    _validate_augment(t.augment)
    _check(t.eval_every_minutes >= 0, "train.eval_every_minutes must be >= 0 (0: off)")
    _check(0 <= t.final_lr_ratio <= 1, f"train.final_lr_ratio must be in [0, 1]; got {t.final_lr_ratio}")
    _check(0 <= t.ema_decay < 1, f"train.ema_decay must be in [0, 1) (0: off); got {t.ema_decay}")
    _check(t.ema_ramp_steps >= 0, f"train.ema_ramp_steps must be >= 0; got {t.ema_ramp_steps}")


def _validate_model(m: ModelConfig) -> None:
    _check(m.num_classes >= 1, f"model.num_classes must be >= 1; got {m.num_classes}")
    _check(m.input_size >= 32, f"model.input_size must be >= 32; got {m.input_size}")
    _check(m.num_prototypes >= 1, f"model.num_prototypes must be >= 1; got {m.num_prototypes}")
    _check(m.protonet_channels >= 1, "model.protonet_channels must be >= 1")
    _check(m.head_channels >= 1, "model.head_channels must be >= 1")
    _check(len(m.pixel_mean) == 3 and len(m.pixel_std) == 3, "pixel_mean/pixel_std need 3 values")
    _check(all(s > 0 for s in m.pixel_std), "model.pixel_std values must be > 0")
    _one_of(m.backbone.name, BACKBONES, "model.backbone.name")
    _check(len(m.backbone.dcn_layers) == 4, "model.backbone.dcn_layers needs 4 values (C2..C5)")
    _check(m.backbone.frozen_stages >= -1,
           f"model.backbone.frozen_stages must be -1 (all) or >= 0; got {m.backbone.frozen_stages}")
    _check(m.backbone.dcn_interval >= 1, "model.backbone.dcn_interval must be >= 1")
    _check(
        not any(m.backbone.dcn_layers) or m.backbone.name.startswith("resnet"),
        "deformable convs (model.backbone.dcn_layers) are supported on ResNet backbones only",
    )
    _one_of(m.coefficient_init, COEFFICIENT_INITS, "model.coefficient_init")
    _check(m.fpn.num_features >= 1, "model.fpn.num_features must be >= 1")
    _check(m.fpn.num_downsample >= 0, "model.fpn.num_downsample must be >= 0")
    _check(m.fpn.min_level in (2, 3), f"model.fpn.min_level must be 2 or 3; got {m.fpn.min_level}")
    _check(
        m.fpn.min_level <= m.proto_level <= 5,
        f"model.proto_level must be between fpn.min_level ({m.fpn.min_level}) and 5; got {m.proto_level}",
    )
    if m.mask_iou_head:
        smallest = (math.ceil(MASK_IOU_MIN_SIDE / 2) - 1) * 2 ** m.proto_level + 1
        _check(
            prototype_side(m) >= MASK_IOU_MIN_SIDE,
            f"model.mask_iou_head needs prototypes of at least {MASK_IOU_MIN_SIDE} px; model.input_size "
            f"{m.input_size} gives {prototype_side(m)} at proto_level {m.proto_level}: use an input_size >= "
            f"{smallest} or mask_iou_head=false",
        )
    levels = 6 - m.fpn.min_level + m.fpn.num_downsample
    _check(
        len(m.anchors.scales) == levels,
        f"model.anchors.scales needs one list per level ({levels}); got {len(m.anchors.scales)}",
    )
    _check(
        all(len(s) >= 1 and all(x > 0 for x in s) for s in m.anchors.scales),
        "model.anchors.scales must be positive, at least one per level",
    )
    _check(
        len(m.anchors.aspect_ratios) >= 1 and all(r > 0 for r in m.anchors.aspect_ratios),
        "model.anchors.aspect_ratios must be positive",
    )


def _validate_loss_and_inference(config: Config) -> None:
    t, loss, inf = config.train, config.loss, config.inference
    _check(0 < loss.negative_iou <= loss.positive_iou <= 1, "need 0 < negative_iou <= positive_iou <= 1")
    _one_of(loss.classification, CLASSIFICATIONS, "loss.classification")
    _check(not t.empty_images or loss.classification == "focal",
           "train.empty_images needs loss.classification=focal (OHEM takes no negatives from an image "
           "without objects, so they would only cost time)")
    _one_of(loss.mask_crop, MASK_CROPS, "loss.mask_crop")
    _check(loss.ohem_neg_pos_ratio >= 1, "loss.ohem_neg_pos_ratio must be >= 1")
    _check(t.batch_size >= 1, f"train.batch_size must be >= 1; got {t.batch_size}")
    _check(t.lr > 0, "train.lr must be > 0")
    _check(t.max_iter >= 1, "train.max_iter must be >= 1")
    _one_of(t.optimizer, OPTIMIZERS, "train.optimizer")
    for prefix, multiplier in t.lr_multipliers.items():
        _check(multiplier >= 0, f"train.lr_multipliers.{prefix} must be >= 0; got {multiplier}")
    _check(loss.masks_to_train >= 1, f"loss.masks_to_train must be >= 1; got {loss.masks_to_train}")
    _one_of(loss.masks_selection, MASK_SELECTIONS, "loss.masks_selection")
    _check(t.num_workers >= 0, "train.num_workers must be >= 0")
    _one_of(inf.nms, NMS_MODES, "inference.nms")
    _check(0 < inf.nms_iou <= 1, "inference.nms_iou must be in (0, 1]")
    _check(inf.nms_top_k >= 1 and inf.max_detections >= 1, "nms_top_k and max_detections must be >= 1")
    _check(0 <= inf.mask_threshold <= 1, "inference.mask_threshold must be in [0, 1]")
    for key in ("candidate_threshold", "detection_threshold"):  # scores are in [0, 1]: 1 keeps nothing
        value = getattr(inf, key)
        _check(0 <= value < 1, f"inference.{key} must be in [0, 1); got {value}")
    _check(loss.mask_crop_padding >= 0, "loss.mask_crop_padding must be >= 0")
    _check(loss.mask_size_weight_power >= 0, "loss.mask_size_weight_power must be >= 0")
    _one_of(loss.class_balance, CLASS_BALANCES, "loss.class_balance")
    _check(0 <= loss.class_balance_beta <= 1, "loss.class_balance_beta must be in [0, 1]")
    _one_of(inf.crop_mode, CROP_MODES, "inference.crop_mode")
    _check(inf.crop_softness > 0, f"inference.crop_softness must be > 0; got {inf.crop_softness}")


def _validate_augment(a: AugmentConfig) -> None:
    _one_of(a.chain, AUGMENTATIONS, "train.augment.chain")
    for key, (lo_min, hi_max) in (("scale_range", (0.01, 10.0)), ("paste_scale", (0.01, 4.0))):
        r = getattr(a, key)
        _check(len(r) == 2 and lo_min <= r[0] <= r[1] <= hi_max,
               f"train.augment.{key} must be [low, high] with {lo_min} <= low <= high <= {hi_max}; got {r}")
    _check(a.chain == "light" or a.scale_range == AugmentConfig().scale_range,
           f"train.augment.scale_range is the zoom of chain=light; chain is {a.chain!r}")
    for key in ("copy_paste", "mosaic", "mosaic_close"):
        _check(0 <= getattr(a, key) <= 1, f"train.augment.{key} must be in [0, 1]; got {getattr(a, key)}")
