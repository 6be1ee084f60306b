"""Real-time video: a threaded pipeline that overlaps decoding, preprocessing, the network,
mask post-processing + drawing, and encoding; and a plain sequential loop for comparison.

Pipeline (one thread per stage, BOUNDED queues between them, so memory stays flat and a slow
stage throttles the ones before it)::

    decode (cv2.VideoCapture) -> preprocess -> network + detect (NMS) -> masks + draw -> encode

The encode stage runs in the calling thread (so Ctrl-C lands there) and writes with
``cv2.VideoWriter`` (FOURCC ``mp4v``). Torch and OpenCV release the GIL in their kernels, so
the stages really run concurrently.

* File mode (a path): every frame is processed and written, in order (each stage is a
  single thread and the queues are FIFO): never reordered, never dropped.
* Camera mode (an integer index, or a string of digits): when the pipeline falls behind, the
  oldest waiting frame is dropped in favour of the newest (stale frames are useless for live
  display); ``VideoSummary.skipped`` counts them.
* ``batch_size`` > 1 runs the network on several consecutive frames at once (more throughput
  on a GPU, more latency); 1 (the default) gives the lowest latency.
* A frame whose size differs from the first frame's is processed with its own geometry
  (its detections are in its own pixel coordinates); only for WRITING it is resized to the
  first frame's size, because a video file has one frame size.
* Live FPS: a progress bar (frames/s) on stderr (a line every 30 s in a log), or drawn onto the frames with
  ``display_fps=True``.
* Tracking (``tracker=`` a :class:`yolact_lite.inference.tracking.Tracker`): the tracker runs before
  drawing, in frame order, and sees every detection above its ``low_score`` (full-resolution
  masks are then made for all of them, not only for the displayed ones);
  ``display_threshold`` / ``top_k`` filter only what is drawn. Tracked instances are drawn in
  their track's colour with ``#ID`` and a short trail; ``on_tracks(index, timestamp,
  detections, tracks)`` receives each frame's tracks (:class:`TrackJsonLines` writes them as
  JSON lines). Timestamps: frame index / the file's FPS for a file, the capture time for a
  camera (so frames a camera drops are extrapolated over).

Errors that are the user's (unreadable or missing file, camera that does not open, a video
with no frames, an output that cannot be written) raise :class:`DataError` with one line.
"""

from __future__ import annotations

import math
import os
import queue
import re
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from ..errors import DataError
from .results import frame_record, write_json_line
from .visualize import draw_detections, draw_text, draw_tracks

__all__ = ["VideoSummary", "run_video", "run_sequential", "open_video", "is_camera_source", "TrackJsonLines",
           "tracked_frame_record"]

Source = Union[str, int, os.PathLike]
ResultCallback = Callable[[int, np.ndarray, object], None]
TracksCallback = Callable[[int, float, object, list], None]

STAGE_NAMES = ("decode", "preprocess", "network", "detect", "masks", "track", "draw", "encode")


