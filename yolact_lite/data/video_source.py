"""Opening a video source (a file, a camera index or a stream URL) with OpenCV, quietly.

OpenCV's backends (FFmpeg above all) print their own diagnostics straight to file
descriptor 2, so a source that fails to open would show the user a library line before our
one-line :class:`DataError`. Opening therefore runs with fd 2 pointed at ``/dev/null``, and
FFmpeg's own log level is set to quiet for the frames decoded afterwards.

Live sources (a camera or a stream URL) must open within a timeout: a stream gets FFmpeg's own
open / read timeouts, and every live open also runs on a helper thread that the caller stops
waiting for at the deadline, so a backend that ignores the timeout cannot hang the run.
:class:`LiveSource` wraps an open live capture and reopens it, with backoff and a limit, when
it disconnects or stalls.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional, Union

# OpenCV reads this once, when its FFmpeg backend starts (the first VideoCapture), so it must
# be set before that; a damaged frame would otherwise print FFmpeg lines while decoding.
# setdefault: a user who asks for FFmpeg's log keeps it.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402  (after the FFmpeg log level above)

from ..errors import DataError  # noqa: E402

__all__ = ["Source", "LivePolicy", "LiveSource", "DEFAULT_OPEN_TIMEOUT", "is_camera_source", "is_stream_source",
           "open_video", "stderr_silenced", "reported_frame_count"]

Source = Union[str, int, os.PathLike]

# fd 2 is one per process: two threads silencing it at once would restore each other's copy
_STDERR_LOCK = threading.Lock()

DEFAULT_OPEN_TIMEOUT = 10.0  # seconds a live source may take to open (or a stream to deliver a frame)
# extra wait on top of FFmpeg's own timeout before the helper thread is abandoned: FFmpeg
# normally gives up first, with its own (silenced) result
_GUARD_MARGIN = 1.0


def is_camera_source(source: Source) -> bool:
    return isinstance(source, int) or (isinstance(source, str) and re.fullmatch(r"\d+", source.strip()) is not None)


def is_stream_source(source: Source) -> bool:
    """A URL OpenCV opens as a stream (``rtsp://``, ``http://``, ...)."""
    return isinstance(source, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source.strip()) is not None


def open_video(source: Source, open_timeout: float = DEFAULT_OPEN_TIMEOUT, read_timeout: Optional[float] = None):
    """``(cv2.VideoCapture, is_live, label)``; raises DataError when it cannot be opened.

    A live source (camera or stream URL) must open within ``open_timeout`` seconds; a stream's
    reads give up after ``read_timeout`` seconds without data (None: ``open_timeout``). A file
    has no deadline (it is local)."""
    if is_camera_source(source):
        index = int(source)
        cap = _open_within(lambda: cv2.VideoCapture(index), open_timeout)
        if cap is None:
            raise DataError(f"camera {index} did not open within {open_timeout:g} s")
        if not cap.isOpened():
            cap.release()
            raise DataError(f"camera {index} could not be opened (no such device or no permission)")
        return cap, True, f"camera {index}"
    if is_stream_source(source):  # a stream is live like a camera: stale frames may be dropped
        return _open_stream(str(source), open_timeout, open_timeout if read_timeout is None else read_timeout)
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


def _open_stream(url: str, open_timeout: float, read_timeout: float):
    """A stream URL through FFmpeg with its open and read timeouts set (OpenCV >= 4.2 takes
    them as open parameters); without FFmpeg, whatever backend OpenCV picks."""
    if _has_ffmpeg():
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout * 1000)]
        make = lambda: cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)  # noqa: E731
    else:  # pragma: no cover - every OpenCV wheel we install has FFmpeg
        make = lambda: cv2.VideoCapture(url)  # noqa: E731
    start = time.monotonic()
    cap = _open_within(make, open_timeout + _GUARD_MARGIN)
    if cap is not None and cap.isOpened():
        return cap, True, url
    if cap is not None:
        cap.release()
    # FFmpeg's own timeout ends a silent server's open a little before our guard would
    if time.monotonic() - start >= 0.9 * open_timeout:
        raise DataError(f"{url}: cannot open the stream (no answer within {open_timeout:g} s)")
    raise DataError(f"{url}: cannot open the stream (unreachable, or a format OpenCV cannot read)")


@lru_cache(maxsize=1)
def _has_ffmpeg() -> bool:
    """OpenCV was built with FFmpeg and knows the open / read timeout properties."""
    if not hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):
        return False
    return re.search(r"FFMPEG:\s+YES", cv2.getBuildInformation()) is not None


def _open_within(make: Callable[[], object], timeout: float):
    """``make()`` (a capture constructor) on a helper thread, with OpenCV's log and fd 2
    silenced while this thread waits for it; None when it has not returned within ``timeout``
    seconds. fd 2 is restored here, by the waiting thread, so a hung open cannot keep the
    user's stderr silenced; a capture that arrives after the deadline is released."""
    done = threading.Event()
    state = {"cap": None, "error": None, "abandoned": False}
    lock = threading.Lock()

    def target():
        try:
            cap = make()
        except BaseException as exc:  # handed to the waiting thread
            cap, state["error"] = None, exc
        with lock:
            if state["abandoned"] and cap is not None:
                cap.release()
            else:
                state["cap"] = cap
            done.set()

    with _opencv_log_silenced(), stderr_silenced():
        threading.Thread(target=target, name="yolact-open", daemon=True).start()
        done.wait(timeout)
    with lock:
        if not done.is_set():
            state["abandoned"] = True
            return None
    if state["error"] is not None:
        raise state["error"]
    return state["cap"]


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


