"""Training engine: the loop (:mod:`.loop`), one step (:mod:`.step`), hooks (:mod:`.hooks`),
lr schedules (:mod:`.schedule`), the training checkpoints (:mod:`.checkpointer`), EMA, DDP helpers and
the :class:`~.trainer.Trainer`.

Layer: engine.  May import every layer below (core, model, ops, data, loss, checkpoint,
inference, evaluation); never ``cli``.
"""

from .schedule import CosineSchedule, Schedule, build_schedule, fit_to_steps

__all__ = ["Schedule", "CosineSchedule", "build_schedule", "fit_to_steps",
           "Trainer", "TrainOptions", "TrainResult", "NonFiniteLossError"]


def __getattr__(name):
    # The trainer pulls in the data pipeline, the loss and the model; import it on demand so
    # that the schedule stays a light, pure module.
    if name in ("Trainer", "TrainOptions", "TrainResult", "NonFiniteLossError"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'yolact_lite.engine' has no attribute {name!r}")
