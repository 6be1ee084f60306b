"""Real-time video: a threaded pipeline that overlaps decoding, preprocessing, the network,
mask post-processing + drawing, and encoding; and a plain sequential loop for comparison.

Pipeline (one thread per stage, BOUNDED queues between them, so memory stays flat and a slow
stage throttles the ones before it: :mod:`yolact_lite.inference.pipeline`); the inference
stages are the Predictor's (:mod:`yolact_lite.inference.stages`), only scheduled here::

    decode (cv2.VideoCapture) -> preprocess -> network + detect (NMS) -> masks + draw -> encode

The encode stage runs in the calling thread (so Ctrl-C lands there) and writes with
``cv2.VideoWriter`` (FOURCC ``mp4v``). Torch and OpenCV release the GIL in their kernels, so
the stages really run concurrently.

* File mode (a path): every frame is processed and written, in order (each stage is a
  single thread and the queues are FIFO): never reordered, never dropped.
* Live mode (a camera index, int or a string of digits, or a stream URL): the pipeline works
  on the newest frame. Each queue holds one frame, and when the pipeline falls behind, the
  frame waiting after decode is replaced by the newest (stale frames are useless for live
  display); ``VideoSummary.skipped`` counts them. A live source that disconnects or stalls is
  reopened with backoff (:class:`yolact_lite.data.video_source.LivePolicy`: open / read
  timeouts, attempts, a line per attempt); one that cannot be reopened ends the run with the
  frames so far kept and written, and ``VideoSummary.source_lost`` saying so.
* ``batch_size`` > 1 runs the network on several consecutive frames at once (more throughput
  on a GPU, more latency); 1 (the default) gives the lowest latency.
* A frame whose size differs from the first frame's is processed with its own geometry
  (its detections are in its own pixel coordinates); only for WRITING it is resized to the
  first frame's size, because a video file has one frame size.
* Live FPS: a progress bar (frames/s) on stderr (a line every 30 s in a log), or drawn onto the frames with
  ``display_fps=True``.
* Tracking (``tracker=`` a :class:`yolact_lite.inference.tracking.Tracker`): the tracker runs before
  drawing, in frame order, and sees every detection above its ``low_score``, matching on their
  prototype-resolution masks; full-resolution masks are made only for the drawn detections
  (``display_threshold`` / ``top_k``) and, with ``on_tracks``, for every tracked one. Those are
  the detections ``on_result`` receives. Tracked instances are drawn in
  their track's colour with ``#ID`` and a short trail; ``on_tracks(index, timestamp,
  detections, tracks)`` receives each frame's tracks (``TrackJsonLines`` writes them as
  JSON lines, :mod:`yolact_lite.inference.track_records`). Timestamps: frame index / the
  file's FPS for a file, the capture time for a camera (so frames a camera drops are
  extrapolated over).

Errors that are the user's (unreadable or missing file, camera that does not open, a video
with no frames, an output that cannot be written) raise :class:`DataError` with one line.
"""

from __future__ import annotations

import copy
import queue
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch

from ..data.video_source import LivePolicy, LiveSource, Source, open_video
from ..errors import DataError
from .pipeline import END, Pipeline, Stopped
from .video_output import (
    FrameSink,
    ResultCallback,
    TracksCallback,
    VideoFileWriter,
    VideoSummary,
    fps_of,
    frame_count,
    reported_frames,
)
from .visualize import draw_detections, draw_tracks, drawn_order

__all__ = ["VideoSummary", "run_video", "run_sequential"]


