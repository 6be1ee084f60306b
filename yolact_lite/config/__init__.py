"""Configs: the typed schema (:mod:`.schema`), reading YAML and overrides (:mod:`.loading`),
range checks (:mod:`.validation`) and the migrations of older layouts (:mod:`.migrations`).

Layer: core.  May import only the other core modules (``errors``); never torch, the model or
anything above it, so that ``import yolact_lite.config`` stays light.
"""

from .loading import CONFIG_DIR, config_from_dict, config_names, load_config, require_config, with_overrides
from .migrations import MIGRATIONS, Migration, migrate_config_dict
from .schema import (
    AUGMENTATIONS,
    BACKBONES,
    CLASS_BALANCES,
    CLASSIFICATIONS,
    COEFFICIENT_INITS,
    CONFIG_VERSION,
    CROP_MODES,
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    MASK_CROPS,
    MASK_SELECTIONS,
    NMS_MODES,
    OPTIMIZERS,
    SCHEDULES,
    AnchorConfig,
    AugmentConfig,
    BackboneConfig,
    Config,
    FPNConfig,
    InferenceConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    autoscaled,
)
from .validation import validate

__all__ = [
    "Config", "ModelConfig", "BackboneConfig", "FPNConfig", "AnchorConfig", "LossConfig", "TrainConfig",
    "AugmentConfig", "InferenceConfig", "CONFIG_VERSION", "load_config", "require_config", "with_overrides",
    "config_from_dict",
    "config_names", "CONFIG_DIR", "validate", "migrate_config_dict", "MIGRATIONS", "Migration", "autoscaled",
    "IMAGENET_MEAN_RGB", "IMAGENET_STD_RGB", "BACKBONES", "MASK_SELECTIONS", "CLASSIFICATIONS", "MASK_CROPS",
    "OPTIMIZERS", "COEFFICIENT_INITS", "NMS_MODES", "CLASS_BALANCES", "SCHEDULES", "AUGMENTATIONS", "CROP_MODES",
]