@contextmanager
def _opencv_log_silenced():
    """OpenCV's own log (its ``[ WARN:...]`` lines, e.g. FFmpeg's timeout) off inside the block."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    previous = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log.setLogLevel(previous)


def _quietly(fn, *args):
    """Call ``fn`` with OpenCV's log and everything written to fd 2 silenced (our DataError
    says what failed)."""
    with _opencv_log_silenced(), stderr_silenced():
        return fn(*args)


# --------------------------------------------------------------------------- live sources


def _report_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class LivePolicy:
    """How a live source (camera or stream URL) is opened and kept open.

    ``open_timeout``: seconds an open may take; ``read_timeout``: seconds a stream may go
    without data before it counts as stalled (None: ``open_timeout``). A source that fails
    or stalls is reopened up to ``reconnects`` times in a row (0: never), waiting ``backoff``
    seconds before the first attempt and twice as long before each next one, at most
    ``max_backoff``; a frame read after a reopen makes the full count available again.
    ``report(line)`` is told of every attempt (default: a line on stderr)."""

    open_timeout: float = DEFAULT_OPEN_TIMEOUT
    read_timeout: Optional[float] = None
    reconnects: int = 5
    backoff: float = 0.5
    max_backoff: float = 8.0
    report: Callable[[str], None] = _report_to_stderr

    def __post_init__(self):
        if not self.open_timeout > 0 or (self.read_timeout is not None and not self.read_timeout > 0):
            raise DataError("the open / read timeouts of a live source must be > 0 seconds")
        if self.reconnects < 0:
            raise DataError(f"reconnects must be >= 0 (got {self.reconnects})")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reopen ``attempt`` (1-based)."""
        return min(self.backoff * 2 ** (attempt - 1), self.max_backoff)

    def open(self, source: Source):
        """:func:`open_video` with these timeouts."""
        return open_video(source, self.open_timeout, self.read_timeout)


class LiveSource:
    """An open live capture that reopens itself when a read fails (disconnect, or a stall
    past the read timeout), following a :class:`LivePolicy`. ``read()`` is
    ``cv2.VideoCapture.read``'s: ``(False, None)`` at the end, which is either a normal end
    (a stream that reports a frame count and delivered that many frames) or a source that
    could not be reopened; then ``lost`` holds the one-line reason.

    ``reopen()`` returns a fresh capture or raises :class:`DataError`; ``cancel`` (an Event,
    e.g. the pipeline's stop flag) ends a wait between attempts early."""

    def __init__(self, cap, label: str, reopen: Callable[[], object], policy: LivePolicy,
                 cancel: Optional[threading.Event] = None):
        self.cap, self.label, self.reopen, self.policy = cap, label, reopen, policy
        self.cancel = cancel or threading.Event()
        self.frames = 0  # read in all, across reconnects
        self.reconnects = 0  # successful reopens
        self.lost: Optional[str] = None
        self._attempt = 0  # failed attempts since the last frame
        self._here = 0  # frames from the current connection
        self._total = reported_frame_count(cap)

    def get(self, prop):
        return self.cap.get(prop)

    def release(self) -> None:
        self.cap.release()

    def read(self):
        while True:
            with _opencv_log_silenced():  # FFmpeg's read timeout logs a WARN line
                ok, frame = self.cap.read()
            if ok and frame is not None:
                self.frames += 1
                self._here += 1
                self._attempt = 0
                return True, frame
            if 0 < self._total <= self._here:  # a finite stream (a file over HTTP) that ended
                return False, None
            if not self._reconnect():
                return False, None

    def _reconnect(self) -> bool:
        """Reopen, waiting longer before each attempt; False when given up or cancelled."""
        self.cap.release()
        what = f"{self.label}: read failed or stalled after {self.frames} frames"
        while self._attempt < self.policy.reconnects:
            self._attempt += 1
            delay = self.policy.delay(self._attempt)
            limit = self.policy.reconnects
            self.policy.report(f"{what}; reopening in {delay:g} s (attempt {self._attempt} of {limit})")
            if self.cancel.wait(delay):
                return False
            try:
                self.cap = self.reopen()
            except DataError as exc:  # its message names the source and the reason
                what = str(exc)
                continue
            self.reconnects += 1
            self._here, self._total = 0, reported_frame_count(self.cap)
            return True
        tries = f"{self.policy.reconnects} reopen attempts failed" if self.policy.reconnects else "reconnect is off"
        self.lost = f"{self.label}: source lost after {self.frames} frames and not reopened ({tries})"
        return False


def reported_frame_count(cap) -> int:
    """The frame count a capture reports (0 for a live one that has no end)."""
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(n) if n and n > 0 else 0