@dataclass
class _DrawStep:
    """Masks, tracking (optional) and drawing of a frame, after detect.

    Full-resolution masks are made only for what is drawn, and with ``write_tracks`` (JSON
    lines) for every tracked detection: the tracker matches on prototype-resolution masks,
    so the many low-score detections it looks at never need the resize."""

    tracker: object = None
    display_threshold: float = 0.0
    top_k: Optional[int] = None
    trails: bool = True
    write_tracks: bool = False

    def __call__(self, stages, image: np.ndarray, det, prototypes, geometry, timestamp: float,
                 times: Dict[str, float]):
        """One frame: ``(detections, drawn image, tracks or None)``. Without a tracker the
        detections are the drawn ones; with one, the drawn and (``write_tracks``) tracked
        ones, the tracks' ``detection_index`` pointing into them."""
        t0 = time.perf_counter()
        if self.tracker is None:
            detections = stages.masks(det, prototypes, geometry, self.display_threshold or None, self.top_k)
            t1 = time.perf_counter()
            drawn = draw_detections(image, detections, self.display_threshold, self.top_k)
            times["masks"], times["draw"] = t1 - t0, time.perf_counter() - t1
            return detections, drawn, None
        low, pending = stages.low_res(det, prototypes, geometry, self.tracker.settings.low_score or None)
        t1 = time.perf_counter()
        tracks = self.tracker.update(low, timestamp)
        t2 = time.perf_counter()
        keep = self._needed(low, tracks)
        detections = stages.finish(low, pending, torch.as_tensor(keep, dtype=torch.int64))
        tracks = _reindexed(tracks, {old: new for new, old in enumerate(keep)})
        t3 = time.perf_counter()
        drawn = draw_tracks(image, detections, tracks, self.display_threshold, self.top_k, trails=self.trails)
        times["masks"], times["track"], times["draw"] = (t1 - t0) + (t3 - t2), t2 - t1, time.perf_counter() - t3
        return detections, drawn, tracks

    def _needed(self, low, tracks) -> List[int]:
        """Rows of ``low`` that get full-resolution masks, ascending (the ranking order)."""
        tracked = np.zeros(len(low), dtype=bool)
        for track in tracks:
            if 0 <= int(track.detection_index) < len(low):
                tracked[int(track.detection_index)] = True
        needed = set(drawn_order(low, self.display_threshold, self.top_k, tracked).tolist())
        if self.write_tracks:
            needed |= set(np.flatnonzero(tracked).tolist())
        return sorted(needed)


def _reindexed(tracks, position: Dict[int, int]) -> list:
    """Copies of ``tracks`` whose ``detection_index`` points into the kept detections (-1:
    its detection was not kept); the tracker's own tracks stay as they are."""
    out = []
    for track in tracks:
        moved = copy.copy(track)
        moved.detection_index = position.get(int(track.detection_index), -1)
        out.append(moved)
    return out


def _open(source: Source, output, mode: str, batch_size: int = 1, live: Optional[LivePolicy] = None,
          max_frames: Optional[int] = None):
    """(capture, is_live, input fps, writer, summary); a live capture is a
    :class:`LiveSource` that reopens itself under ``live`` (default :class:`LivePolicy`). The
    capture is released when the writer cannot be made."""
    policy = live or LivePolicy()
    cap, camera, label = open_video(source, policy.open_timeout, policy.read_timeout)
    if camera:
        cap = LiveSource(cap, label, lambda: open_video(source, policy.open_timeout, policy.read_timeout)[0], policy)
    fps_in = fps_of(cap)
    try:
        writer = VideoFileWriter(output, fps_in)
    except BaseException:
        cap.release()
        raise
    summary = VideoSummary(label, None if output is None else str(output), mode, batch_size=batch_size)
    if not camera:
        summary.expected_frames = reported_frames(cap, max_frames)
    return cap, camera, fps_in, writer, summary


def _source_outcome(cap, summary: VideoSummary, frames: int) -> None:
    """Copy a live source's reconnects / loss into ``summary``; a source lost before its
    first frame is a DataError (there is nothing to summarise)."""
    if not isinstance(cap, LiveSource):
        return
    summary.reconnects, summary.source_lost = cap.reconnects, cap.lost
    if frames == 0 and cap.lost:
        raise DataError(cap.lost)


# --------------------------------------------------------------------------- sequential


def run_sequential(predictor, source: Source, output=None, max_frames: Optional[int] = None,
                   display_threshold: float = 0.0, top_k: Optional[int] = None, display_fps: bool = False,
                   on_result: Optional[ResultCallback] = None, progress: bool = False, tracker=None,
                   on_tracks: Optional[TracksCallback] = None, trails: bool = True,
                   live: Optional[LivePolicy] = None) -> VideoSummary:
    """The plain loop: read, predict, (track,) draw, write, one frame at a time (no threads).

    ``on_result(index, drawn_frame, detections)`` is called for every frame, in order;
    ``tracker`` / ``on_tracks`` / ``trails`` / ``live`` as in :func:`run_video`.
    """
    cap, camera, fps_in, writer, summary = _open(source, output, "sequential", live=live, max_frames=max_frames)
    sink = FrameSink(writer, frame_count(cap, max_frames), progress, "video (sequential)", display_fps,
                     on_result, on_tracks)
    draw = _DrawStep(tracker, display_threshold, top_k, trails, write_tracks=on_tracks is not None)
    if tracker is not None:
        tracker.reset()
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
            times = {"decode": t1 - t0}
            dets, drawn, tracks = draw(predictor.stages, frame, *_detected(predictor, frame, times), timestamp, times)
            sink.emit(index, timestamp, drawn, dets, tracks, times)
            index += 1
        _source_outcome(cap, summary, index)
        if index == 0:
            raise DataError(f"{summary.source}: no frames could be read")
    finally:
        cap.release()
        sink.close()
    return sink.summarise(summary, start, tracker is not None)


