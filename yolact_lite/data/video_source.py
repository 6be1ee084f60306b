"""Opening a video source (a file, a camera index or a stream URL) with OpenCV, quietly.

OpenCV's backends (FFmpeg above all) print their own diagnostics straight to file
descriptor 2, so a source that fails to open would show the user a library line before our
one-line :class:`DataError`. Opening therefore runs with fd 2 pointed at ``/dev/null``, and
FFmpeg's own log level is set to quiet for the frames decoded afterwards.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Union

# OpenCV reads this once, when its FFmpeg backend starts (the first VideoCapture), so it must
# be set before that; a damaged frame would otherwise print FFmpeg lines while decoding.
# setdefault: a user who asks for FFmpeg's log keeps it.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402  (after the FFmpeg log level above)

from ..errors import DataError  # noqa: E402

__all__ = ["Source", "is_camera_source", "is_stream_source", "open_video", "stderr_silenced"]

Source = Union[str, int, os.PathLike]

# fd 2 is one per process: two threads silencing it at once would restore each other's copy
_STDERR_LOCK = threading.Lock()


def is_camera_source(source: Source) -> bool:
    return isinstance(source, int) or (isinstance(source, str) and re.fullmatch(r"\d+", source.strip()) is not None)


def is_stream_source(source: Source) -> bool:
    """A URL OpenCV opens as a stream (``rtsp://``, ``http://``, ...)."""
    return isinstance(source, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source.strip()) is not None


def open_video(source: Source):
    """``(cv2.VideoCapture, is_camera, label)``; raises DataError when it cannot be opened."""
    if is_camera_source(source):
        index = int(source)
        cap = _quietly(cv2.VideoCapture, index)
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


@contextmanager
def stderr_silenced():
    """File descriptor 2 goes to ``/dev/null`` inside the block and is restored after it, even
    on an exception. Python's own ``sys.stderr`` is flushed first so nothing written before
    is lost. Whatever any thread writes to fd 2 inside the block is dropped too, so keep the
    block to the one library call. Without a usable fd 2 (a detached process) the block runs
    as it is."""
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError, OSError):
            pass  # no sys.stderr, or a closed one: nothing of ours is pending
        try:
            saved = os.dup(2)
        except OSError:
            saved = None
        if saved is None:
            yield
            return
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, 2)
            finally:
                os.close(devnull)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _quietly(fn, *args):
    """Call ``fn`` with OpenCV's log and everything written to fd 2 silenced (our DataError
    says what failed)."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    previous = None if log is None else log.getLogLevel()
    if log is not None:
        log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        with stderr_silenced():
            return fn(*args)
    finally:
        if log is not None:
            log.setLogLevel(previous)
