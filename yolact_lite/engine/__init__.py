"""Training engine: lr schedule, distributed helpers and the trainer (``scripts/train.py``)."""

from .schedule import Schedule, autoscale_factor, build_schedule

__all__ = [
    "Schedule", "autoscale_factor", "build_schedule",
    "Trainer", "TrainOptions", "TrainResult", "NonFiniteLossError", "main",
]


def __getattr__(name):
    # The trainer pulls in the data pipeline, the loss and the model; import it on demand so
    # that the schedule stays a light, pure module.
    if name in ("Trainer", "TrainOptions", "TrainResult", "NonFiniteLossError", "main"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'yolact_lite.engine' has no attribute {name!r}")
