"""Reading and writing checkpoints safely.

- Every file is read with ``torch.load(weights_only=True)``: a checkpoint that would need
  arbitrary Python objects unpickled is refused, never executed.
- Writes are atomic (temp file in the same folder, fsync, rename), so a crash or a full disk
  never leaves a half-written checkpoint in place of the last good one.

Our checkpoints are dicts ``{"format": "yolact_lite", "config": <config dict>, "model":
<state_dict>, ...}`` (training adds optimizer, scheduler, step and RNG states). Original YOLACT
checkpoints (plain state_dicts) are recognised by their keys and go through :mod:`.original`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..io_utils import write_atomic
from . import original
from .original import check_tensor_dict

FORMAT = "yolact_lite"
# 1: the first format (no "format_version" key).  2: config keys moved (config.MOVED_KEYS:
# migrated when read), "model" holds the inference weights (the EMA when on) and training
# checkpoints may add "train_model", "ema", "scheduler" and "schedule_plan".
FORMAT_VERSION = 2
ZIP_MAGIC, PICKLE_PROTO = b"PK\x03\x04", b"\x80"  # how torch.save's two formats begin


def read_state_file(path: Union[str, Path]) -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on CPU with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith((ZIP_MAGIC, PICKLE_PROTO)):
        raise CheckpointError(f"not a checkpoint: {path} (torch.save writes a zip archive or a pickle; "
                              f"this file starts with {head!r})")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = _unpickler_reason(str(exc))
        if "Unsupported global" in str(exc):
            raise CheckpointError(
                f"refusing to load {path}: it contains arbitrary Python objects that would have to be "
                "unpickled (only tensors, numbers, strings and containers are accepted)"
            ) from None
        raise CheckpointError(f"checkpoint is corrupt or truncated: {path} ({first})") from None
    except Exception as exc:  # torch's weights-only unpickler fails in many ways on corrupt bytes
        first = str(exc).splitlines()[0] if str(exc) else ""
        first = first.split(". This is an internal miniz error")[0]  # then advice meant for torch's developers
        first = f"{type(exc).__name__}: {first}" if not isinstance(exc, (RuntimeError, OSError)) else first
        raise CheckpointError(f"checkpoint is corrupt or truncated: {path} ({first.strip() or 'unreadable'})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, expected a dict")
    return data


def _unpickler_reason(message: str) -> str:
    """The one line of torch's weights-only unpickler message that says what was wrong."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else "")
    return lines[0] if lines else ""