def _detected(predictor, image: np.ndarray, times: Dict[str, float]):
    """preprocess -> network -> detect of one frame: ``(det, prototypes, geometry)``."""
    t0 = time.perf_counter()
    batch, geometries = predictor.preprocess([image])
    t1 = predictor.clock()
    outputs = predictor.network(batch)
    t2 = predictor.clock()
    det = predictor.detect(outputs)[0]
    times.update(preprocess=t1 - t0, network=t2 - t1, detect=predictor.clock() - t2)
    return det, outputs["prototypes"][0], geometries[0]


# --------------------------------------------------------------------------- pipeline


@dataclass
class _Frame:
    """One frame on its way through the pipeline."""

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


class _VideoStages:
    """The threads of :func:`run_video`: each reads one queue, runs its stage(s) and writes
    the next. The inference stages are the Predictor's; this class only moves frames."""

    def __init__(self, predictor, cap, camera: bool, fps_in: float, max_frames: Optional[int],
                 batch_size: int, queue_size: int, draw: _DrawStep):
        self.predictor, self.cap, self.camera, self.fps_in = predictor, cap, camera, fps_in
        self.max_frames, self.batch_size, self.draw = max_frames, batch_size, draw
        self.pipe = Pipeline()
        if isinstance(cap, LiveSource):  # a stop ends its wait between reopen attempts
            cap.cancel = self.pipe.stop
        # live: one frame waits per queue (the newest, after decode), so latency stays bounded
        size = 1 if camera else max(2, queue_size)
        self.frames: "queue.Queue" = queue.Queue(maxsize=size)
        self.batches: "queue.Queue" = queue.Queue(maxsize=1 if camera else 2)
        self.detected: "queue.Queue" = queue.Queue(maxsize=size)
        self.done: "queue.Queue" = queue.Queue(maxsize=size)
        self.skipped = 0
        self.clock_start = time.perf_counter()

    def start(self) -> None:
        for fn, name in ((self.decode, "decode"), (self.preprocess, "preprocess"), (self.network, "network"),
                         (self.masks_and_draw, "masks")):
            self.pipe.spawn(fn, name)

    def decode(self) -> None:
        index = 0
        try:
            while self.max_frames is None or index - self.skipped < self.max_frames:
                t0 = time.perf_counter()
                ok, image = self.cap.read()
                if not ok:
                    break
                t1 = time.perf_counter()
                timestamp = t1 - self.clock_start if self.camera else index / self.fps_in
                frame = _Frame(index, image, {"decode": t1 - t0}, timestamp)
                index += 1
                if self.camera:  # live source: never wait; replace the oldest waiting frame
                    self.skipped += self.pipe.put_latest(self.frames, frame)
                else:
                    self.pipe.put(self.frames, frame)
        finally:
            self.cap.release()
        self.pipe.put(self.frames, END)

    def _next_batch(self) -> List[_Frame]:
        """Up to ``batch_size`` frames; a live source does not wait for a full batch. Ends
        with END at the end of the input."""
        frames: List = []
        while len(frames) < self.batch_size:
            frame = self.pipe.get(self.frames)
            frames.append(frame)
            if frame is END or (self.camera and self.frames.empty()):
                break
        return frames

    def preprocess(self) -> None:
        ended = False
        while not ended:
            frames = self._next_batch()
            ended = frames[-1] is END
            frames = [f for f in frames if f is not END]
            if not frames:
                break
            t0 = time.perf_counter()
            batch, geometries = self.predictor.preprocess([f.image for f in frames])
            share = (time.perf_counter() - t0) / len(frames)
            for frame, geometry in zip(frames, geometries):
                frame.times["preprocess"] = share
                frame.geometry = geometry
            self.pipe.put(self.batches, (frames, batch))
        self.pipe.put(self.batches, END)

    def network(self) -> None:
        while (got := self.pipe.get(self.batches)) is not END:
            frames, batch = got
            t0 = time.perf_counter()
            outputs = self.predictor.network(batch)
            t1 = self.predictor.clock()
            dets = self.predictor.detect(outputs)
            t2 = self.predictor.clock()
            for i, frame in enumerate(frames):
                frame.times["network"] = (t1 - t0) / len(frames)
                frame.times["detect"] = (t2 - t1) / len(frames)
                frame.det = dets[i]
                frame.prototypes = outputs["prototypes"][i]
            for frame in frames:
                self.pipe.put(self.detected, frame)
        self.pipe.put(self.detected, END)

    def masks_and_draw(self) -> None:
        while (frame := self.pipe.get(self.detected)) is not END:
            frame.detections, frame.drawn, frame.tracks = self.draw(
                self.predictor.stages, frame.image, frame.det, frame.prototypes, frame.geometry, frame.timestamp,
                frame.times)
            frame.det = frame.prototypes = None
            self.pipe.put(self.done, frame)
        self.pipe.put(self.done, END)

    def finished(self):
        """The drawn frames in order, in the calling thread, until the end or a stop."""
        expected = 0
        while True:
            try:
                frame = self.pipe.get(self.done)
            except Stopped:
                return
            if frame is END:
                return
            if not self.camera and frame.index != expected:  # pragma: no cover - would be a bug
                raise RuntimeError(f"video pipeline reordered frames: got {frame.index}, expected {expected}")
            expected = frame.index + 1
            yield frame


