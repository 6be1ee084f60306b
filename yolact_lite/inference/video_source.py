"""Opening a video source: a file, a camera index or a stream URL, as a
``cv2.VideoCapture`` (errors that are the user's raise a one-line :class:`DataError`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Union

import cv2

from ..errors import DataError

__all__ = ["Source", "is_camera_source", "is_stream_source", "open_video"]

Source = Union[str, int, os.PathLike]


def is_camera_source(source: Source) -> bool:
    return isinstance(source, int) or (isinstance(source, str) and re.fullmatch(r"\d+", source.strip()) is not None)


def is_stream_source(source: Source) -> bool:
    """A URL OpenCV opens as a stream (``rtsp://``, ``http://``, ...)."""
    return isinstance(source, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source.strip()) is not None


def open_video(source: Source):
    """``(cv2.VideoCapture, is_camera, label)``; raises DataError when it cannot be opened."""
    if is_camera_source(source):
        index = int(source)
        cap = _quietly(cv2.VideoCapture, index)  # OpenCV logs its own warnings otherwise
        if not cap.isOpened():
            cap.release()
            raise DataError(f"camera {index} could not be opened (no such device or no permission)")
        return cap, True, f"camera {index}"
    if is_stream_source(source):  # a stream is live like a camera: stale frames may be dropped
        cap = _quietly(cv2.VideoCapture, str(source))
        if not cap.isOpened():
            cap.release()
            raise DataError(f"{source}: cannot open the stream (unreachable, or a format OpenCV cannot read)")
        return cap, True, str(source)
    path = Path(os.fspath(source))
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a video file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    cap = _quietly(cv2.VideoCapture, str(path))
    if not cap.isOpened():
        cap.release()
        raise DataError(f"{path}: cannot open as a video (unsupported format or corrupt file)")
    return cap, False, str(path)


def _quietly(fn, *args):
    """Call ``fn`` with OpenCV's console log silenced (our DataError says what failed)."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:  # pragma: no cover - old OpenCV
        return fn(*args)
    previous = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        return fn(*args)
    finally:
        log.setLogLevel(previous)
