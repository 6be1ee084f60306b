"""The output end of a video run: the file writer, the live FPS meter and
:class:`FrameSink`, the last step of every frame (in the calling thread: FPS, write,
callbacks, progress, per-stage times) shared by the threaded and the sequential loop."""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import cv2
import numpy as np

from ..data.video_source import reported_frame_count
from ..errors import DataError
from .visualize import draw_text

__all__ = ["VideoSummary", "VideoFileWriter", "FpsMeter", "FrameSink", "fps_of", "frame_count", "STAGE_NAMES"]

ResultCallback = Callable[[int, np.ndarray, object], None]
TracksCallback = Callable[[int, float, object, list], None]

STAGE_NAMES = ("decode", "preprocess", "network", "detect", "masks", "track", "draw", "encode")


@dataclass
class VideoSummary:
    """What a run did. ``stage_ms``: median milliseconds per frame for each stage (the
    network/detect time of a batch is divided among its frames). ``skipped``: stale frames a
    live source dropped in favour of newer ones."""

    source: str
    output: Optional[str]
    mode: str  # "pipeline" or "sequential"
    frames: int = 0
    skipped: int = 0
    wall_s: float = 0.0
    mean_fps: float = 0.0
    median_fps: float = 0.0
    batch_size: int = 1
    stage_ms: Dict[str, float] = field(default_factory=dict)
    tracks: Optional[int] = None  # distinct track IDs shown (tracking runs only)
    reconnects: int = 0  # times a live source was reopened
    source_lost: Optional[str] = None  # a live source that dropped and could not be reopened
    expected_frames: Optional[int] = None  # what a file reports it has (up to max_frames)

    def as_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items())
        lines = [
            f"{self.mode}: {self.frames} frames in {self.wall_s:.2f} s -> {self.mean_fps:.2f} FPS "
            f"(median {self.median_fps:.2f} FPS), batch {self.batch_size}, skipped {self.skipped}"
            + (f", {self.tracks} tracks" if self.tracks is not None else "")
            + (f", {self.reconnects} reconnects" if self.reconnects else ""),
            f"median ms per frame: {stages}",
        ]
        if self.output:
            lines.append(f"written to {self.output}")
        if self.ended_early:
            lines.append(f"note: the file reports {self.expected_frames} frames but only {self.frames} "
                         "could be read (truncated or damaged?)")
        return "\n".join(lines)

    @property
    def ended_early(self) -> bool:
        """A file that ended well before the frame count it reports (a 1% slack: some
        containers only estimate it)."""
        expected = self.expected_frames
        return expected is not None and self.frames < expected - max(1, expected // 100)


def fps_of(cap) -> float:
    """The capture's frame rate, or 30 when it reports none (or nonsense)."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if fps and math.isfinite(fps) and 1.0 <= fps <= 240.0 else 30.0


def frame_count(cap, max_frames: Optional[int]) -> Optional[int]:
    """Frames a run will read (for the progress bar), None when unknown."""
    total = reported_frames(cap, max_frames)
    return max_frames if total is None else total


def reported_frames(cap, max_frames: Optional[int]) -> Optional[int]:
    """The frames a file says it has (at most ``max_frames``), None when it does not say."""
    n = reported_frame_count(cap)
    if n == 0:
        return None
    return n if max_frames is None else min(n, max_frames)


class VideoFileWriter:
    """Lazily opened mp4v writer with a fixed frame size (the first frame's)."""

    def __init__(self, path: Optional[Union[str, os.PathLike]], fps: float):
        self.path = None if path is None else Path(os.fspath(path))
        self.fps = fps
        self.size = None
        self.writer = None
        if self.path is not None and not self.path.parent.exists():
            raise DataError(f"{self.path}: output folder {self.path.parent} does not exist")

    def write(self, frame: np.ndarray) -> None:
        if self.path is None:
            return
        h, w = frame.shape[:2]
        if self.writer is None:
            self.size = (w, h)
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                self.writer = None
                raise DataError(f"{self.path}: cannot write a video there (mp4v)")
        if (w, h) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_LINEAR)
        self.writer.write(frame)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class FpsMeter:
    """Moving-average output FPS over the last ``window`` frames."""

    def __init__(self, window: int = 10):
        self.times: List[float] = []
        self.window = window

    def tick(self) -> float:
        now = time.perf_counter()
        self.times.append(now)
        recent = self.times[-(self.window + 1):]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)


def _summarise(summary: VideoSummary, out_times: List[float], start: float,
               per_frame: List[Dict[str, float]]) -> VideoSummary:
    end = time.perf_counter()
    summary.frames = len(out_times)
    summary.wall_s = end - start
    summary.mean_fps = summary.frames / summary.wall_s if summary.wall_s > 0 else 0.0
    gaps = [b - a for a, b in zip(out_times, out_times[1:]) if b > a]
    summary.median_fps = 1.0 / statistics.median(gaps) if gaps else summary.mean_fps
    stage_ms = {}
    for name in STAGE_NAMES:
        values = [t[name] for t in per_frame if name in t]
        if values:
            stage_ms[name] = statistics.median(values) * 1000.0
    summary.stage_ms = stage_ms
    return summary


def _progress(total: Optional[int], enabled: bool, desc: str):
    if not enabled:
        return None
    from ..progress import progress_bar

    return progress_bar(total=total, unit="frame", desc=desc, leave=True)


def _draw_fps(frame: np.ndarray, fps: float) -> None:
    draw_text(frame, f"FPS: {fps:.1f}", 4, 4, (255, 255, 255), (0, 0, 0), 0.6, 1)


class FrameSink:
    """Finishes each frame in order: live FPS (drawn with ``display_fps``), write, callbacks,
    progress bar; keeps the per-frame stage times for the :class:`VideoSummary`."""

    def __init__(self, writer: VideoFileWriter, total: Optional[int], progress: bool, desc: str,
                 display_fps: bool = False, on_result: Optional[ResultCallback] = None,
                 on_tracks: Optional[TracksCallback] = None):
        self.writer = writer
        self.bar = _progress(total, progress, desc)
        self.display_fps = display_fps
        self.on_result = on_result
        self.on_tracks = on_tracks
        self.meter = FpsMeter()
        self.out_times: List[float] = []
        self.per_frame: List[Dict[str, float]] = []
        self.track_ids: set = set()

    def emit(self, index: int, timestamp: float, drawn: np.ndarray, detections, tracks: Optional[list],
             times: Dict[str, float]) -> None:
        """One finished frame; ``times`` (seconds per stage) gets its ``encode`` time."""
        t0 = time.perf_counter()
        fps = self.meter.tick()
        if self.display_fps:
            _draw_fps(drawn, fps)
        self.writer.write(drawn)
        if self.on_result is not None:
            self.on_result(index, drawn, detections)
        if tracks is not None:
            self.track_ids.update(t.track_id for t in tracks)
            if self.on_tracks is not None:
                self.on_tracks(index, timestamp, detections, tracks)
        t1 = time.perf_counter()
        times["encode"] = t1 - t0
        self.per_frame.append(times)
        self.out_times.append(t1)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(fps=f"{fps:.1f}", refresh=False)

    def close(self) -> None:
        self.writer.close()
        if self.bar is not None:
            self.bar.close()

    def summarise(self, summary: VideoSummary, start: float, tracking: bool) -> VideoSummary:
        if tracking:
            summary.tracks = len(self.track_ids)
        return _summarise(summary, self.out_times, start, self.per_frame)