def run_video(predictor, source: Source, output=None, max_frames: Optional[int] = None,
              batch_size: int = 1, display_threshold: float = 0.0, top_k: Optional[int] = None,
              display_fps: bool = False, on_result: Optional[ResultCallback] = None,
              progress: bool = False, queue_size: int = 4, tracker=None,
              on_tracks: Optional[TracksCallback] = None, trails: bool = True,
              live: Optional[LivePolicy] = None) -> VideoSummary:
    """Run ``predictor`` over a video file, camera or stream with the threaded pipeline.

    Args:
        predictor: a :class:`~yolact_lite.inference.predictor.Predictor` (uses its
            ``preprocess``, ``network``, ``detect`` and ``masks`` stages and its ``clock``).
        source: video path, or camera index (int or digits), or stream URL.
        output: optional ``.mp4`` path (mp4v); frames are written at the source's FPS.
        max_frames: stop after this many frames.
        batch_size: frames per network batch (1: lowest latency).
        display_threshold, top_k: display filters (applied before full-resolution masks;
            with a tracker, to the drawing only).
        display_fps: draw the live FPS onto the frames.
        on_result: ``on_result(index, drawn_frame, detections)``, called in frame order from
            the calling thread.
        progress: show a progress bar with the live FPS on stderr.
        queue_size: capacity of each inter-stage queue (in frames) for a file; a live source
            uses 1 (the newest frame).
        tracker: a :class:`yolact_lite.inference.tracking.Tracker` (reset first) to give
            instances IDs that persist across frames; None: no tracking.
        on_tracks: ``on_tracks(index, timestamp, detections, tracks)`` for every frame of a
            tracking run, in frame order, from the calling thread (e.g. a
            :class:`~yolact_lite.inference.track_records.TrackJsonLines`).
        trails: draw each track's recent path.
        live: open timeout and reconnect policy of a camera or stream
            (:class:`~yolact_lite.data.video_source.LivePolicy`; None: its defaults).

    Returns:
        :class:`VideoSummary` (``source_lost``: a live source lost and not reopened).
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1 (got {batch_size})")
    if max_frames is not None and max_frames < 1:
        raise DataError(f"max_frames must be >= 1 (got {max_frames})")
    cap, camera, fps_in, writer, summary = _open(source, output, "pipeline", batch_size, live, max_frames)
    draw = _DrawStep(tracker, display_threshold, top_k, trails, write_tracks=on_tracks is not None)
    if tracker is not None:
        tracker.reset()
    stages = _VideoStages(predictor, cap, camera, fps_in, max_frames, batch_size, queue_size, draw)
    sink = FrameSink(writer, None if camera else frame_count(cap, max_frames), progress, "video", display_fps,
                     on_result, on_tracks)
    start = time.perf_counter()
    stages.start()
    try:
        for frame in stages.finished():
            sink.emit(frame.index, frame.timestamp, frame.drawn, frame.detections, frame.tracks, frame.times)
    finally:
        stages.pipe.shutdown()
        sink.close()
    stages.pipe.raise_error()
    _source_outcome(cap, summary, len(sink.out_times))
    if not sink.out_times:
        raise DataError(f"{summary.source}: no frames could be read")
    summary.skipped = stages.skipped
    return sink.summarise(summary, start, tracker is not None)