@dataclass
class VideoSummary:
    """What a run did. ``stage_ms``: median milliseconds per frame for each stage (the
    network/detect time of a batch is divided among its frames)."""

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

    def as_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items())
        lines = [
            f"{self.mode}: {self.frames} frames in {self.wall_s:.2f} s -> {self.mean_fps:.2f} FPS "
            f"(median {self.median_fps:.2f} FPS), batch {self.batch_size}, skipped {self.skipped}"
            + (f", {self.tracks} tracks" if self.tracks is not None else ""),
            f"median ms per frame: {stages}",
        ]
        if self.output:
            lines.append(f"written to {self.output}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- opening


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


def _fps_of(cap) -> float:
    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if fps and math.isfinite(fps) and 1.0 <= fps <= 240.0 else 30.0


def _frame_count(cap, max_frames: Optional[int]) -> Optional[int]:
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    total = n if n > 0 else None
    if max_frames is not None:
        total = min(total, max_frames) if total is not None else max_frames
    return total


class _Writer:
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


class _FpsMeter:
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


# --------------------------------------------------------------------------- tracking


class TrackJsonLines:
    """Writes one JSON line per frame of a tracking run (:func:`tracked_frame_record`: the
    frame-record format of :mod:`yolact_lite.inference.results` with a ``track_id`` per instance). Use it
    as ``on_tracks`` of :func:`run_video` / :func:`run_sequential` (or call it yourself) and
    :meth:`close` it, or use it as a context manager.

    Args:
        path: output file (its folder must exist).
        masks: ``"rle"``, ``"polygons"`` or ``"none"`` (boxes only).
        category_ids: dataset category id per label (e.g. ``Predictor.category_ids``), written
            as each instance's ``category_id``.
    """

    def __init__(self, path: Union[str, os.PathLike], masks: str = "rle",
                 category_ids: Optional[Sequence[int]] = None):
        self.path = Path(os.fspath(path))
        if not self.path.parent.exists():
            raise DataError(f"{self.path}: folder {self.path.parent} does not exist")
        self.masks = masks
        self.category_ids = category_ids
        self.lines = 0
        self._file = open(self.path, "w", encoding="utf-8")

    def __call__(self, index: int, timestamp: float, detections, tracks) -> None:
        record = tracked_frame_record(index, timestamp, detections, tracks, self.masks, self.category_ids)
        write_json_line(self._file, record)
        self.lines += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "TrackJsonLines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tracked_frame_record(index: int, timestamp: float, detections, tracks, masks: str = "rle",
                         category_ids: Optional[Sequence[int]] = None) -> dict:
    """One frame's tracked instances as a JSON-ready dict: :func:`yolact_lite.inference.results.frame_record`
    of the detections the ``tracks`` point at (confirmed tracks, by track ID), each instance
    with its ``track_id``; detections without a track are left out."""
    keep = torch.as_tensor([t.detection_index for t in tracks], dtype=torch.int64)
    record = frame_record(detections.select(keep), index, timestamp, masks=masks, category_ids=category_ids)
    for item, track in zip(record["instances"], tracks):
        item["track_id"] = int(track.track_id)
    return record


def _mask_filters(tracker, display_threshold: float, top_k: Optional[int]):
    """(threshold, top_k) for the Predictor's mask stage: the display filter, or with a
    tracker everything the tracker uses."""
    if tracker is None:
        return display_threshold or None, top_k
    return tracker.settings.low_score or None, None


def _draw(image, detections, tracker, timestamp: float, display_threshold: float, top_k: Optional[int],
          trails: bool, times: Dict[str, float]):
    """Track (when a tracker is given) and draw one frame; returns (drawn, tracks)."""
    tracks = None
    t0 = time.perf_counter()
    if tracker is not None:
        tracks = tracker.update(detections, timestamp)
        t1 = time.perf_counter()
        times["track"] = t1 - t0
        t0 = t1
        drawn = draw_tracks(image, detections, tracks, display_threshold, top_k, trails=trails)
    else:
        drawn = draw_detections(image, detections, display_threshold, top_k)
    times["draw"] = time.perf_counter() - t0
    return drawn, tracks


# --------------------------------------------------------------------------- sequential


def run_sequential(predictor, source: Source, output=None, max_frames: Optional[int] = None,
                   display_threshold: float = 0.0, top_k: Optional[int] = None, display_fps: bool = False,
                   on_result: Optional[ResultCallback] = None, progress: bool = False, tracker=None,
                   on_tracks: Optional[TracksCallback] = None, trails: bool = True) -> VideoSummary:
    """The plain loop: read, predict, (track,) draw, write, one frame at a time (no threads).

    ``on_result(index, drawn_frame, detections)`` is called for every frame, in order;
    ``tracker`` / ``on_tracks`` / ``trails`` as in :func:`run_video`.
    """
    cap, camera, label = open_video(source)
    fps_in = _fps_of(cap)
    writer = _Writer(output, fps_in)
    summary = VideoSummary(label, None if output is None else str(output), "sequential")
    bar = _progress(_frame_count(cap, max_frames), progress, "video (sequential)")
    meter, out_times, per_frame = _FpsMeter(), [], []
    mask_stage_threshold, mask_top_k = _mask_filters(tracker, display_threshold, top_k)
    if tracker is not None:
        tracker.reset()
    track_ids = set()
    start = time.perf_counter()
    try:
        index = 0
        while max_frames is None or index < max_frames:
            t0 = time.perf_counter()
            ok, frame = cap.read()
            if not ok:
                break
            t1 = time.perf_counter()
            timestamp = t1 - start if camera else index / fps_in
            dets = predictor.predict(frame, display_threshold=mask_stage_threshold, top_k=mask_top_k)
            times = {k: v / 1000.0 for k, v in predictor.timings.items()}
            drawn, tracks = _draw(frame, dets, tracker, timestamp, display_threshold, top_k, trails, times)
            t3 = time.perf_counter()
            fps = meter.tick()
            if display_fps:
                _draw_fps(drawn, fps)
            writer.write(drawn)
            if on_result is not None:
                on_result(index, drawn, dets)
            if tracks is not None:
                track_ids.update(t.track_id for t in tracks)
                if on_tracks is not None:
                    on_tracks(index, timestamp, dets, tracks)
            t4 = time.perf_counter()
            times.update(decode=t1 - t0, encode=t4 - t3)
            per_frame.append(times)
            out_times.append(t4)
            index += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(fps=f"{fps:.1f}", refresh=False)
        if index == 0:
            raise DataError(f"{label}: no frames could be read")
    finally:
        cap.release()
        writer.close()
        if bar is not None:
            bar.close()
    if tracker is not None:
        summary.tracks = len(track_ids)
    return _summarise(summary, out_times, start, per_frame)


