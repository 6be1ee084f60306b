"""yolact_lite: real-time instance segmentation in the YOLACT style."""

from .config import Config, load_config, with_overrides
from .errors import CheckpointError, ConfigError, DataError, YolactError
from .model import Yolact, build_model

__version__ = "0.1.0"

__all__ = [
    "Config", "load_config", "with_overrides", "build_model", "Yolact", "Predictor",
    "YolactError", "ConfigError", "DataError", "CheckpointError",
]


def __getattr__(name):
    # The predictor pulls in OpenCV and the NMS extension; import it only when asked for.
    if name == "Predictor":
        from .inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'yolact_lite' has no attribute {name!r}")
