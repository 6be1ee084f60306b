"""Data: image reading, COCO datasets, augmentation transforms and network preprocessing.

Layer: data / loss / checkpoint.  May import the core, ``model`` and ``ops``; never
``inference``, ``evaluation``, ``engine`` or ``cli``.
"""

from .coco import CocoDataset, coco_subset, collate, load_coco_json, scorable_ground_truth, validate_coco_dict
from .image_io import decode_image, read_image
from .preprocess import preprocess_batch, preprocess_image
from .transforms import (
    Compose,
    ConvertToFloat,
    Expand,
    Letterbox,
    MinBoxFilter,
    PhotometricDistort,
    RandomMirror,
    RandomSampleCrop,
    Resize,
    ToTrainingTensors,
    build_eval_transform,
    build_train_transform,
)

__all__ = [
    "read_image", "decode_image",
    "CocoDataset", "coco_subset", "collate", "load_coco_json", "scorable_ground_truth", "validate_coco_dict",
    "preprocess_image", "preprocess_batch",
    "Compose", "ConvertToFloat", "PhotometricDistort", "Expand", "RandomSampleCrop",
    "RandomMirror", "Resize", "Letterbox", "MinBoxFilter", "ToTrainingTensors",
    "build_train_transform", "build_eval_transform",
]
