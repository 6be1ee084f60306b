"""Compiled and reference ops: Fast NMS and traditional NMS."""
from yolact_lite.ops.nms import (
    cuda_extension_available,
    extension_available,
    fast_nms,
    fast_nms_reference,
    traditional_nms,
)

__all__ = [
    "cuda_extension_available",
    "extension_available",
    "fast_nms",
    "fast_nms_reference",
    "traditional_nms",
]
