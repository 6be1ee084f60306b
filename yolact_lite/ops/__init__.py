"""Compiled and reference ops: Fast NMS and traditional NMS (the ``_C`` extension, or torch).

Layer: model / ops.  May import the core (and the ``_C`` extension) only; importing it loads
no model.
"""

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
