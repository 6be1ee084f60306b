"""What a training run is told besides its config (:class:`TrainOptions`) and what it returns
(:class:`TrainResult`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import ConfigError

__all__ = ["TrainOptions", "TrainResult", "train_options"]


@dataclass
class TrainOptions:
    """Everything about a run that is not in the :class:`Config`."""

    train_json: str
    train_images: str
    out: str
    val_json: Optional[str] = None
    val_images: Optional[str] = None
    max_minutes: Optional[float] = None  # wall-clock budget of this process (training + periodic evals)
    max_iter: Optional[int] = None  # iterations to run (after autoscaling); None: the schedule's
    resume: bool = False
    device: str = "cpu"
    pretrained: bool = True
    init_weights: Optional[str] = None  # start from this checkpoint (ours or the original's)
    eval_max_images: Optional[int] = None
    deterministic: bool = False
    channels_last: Optional[bool] = None  # None: channels_last_rule(device, precision)
    progress: bool = True
    keep_freed_memory: bool = True  # glibc keeps freed blocks for reuse (hardware.keep_freed_memory)

    def __post_init__(self) -> None:
        """The mistakes that would otherwise surface only at the first evaluation or step."""
        if bool(self.val_json) != bool(self.val_images):
            raise ConfigError("val_json and val_images go together (the validation set's json and images)")
        if self.eval_max_images is not None and self.eval_max_images < 1:
            raise ConfigError(f"eval_max_images must be >= 1 or None; got {self.eval_max_images}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"max_minutes must be > 0 or None; got {self.max_minutes}")


@dataclass
class TrainResult:
    step: int
    reason: str  # "finished" | "time_budget"
    best_mask_ap: Optional[float]
    last_metrics: Optional[Dict[str, Any]]
    skipped_steps: int
    checksum: str
    run_dir: str


def train_options(options: Any) -> TrainOptions:
    """``options`` when it is a :class:`TrainOptions`, else a one-line ConfigError."""
    if not isinstance(options, TrainOptions):
        raise ConfigError(f"Trainer takes TrainOptions, got {type(options).__name__}")
    return options