# --------------------------------------------------------------------------- pipeline


class _Stopped(Exception):
    """Raised inside a stage when the pipeline is shutting down."""


_END = object()


@dataclass
class _Item:
    index: int
    image: np.ndarray
    times: Dict[str, float] = field(default_factory=dict)
    timestamp: float = 0.0
    det: object = None
    prototypes: object = None
    geometry: object = None
    detections: object = None
    drawn: Optional[np.ndarray] = None
    tracks: Optional[list] = None


class _Pipeline:
    def __init__(self):
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.threads: List[threading.Thread] = []

    def put(self, q: "queue.Queue", item) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped()
            try:
                q.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def get(self, q: "queue.Queue"):
        while True:
            if self.stop.is_set():
                raise _Stopped()
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue

    def spawn(self, fn: Callable[[], None], name: str) -> None:
        def target():
            try:
                fn()
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the caller's thread
                if self.error is None:
                    self.error = exc
                self.stop.set()

        thread = threading.Thread(target=target, name=f"yolact-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def shutdown(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def run_video(predictor, source: Source, output=None, max_frames: Optional[int] = None,
              batch_size: int = 1, display_threshold: float = 0.0, top_k: Optional[int] = None,
              display_fps: bool = False, on_result: Optional[ResultCallback] = None,
              progress: bool = False, queue_size: int = 4, tracker=None,
              on_tracks: Optional[TracksCallback] = None, trails: bool = True) -> VideoSummary:
    """Run ``predictor`` over a video file or camera with the threaded pipeline.

    Args:
        predictor: a :class:`yolact_lite.Predictor` (uses its ``preprocess``, ``network``,
            ``detect`` and ``masks`` stages).
        source: video path, or camera index (int or digits).
        output: optional ``.mp4`` path (mp4v); frames are written at the source's FPS.
        max_frames: stop after this many frames.
        batch_size: frames per network batch (1: lowest latency).
        display_threshold, top_k: display filters (applied before full-resolution masks;
            with a tracker, to the drawing only).
        display_fps: draw the live FPS onto the frames.
        on_result: ``on_result(index, drawn_frame, detections)``, called in frame order from
            the calling thread.
        progress: show a progress bar with the live FPS on stderr.
        queue_size: capacity of each inter-stage queue (in frames).
        tracker: a :class:`yolact_lite.inference.tracking.Tracker` (reset first) to give instances
            IDs that persist across frames; None: no tracking.
        on_tracks: ``on_tracks(index, timestamp, detections, tracks)`` for every frame of a
            tracking run, in frame order, from the calling thread (e.g. a
            :class:`TrackJsonLines`).
        trails: draw each track's recent path.

    Returns:
        :class:`VideoSummary`.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1 (got {batch_size})")
    if max_frames is not None and max_frames < 1:
        raise DataError(f"max_frames must be >= 1 (got {max_frames})")
    cap, camera, label = open_video(source)
    fps_in = _fps_of(cap)
    try:
        writer = _Writer(output, fps_in)
    except BaseException:
        cap.release()
        raise
    mask_stage_threshold, mask_top_k = _mask_filters(tracker, display_threshold, top_k)
    if tracker is not None:
        tracker.reset()
    clock_start = time.perf_counter()
    summary = VideoSummary(label, None if output is None else str(output), "pipeline", batch_size=batch_size)
    total = None if camera else _frame_count(cap, max_frames)
    bar = _progress(total, progress, "video")

    pipe = _Pipeline()
    q_frames: "queue.Queue" = queue.Queue(maxsize=max(2, queue_size if not camera else 2))
    q_batches: "queue.Queue" = queue.Queue(maxsize=2)
    q_dets: "queue.Queue" = queue.Queue(maxsize=max(2, queue_size))
    q_done: "queue.Queue" = queue.Queue(maxsize=max(2, queue_size))
    counters = {"skipped": 0}

    def decode():
        index = 0
        try:
            while True:
                if max_frames is not None and index - counters["skipped"] >= max_frames:
                    break
                t0 = time.perf_counter()
                ok, frame = cap.read()
                if not ok:
                    break
                t1 = time.perf_counter()
                item = _Item(index, frame, {"decode": t1 - t0}, t1 - clock_start if camera else index / fps_in)
                index += 1
                if camera:
                    # live source: never wait; replace the oldest waiting frame instead
                    while True:
                        if pipe.stop.is_set():
                            raise _Stopped()
                        try:
                            q_frames.put_nowait(item)
                            break
                        except queue.Full:
                            try:
                                q_frames.get_nowait()
                                counters["skipped"] += 1
                            except queue.Empty:
                                pass
                else:
                    pipe.put(q_frames, item)
        finally:
            cap.release()
        pipe.put(q_frames, _END)

    def preprocess():
        ended = False
        while not ended:
            items = []
            while len(items) < batch_size:
                item = pipe.get(q_frames)
                if item is _END:
                    ended = True
                    break
                items.append(item)
                if camera and q_frames.empty():
                    break  # live: do not wait for a full batch
            if not items:
                break
            t0 = time.perf_counter()
            batch, geometries = predictor.preprocess([it.image for it in items])
            share = (time.perf_counter() - t0) / len(items)
            for it, g in zip(items, geometries):
                it.times["preprocess"] = share
                it.geometry = g
            pipe.put(q_batches, (items, batch))
        pipe.put(q_batches, _END)

    def network():
        while True:
            got = pipe.get(q_batches)
            if got is _END:
                break
            items, batch = got
            t0 = time.perf_counter()
            outputs = predictor.network(batch)
            t1 = predictor._tick()
            dets = predictor.detect(outputs)
            t2 = predictor._tick()
            for i, it in enumerate(items):
                it.times["network"] = (t1 - t0) / len(items)
                it.times["detect"] = (t2 - t1) / len(items)
                it.det = dets[i]
                it.prototypes = outputs["prototypes"][i]
            for it in items:
                pipe.put(q_dets, it)
        pipe.put(q_dets, _END)

    def masks_and_draw():
        while True:
            it = pipe.get(q_dets)
            if it is _END:
                break
            t0 = time.perf_counter()
            it.detections = predictor.masks(it.det, it.prototypes, it.geometry,
                                            display_threshold=mask_stage_threshold, top_k=mask_top_k)
            it.det = it.prototypes = None
            it.times["masks"] = time.perf_counter() - t0
            it.drawn, it.tracks = _draw(it.image, it.detections, tracker, it.timestamp, display_threshold, top_k,
                                        trails, it.times)
            pipe.put(q_done, it)
        pipe.put(q_done, _END)

    meter, out_times, per_frame = _FpsMeter(), [], []
    track_ids = set()
    start = time.perf_counter()
    for fn, name in ((decode, "decode"), (preprocess, "preprocess"), (network, "network"),
                     (masks_and_draw, "masks")):
        pipe.spawn(fn, name)
    expected = 0
    try:
        while True:
            try:
                it = pipe.get(q_done)
            except _Stopped:
                break
            if it is _END:
                break
            if not camera and it.index != expected:  # pragma: no cover - would be a bug
                raise RuntimeError(f"video pipeline reordered frames: got {it.index}, expected {expected}")
            expected = it.index + 1
            t0 = time.perf_counter()
            fps = meter.tick()
            if display_fps:
                _draw_fps(it.drawn, fps)
            writer.write(it.drawn)
            if on_result is not None:
                on_result(it.index, it.drawn, it.detections)
            if it.tracks is not None:
                track_ids.update(t.track_id for t in it.tracks)
                if on_tracks is not None:
                    on_tracks(it.index, it.timestamp, it.detections, it.tracks)
            it.times["encode"] = time.perf_counter() - t0
            per_frame.append(it.times)
            out_times.append(time.perf_counter())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(fps=f"{fps:.1f}", refresh=False)
    finally:
        pipe.shutdown()
        writer.close()
        if bar is not None:
            bar.close()
    if pipe.error is not None:
        raise pipe.error
    if not out_times:
        raise DataError(f"{label}: no frames could be read")
    summary.skipped = counters["skipped"]
    if tracker is not None:
        summary.tracks = len(track_ids)
    return _summarise(summary, out_times, start, per_frame)
