"""Atomic file writes: a temp file beside the target, fsync, then rename over it.

A crash, a kill or a full disk never leaves a half-written file in place of the last good
one; a temp file left by a killed process is named ``.NAME.*.tmp``.  Every OS error becomes a
one-line :class:`~yolact_lite.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

from .errors import CheckpointError

__all__ = ["write_atomic", "write_text_atomic", "write_json_atomic"]


def write_atomic(path: Union[str, Path], write: Callable[[BinaryIO], None], what: str = "file") -> None:
    """Call ``write(f)`` on a binary temp file beside ``path``, then atomically replace ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise CheckpointError(f"could not write {what} {path}: {exc.strerror or exc}") from None
        raise


def write_text_atomic(path: Union[str, Path], text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_json_atomic(path: Union[str, Path], obj: Any, indent: int = None) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent))
