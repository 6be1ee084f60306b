"""yolact_lite: real-time instance segmentation in the YOLACT style.

The package is layered (docs/architecture.md): a small core at the top level (config,
structures, errors, box and mask math, formats, I/O, hardware, progress), then ``model`` and
``ops``, then ``data``, ``loss`` and ``checkpoint``, then ``inference``, ``evaluation``,
``engine`` and ``cli``.  A module imports only from its own layer or lower ones.  This file
imports the core eagerly and every other exported name on first use, so ``import
yolact_lite.config`` (or ``yolact_lite.ops``) loads no model.
"""

from importlib import import_module

from .config import Config, load_config, with_overrides
from .errors import CheckpointError, ConfigError, DataError, YolactError

__version__ = "0.1.0"

__all__ = [
    "Config", "load_config", "with_overrides", "build_model", "Yolact", "Predictor", "Detections",
    "run_video", "run_sequential", "VideoSummary", "Tracker", "TrackerSettings", "export_onnx",
    "export_torchscript", "YolactError", "ConfigError", "DataError", "CheckpointError",
]

# The model pulls in torch, inference OpenCV and the NMS extension: imported only when asked for.
_LAZY = {
    "Yolact": "yolact_lite.model.yolact",
    "build_model": "yolact_lite.model.yolact",
    "Predictor": "yolact_lite.inference.predictor",
    "Detections": "yolact_lite.structures",
    "run_video": "yolact_lite.inference.video",
    "run_sequential": "yolact_lite.inference.video",
    "VideoSummary": "yolact_lite.inference.video_output",
    "Tracker": "yolact_lite.inference.tracking",
    "TrackerSettings": "yolact_lite.inference.tracking",
    "export_onnx": "yolact_lite.inference.export",
    "export_torchscript": "yolact_lite.inference.export",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yolact_lite' has no attribute {name!r}")