def save_atomic(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save`` to ``path`` atomically (:func:`yolact_lite.io_utils.write_atomic`)."""
    write_atomic(path, lambda f: torch.save(obj, f), what="checkpoint")


def model_checkpoint(model: nn.Module, config_dict: Mapping[str, Any], **extra: Any) -> Dict[str, Any]:
    """The dict we save: format tag, config, model weights, plus any training state."""
    state = model.module.state_dict() if hasattr(model, "module") else model.state_dict()
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "config": dict(config_dict), "model": state,
            **extra}


def carried_config(data: Mapping[str, Any], quiet: bool = False):
    """The :class:`~yolact_lite.config.Config` a checkpoint of ours carries, or None (an
    original YOLACT ``.pth``, or a bare state dict)."""
    from ..config import config_from_dict

    saved = data.get("config") if isinstance(data, Mapping) else None
    return config_from_dict(dict(saved), quiet=quiet) if isinstance(saved, Mapping) and saved.get("model") else None


def keep_classes(data: Mapping[str, Any], names: Sequence[str]) -> Dict[str, Any]:
    """A checkpoint of ours -> the same model predicting only the classes ``names`` (in that
    order): its config, weights, ``class_names`` and ``category_ids`` (when it has them) cut down to them
    (:func:`yolact_lite.model.classes.select_classes`).  Training state is dropped."""
    from ..config import with_overrides
    from ..model.classes import select_classes
    from ..model.priors import anchors_per_location

    config = carried_config(data, quiet=True)
    if config is None or not isinstance(data.get("model"), Mapping):
        raise CheckpointError("keeping classes needs a yolact_lite checkpoint that carries its config")
    num_classes = config.model.num_classes
    have = list(data.get("class_names") or [])
    if len(have) != num_classes:
        raise CheckpointError(f"the checkpoint names {len(have)} classes for a {num_classes}-class model; "
                              "keeping classes by name needs all of them")
    missing = [n for n in names if n not in have]
    if missing or not names:
        raise CheckpointError(f"class(es) {', '.join(missing) or '(none given)'} not in the checkpoint "
                              f"(it has {', '.join(have[:8])}{' ...' if len(have) > 8 else ''})")
    labels = [have.index(n) for n in names]
    a = config.model.anchors
    state = select_classes(data["model"], labels, num_classes, anchors_per_location(a.scales[0], a.aspect_ratios))
    config = with_overrides(config, [f"model.num_classes={len(labels)}"])
    out = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_dict(), "model": state,
           "class_names": list(names)}
    ids = data.get("category_ids")
    if ids:  # else the Predictor's default ids apply, as they do to checkpoints without any
        out["category_ids"] = [int(ids[i]) for i in labels]
    return out


def checkpoint_version(data: Mapping[str, Any], where: str = "checkpoint") -> int:
    """The format version of one of our checkpoints (1 when unversioned); a version newer than
    this library reads is a CheckpointError."""
    version = data.get("format_version", 1)
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where}: format_version {version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{where} was written by a newer yolact_lite (checkpoint format {version}; "
                              f"this version reads up to {FORMAT_VERSION}): upgrade yolact_lite")
    return version


def _config_differences(saved: Mapping, current: Mapping, prefix: str = "") -> list:
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}={a!r} (checkpoint) vs {b!r}")
    return diffs


def load_state_strict(model: nn.Module, state: Mapping[str, Tensor], where: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with a one-line CheckpointError naming
    ``where`` (keys are checked by the caller; this catches e.g. uncopyable dtypes)."""
    with torch.no_grad():
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            last = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else "RuntimeError"
            raise CheckpointError(f"{where} weights cannot be loaded: {last}") from None


def load_weights(model: nn.Module, source: Union[str, Path, Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """Load our checkpoint or an original YOLACT state_dict into ``model`` (strictly).

    Returns the checkpoint's saved config dict (None for original checkpoints). A checkpoint
    whose weights do not fit raises CheckpointError naming the config keys that differ.
    """
    data = dict(source) if isinstance(source, Mapping) else read_state_file(source)
    if original.is_original_state_dict(data):
        load_original(model, data)
        return None
    if data.get("format") != FORMAT or not isinstance(data.get("model"), Mapping):
        raise CheckpointError(
            f"{source if not isinstance(source, Mapping) else 'checkpoint'} is neither a yolact_lite "
            "checkpoint nor an original YOLACT state_dict"
        )
    checkpoint_version(data, str(source) if not isinstance(source, Mapping) else "checkpoint")
    state: Mapping[str, Tensor] = data["model"]
    check_tensor_dict(state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        saved_cfg = data.get("config")
        saved_model_cfg = saved_cfg.get("model") if isinstance(saved_cfg, Mapping) else None
        if not isinstance(saved_model_cfg, Mapping):
            saved_model_cfg = {}
        current = getattr(model, "config", None)
        diffs = []
        if saved_model_cfg and current is not None:
            import dataclasses

            diffs = _config_differences(saved_model_cfg, dataclasses.asdict(current), "model.")
        hint = f" — config differs: {'; '.join(diffs[:4])}" if diffs else ""
        raise CheckpointError(
            "checkpoint does not match the model: "
            + original.describe_key_problems(missing, unexpected, mismatched) + hint
        )
    load_state_strict(model, state, "checkpoint")
    config = data.get("config")
    return config if isinstance(config, Mapping) else None


def load_original(model: nn.Module, path_or_state_dict: Union[str, Mapping[str, Tensor]]) -> nn.Module:
    """Load an original YOLACT checkpoint (e.g. ``yolact_resnet50_54_800000.pth``) into ``model``.

    The file is read with ``torch.load(weights_only=True)``; the load is strict.
    """
    if isinstance(path_or_state_dict, Mapping):
        state = path_or_state_dict
    else:
        state = read_state_file(path_or_state_dict)
    if not original.is_original_state_dict(state):
        raise CheckpointError("not an original YOLACT state_dict (no proto_net./prediction_layers. keys)")
    load_state_strict(model, original.convert_original_state_dict(state, model), "original checkpoint")
    return model
