"""Tracking runs as JSON lines: one record per frame (the frame-record format of
:mod:`yolact_lite.formats`) with a ``track_id`` per instance."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from ..errors import DataError
from ..formats import frame_record, write_json_line

__all__ = ["TrackJsonLines", "tracked_frame_record"]


class TrackJsonLines:
    """Writes one JSON line per frame of a tracking run (:func:`tracked_frame_record`: the
    frame-record format of :mod:`yolact_lite.formats` with a ``track_id`` per instance). Use it
    as ``on_tracks`` of :func:`~yolact_lite.inference.video.run_video` /
    :func:`~yolact_lite.inference.video.run_sequential` (or call it yourself) and
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
    """One frame's tracked instances as a JSON-ready dict: :func:`yolact_lite.formats.frame_record`
    of the detections the ``tracks`` point at (confirmed tracks, by track ID), each instance
    with its ``track_id``; detections without a track are left out."""
    keep = torch.as_tensor([t.detection_index for t in tracks], dtype=torch.int64)
    record = frame_record(detections.select(keep), index, timestamp, masks=masks, category_ids=category_ids)
    for item, track in zip(record["instances"], tracks):
        item["track_id"] = int(track.track_id)
    return record
