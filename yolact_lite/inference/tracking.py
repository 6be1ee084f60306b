"""Instance tracking through video: stable IDs by mask overlap (ByteTrack-style association).

``Tracker.update(detections, timestamp)`` takes one frame's :class:`Detections` (ALL of them
above a low score, not only the displayed ones) and returns the confirmed tracks seen in that
frame, each pointing at its detection (``Track.detection_index``).

Association, once per frame (the order of ByteTrack, Zhang et al. 2022):

1. detections with score ``> high_score`` against the confirmed tracks: first those matched in
   the previous frame, then the lost ones (DeepSORT's matching cascade in two levels: a lost
   track's extrapolation does not take the detection of an object tracked a frame ago);
2. detections with ``low_score < score <= high_score`` against the confirmed tracks still
   unmatched (a partly hidden object keeps its ID through frames where its score drops; unlike
   ByteTrack, lost tracks take part too: an object coming out from behind another is often
   found first at a low score);
3. high-score detections still unmatched against the tentative tracks (seen once);
4. high-score detections still unmatched with score ``> new_track_score`` start tentative
   tracks; a tentative track is confirmed after ``min_hits`` consecutive matches (at once in
   the first frame) and dropped when it misses one; a confirmed track that misses becomes lost
   and is removed after ``max_age`` missed updates.

Overlap: mask IoU on low-resolution masks (the detections' prototype-resolution masks when
they carry them, else the full masks subsampled every ``mask_stride`` pixels) between each
detection and each track's last mask shifted by the motion model; box IoU (predicted box vs
detection box) for pairs where either mask is empty or the resolutions differ. Masks are kept
as their bounding-box crops (:class:`MaskPatch`) and compared only where those crops meet, so
the cost grows with the number of overlapping pairs, not with D x T x pixels. Tracks and
detections of different classes never match unless ``class_aware`` is False. Each stage is a
minimum-cost assignment (:func:`scipy.optimize.linear_sum_assignment`, cost ``1 - overlap``)
keeping only pairs above that stage's overlap threshold.

Motion: constant velocity of the box centre in pixels per timestamp unit, a least-squares fit
to the last ``velocity_window`` high-score observations; the box keeps its last observed size.
Timestamps (seconds, or frame numbers) drive the prediction, so a camera that drops frames is
extrapolated further. A predicted centre is kept inside the image: an object that left waits
at the edge it left by.

Everything is deterministic: tracks are kept in creation order and IDs (1, 2, ...) are
given when a track is confirmed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Deque, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..box_ops import box_iou
from ..errors import ConfigError, DataError
from ..structures import Detections

__all__ = [
    "TrackerSettings", "Track", "TrackState", "Tracker",
    "MaskPatch", "mask_patches", "patch_iou", "predict_boxes", "fit_velocity", "clamp_centres",
    "low_res_masks", "assign", "track_ids_of",
]

# Overlap given to pairs that may never match (other class); below every threshold.
_FORBIDDEN = -1.0


class TrackState:
    """Life cycle of a track (plain strings, so they print and serialise as themselves)."""

    TENTATIVE = "tentative"  # seen in fewer than ``min_hits`` consecutive frames; no ID yet
    CONFIRMED = "confirmed"  # matched in the latest frame
    LOST = "lost"  # confirmed, missed in the latest frame(s); removed after ``max_age`` misses


@dataclass
class TrackerSettings:
    """What the tracker matches and how long it remembers.

    Scores are the detections' ``mask_scores`` (the ranking the display filter uses).
    """

    high_score: float = 0.5  # first association; these can also start tracks
    low_score: float = 0.1  # second association (ByteTrack's low-score detections); below: ignored
    new_track_score: float = 0.6  # an unmatched detection must beat this to start a track
    match_overlap: float = 0.2  # minimum overlap (IoU) for a match, first association
    low_match_overlap: float = 0.3  # minimum overlap, second association (low-score detections)
    tentative_match_overlap: float = 0.3  # minimum overlap, third association (tentative tracks)
    min_hits: int = 2  # consecutive matches that confirm a track (1: confirmed at once)
    max_age: int = 30  # missed updates a confirmed track survives (lost, waiting to be re-found)
    use_masks: bool = True  # mask IoU (box IoU where a mask is missing); False: box IoU only
    mask_stride: int = 4  # subsampling of full masks when detections carry no low-res masks
    mask_threshold: float = 0.5  # binarises soft low-res masks
    class_aware: bool = True  # a track only matches detections of its class
    velocity_window: int = 6  # high-score observations the velocity is fitted to (least squares)
    trail_length: int = 16  # observed box centres kept per track (for drawing trails)

    def __post_init__(self) -> None:
        for name in ("high_score", "low_score", "new_track_score", "match_overlap", "low_match_overlap",
                     "tentative_match_overlap", "mask_threshold"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"tracker setting {name} must be in [0, 1] (got {value})")
        if self.low_score > self.high_score:
            raise ConfigError(f"tracker low_score ({self.low_score}) must be <= high_score ({self.high_score})")
        for name, low in (("min_hits", 1), ("max_age", 0), ("mask_stride", 1), ("trail_length", 0),
                          ("velocity_window", 2)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ConfigError(f"tracker setting {name} must be an integer >= {low} (got {value!r})")


@dataclass
class Track:
    """One tracked instance.

    ``box`` [4] float64 xyxy image pixels, ``mask`` (low resolution, None when empty) and
    ``timestamp``: the last observation. ``anchor_box`` / ``anchor_mask`` / ``anchor_time``:
    the last HIGH-score observation (a low score usually means a partly hidden object, whose
    visible part moves and changes shape unlike the object); the motion model measures velocity
    between anchors, and a lost track is also looked for where its anchor would be now.
    ``velocity`` [2] is the centre's velocity in pixels per timestamp unit; ``trail`` the last
    observed centres (x, y); ``anchors`` the (time, cx, cy) of the last high-score observations
    the velocity is fitted to; ``detection_index`` the detection matched in the latest update
    (-1 when none).
    """

    uid: int  # creation order (internal, also for tentative tracks)
    label: int
    score: float
    box: np.ndarray
    mask: Optional[MaskPatch]
    mask_scale: Tuple[float, float]  # low-res pixels per image pixel (y, x)
    timestamp: float
    anchor_box: np.ndarray
    anchor_mask: Optional[MaskPatch]
    anchor_time: float
    track_id: int = -1  # public ID, given at confirmation
    state: str = TrackState.TENTATIVE
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    anchors: Deque[Tuple[float, float, float]] = field(default_factory=deque)  # (time, cx, cy)
    hits: int = 1  # matches so far
    streak: int = 1  # consecutive matches (to confirm)
    misses: int = 0  # consecutive missed updates
    detection_index: int = -1
    trail: Deque[Tuple[float, float]] = field(default_factory=deque)

    @property
    def centre(self) -> np.ndarray:
        return (self.box[:2] + self.box[2:]) / 2.0

    def predicted_box(self, timestamp: float) -> np.ndarray:
        """[4] xyxy: the last box moved by ``velocity x (timestamp - last seen)`` (no clamping)."""
        shift = self.velocity * (float(timestamp) - self.timestamp)
        return self.box + np.concatenate([shift, shift])


# --------------------------------------------------------------------------- pure math


class MaskPatch(NamedTuple):
    """A binary mask kept as its bounding-box crop: ``pixels`` [ph, pw] bool whose [0, 0] lies
    at (``top``, ``left``) of a ``shape`` = (h, w) mask with ``area`` pixels set."""

    pixels: np.ndarray
    top: int
    left: int
    area: int
    shape: Tuple[int, int]


def mask_patches(masks: np.ndarray) -> List[Optional[MaskPatch]]:
    """``[N, h, w]`` bool -> N patches (their pixels copied); None for an empty mask."""
    n, h, w = masks.shape
    as_bytes = masks.view(np.uint8)
    out: List[Optional[MaskPatch]] = []
    for i in range(n):
        # OpenCV's bounding rectangle of the non-zero pixels: 3x faster than numpy reductions here
        x0, y0, pw, ph = cv2.boundingRect(as_bytes[i])
        if pw == 0 or ph == 0:
            out.append(None)
            continue
        pixels = masks[i, y0:y0 + ph, x0:x0 + pw].copy()
        out.append(MaskPatch(pixels, y0, x0, int(np.count_nonzero(pixels)), (h, w)))
    return out


def patch_iou(a: MaskPatch, b: MaskPatch, dy: int = 0, dx: int = 0) -> float:
    """IoU of mask ``a`` with mask ``b`` moved by (``dy``, ``dx``) whole pixels (positive: down /
    right); what ``b`` moves out of its ``shape`` is dropped. Both masks have the same shape."""
    h, w = b.shape
    by0, bx0 = b.top + dy, b.left + dx
    by1, bx1 = by0 + b.pixels.shape[0], bx0 + b.pixels.shape[1]
    area_b = b.area
    if by0 < 0 or bx0 < 0 or by1 > h or bx1 > w:  # partly moved out: count what stays inside
        inside = b.pixels[max(0, -by0):b.pixels.shape[0] - max(0, by1 - h),
                          max(0, -bx0):b.pixels.shape[1] - max(0, bx1 - w)]
        area_b = int(np.count_nonzero(inside))
    y0, y1 = max(a.top, by0, 0), min(a.top + a.pixels.shape[0], by1, h)
    x0, x1 = max(a.left, bx0, 0), min(a.left + a.pixels.shape[1], bx1, w)
    inter = 0
    if y0 < y1 and x0 < x1:
        inter = int(np.count_nonzero(a.pixels[y0 - a.top:y1 - a.top, x0 - a.left:x1 - a.left]
                                     & b.pixels[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]))
    union = a.area + area_b - inter
    return inter / union if union > 0 else 0.0


def predict_boxes(boxes: np.ndarray, velocities: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Constant-velocity prediction of boxes.

    Args:
        boxes: ``[M, 4]`` xyxy.
        velocities: ``[M, 2]`` centre velocity (x, y) per time unit.
        dt: ``[M]`` time since each box was observed.

    Returns:
        ``[M, 4]`` xyxy, each box moved by ``velocity x dt`` (size unchanged).
    """
    shift = velocities * dt[:, None]
    return boxes + np.concatenate([shift, shift], axis=1)


def fit_velocity(samples: Sequence[Tuple[float, float, float]]) -> np.ndarray:
    """Least-squares constant velocity through observed centres.

    Args:
        samples: K observations ``(time, x, y)`` (a handful: plain Python arithmetic).

    Returns:
        ``[2]`` velocity (x, y) per time unit; zeros without two distinct times.
    """
    k = len(samples)
    if k < 2:
        return np.zeros(2)
    mt = sum(s[0] for s in samples) / k
    mx = sum(s[1] for s in samples) / k
    my = sum(s[2] for s in samples) / k
    spread = sum((s[0] - mt) ** 2 for s in samples)
    if spread <= 0.0:
        return np.zeros(2)
    vx = sum((s[0] - mt) * (s[1] - mx) for s in samples) / spread
    vy = sum((s[0] - mt) * (s[2] - my) for s in samples) / spread
    return np.array([vx, vy])


def clamp_centres(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """``[M, 4]`` xyxy -> ``[M, 4]``: each box moved (size kept) so its centre lies inside
    ``[0, width] x [0, height]``."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    target = np.stack([centre[:, 0].clip(0, width), centre[:, 1].clip(0, height)], axis=1)
    move = target - centre
    return boxes + np.concatenate([move, move], axis=1)


def assign(overlap: np.ndarray, min_overlap: float) -> Tuple[List[Tuple[int, int]], List[int], List[int]]:
    """Minimum-cost one-to-one assignment on ``1 - overlap``, keeping pairs ``>= min_overlap``.

    Args:
        overlap: ``[D, T]`` (detections x tracks); forbidden pairs hold a negative value.

    Returns:
        ``(pairs, unmatched_rows, unmatched_cols)``: ``pairs`` [(row, col)] in row order.
    """
    rows_n, cols_n = overlap.shape
    if rows_n == 0 or cols_n == 0:
        return [], list(range(rows_n)), list(range(cols_n))
    # pairs below the threshold get a cost no kept pair can have, so they are never preferred
    allowed = overlap >= min_overlap
    cost = np.where(allowed, 1.0 - overlap, 2.0 + rows_n + cols_n)
    rows, cols = linear_sum_assignment(cost)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]
    used_r = {r for r, _ in pairs}
    used_c = {c for _, c in pairs}
    return pairs, [r for r in range(rows_n) if r not in used_r], [c for c in range(cols_n) if c not in used_c]


def low_res_masks(detections: Detections, stride: int = 4,
                  threshold: float = 0.5) -> Tuple[Optional[np.ndarray], Tuple[float, float]]:
    """The masks the tracker compares, and their scale.

    Uses ``detections.proto_masks`` (``[N, Hp, Wp]``, covering the whole image) when present,
    else the full masks ``[N, H, W]`` subsampled every ``stride`` pixels. Soft masks are
    binarised at ``threshold``.

    Returns:
        ``(masks [N, h, w] bool numpy array, or None when there are none, (h / H, w / W))``:
        low-res pixels per image pixel along y and x.
    """
    full = detections.masks
    if full is None or full.dim() != 3:
        return None, (1.0, 1.0)
    height, width = int(full.shape[-2]), int(full.shape[-1])
    n = len(detections)
    proto = getattr(detections, "proto_masks", None)
    if proto is not None and proto.dim() == 3 and proto.shape[0] == n:
        low = proto
    elif full.shape[0] == n:
        offset = stride // 2
        low = full[:, offset::stride, offset::stride]
    else:
        return None, (1.0, 1.0)
    if height == 0 or width == 0 or low.shape[-1] == 0 or low.shape[-2] == 0:
        return None, (1.0, 1.0)
    # numpy from here: single-threaded, so small per-frame work never waits on a busy thread pool
    low = low.detach().to("cpu").numpy()
    low = np.ascontiguousarray(low if low.dtype == np.bool_ else low > threshold)
    return low, (low.shape[-2] / height, low.shape[-1] / width)


def track_ids_of(tracks: Sequence[Track], num_detections: int) -> np.ndarray:
    """``[N]`` int64: the track ID of each detection of the frame, -1 for untracked ones."""
    ids = np.full(num_detections, -1, dtype=np.int64)
    for track in tracks:
        if 0 <= track.detection_index < num_detections:
            ids[track.detection_index] = track.track_id
    return ids


# --------------------------------------------------------------------------- tracker


class Tracker:
    """Keeps tracks across frames; feed it every frame in order.

    Args:
        settings: :class:`TrackerSettings` (defaults when None).
    """

    def __init__(self, settings: Optional[TrackerSettings] = None):
        self.settings = settings or TrackerSettings()
        self.tracks: List[Track] = []  # tentative, confirmed and lost, in creation order
        self.frame_count = 0
        self._next_uid = 0
        self._next_id = 1
        self._last_timestamp: Optional[float] = None

    def reset(self) -> None:
        """Forget every track (a new video)."""
        self.__init__(self.settings)

    def update(self, detections: Detections, timestamp: Optional[float] = None) -> List[Track]:
        """Associate one frame's detections with the tracks.

        Args:
            detections: the frame's detections (every one above ``settings.low_score`` should
                be included); any device.
            timestamp: capture time of the frame (seconds, or any increasing unit); None:
                the previous timestamp + 1.

        Returns:
            The confirmed tracks matched in this frame, by track ID, as snapshots (later
            updates do not change them; ``trail`` is a tuple); ``track.detection_index``
            points into ``detections``. ``self.tracks`` holds the live state.
        """
        s = self.settings
        frame = _Frame.of(detections, s, self._advance_clock(timestamp))

        for track in self.tracks:
            track.detection_index = -1
        scores = frame.scores
        considered = np.flatnonzero(scores > s.low_score)
        # one overlap matrix per frame: a pair's overlap does not change while its track is unmatched
        overlap = self._overlap(frame, considered, self.tracks)  # [len(considered), T]
        row = np.full(len(scores), -1, dtype=np.int64)
        row[considered] = np.arange(len(considered))

        def associate(dets: np.ndarray, cols: List[int], min_overlap: float, anchor: bool):
            """Match ``dets`` to the tracks at ``cols``; returns the unmatched of both."""
            pairs, rest_d, rest_c = assign(overlap[np.ix_(row[dets], cols)], min_overlap)
            for r, c in pairs:
                self._match(self.tracks[cols[c]], frame, int(dets[r]), anchor)
            return dets[rest_d], [cols[c] for c in rest_c]

        high = considered[scores[considered] > s.high_score]
        low = considered[scores[considered] <= s.high_score]
        tracked = [i for i, t in enumerate(self.tracks) if t.state != TrackState.TENTATIVE and t.misses == 0]
        lost = [i for i, t in enumerate(self.tracks) if t.state != TrackState.TENTATIVE and t.misses > 0]
        tentative = [i for i, t in enumerate(self.tracks) if t.state == TrackState.TENTATIVE]
        # 1. high-score detections vs confirmed tracks: those seen last frame first, then the
        #    lost ones (a lost track's extrapolation must not take a tracked object's detection)
        high, rest_tracked = associate(high, tracked, s.match_overlap, anchor=True)
        high, rest_lost = associate(high, lost, s.match_overlap, anchor=True)
        # 2. low-score detections vs the confirmed tracks still unmatched
        associate(low, rest_tracked + rest_lost, s.low_match_overlap, anchor=False)
        # 3. high-score detections still unmatched vs tentative tracks
        high, _ = associate(high, tentative, s.tentative_match_overlap, anchor=True)

        self._age_unmatched()
        # 4. new tracks
        for d in high:
            d = int(d)
            if scores[d] > s.new_track_score:
                self._start(frame, d)

        visible = [t for t in self.tracks if t.state == TrackState.CONFIRMED and t.detection_index >= 0]
        return [_snapshot(t) for t in sorted(visible, key=lambda t: t.track_id)]

    # ------------------------------------------------------------------ internals
    def _advance_clock(self, timestamp: Optional[float]) -> float:
        """This frame's timestamp (checked: finite, increasing); counts the frame."""
        if timestamp is None:
            timestamp = 0.0 if self._last_timestamp is None else self._last_timestamp + 1.0
        timestamp = float(timestamp)
        if not np.isfinite(timestamp):
            raise DataError(f"tracker timestamp must be finite (got {timestamp})")
        if self._last_timestamp is not None and timestamp <= self._last_timestamp:
            raise DataError(f"tracker timestamps must increase (got {timestamp} after {self._last_timestamp})")
        self._last_timestamp = timestamp
        self.frame_count += 1
        return timestamp

    def _age_unmatched(self) -> None:
        """Tracks without a detection this frame: a miss; tentative or too old ones are dropped,
        the others become lost."""
        kept = []
        for track in self.tracks:
            if track.detection_index < 0:
                track.misses += 1
                track.streak = 0
                if track.state == TrackState.TENTATIVE or track.misses > self.settings.max_age:
                    continue
                track.state = TrackState.LOST
            kept.append(track)
        self.tracks = kept

    def _start(self, frame: "_Frame", d: int) -> None:
        box, mask = frame.boxes[d].copy(), frame.mask(d)
        track = Track(uid=self._next_uid, label=int(frame.labels[d]), score=float(frame.scores[d]), box=box,
                      mask=mask, mask_scale=frame.scale, timestamp=frame.timestamp, anchor_box=box,
                      anchor_mask=mask, anchor_time=frame.timestamp, detection_index=d,
                      trail=deque(maxlen=self.settings.trail_length),
                      anchors=deque(maxlen=self.settings.velocity_window))
        centre = tuple(float(v) for v in track.centre)
        track.trail.append(centre)
        track.anchors.append((frame.timestamp, *centre))
        self._next_uid += 1
        if self.settings.min_hits <= 1 or self.frame_count == 1:
            self._confirm(track)
        self.tracks.append(track)

    def _confirm(self, track: Track) -> None:
        track.state = TrackState.CONFIRMED
        if track.track_id < 0:
            track.track_id = self._next_id
            self._next_id += 1

    def _match(self, track: Track, frame: "_Frame", d: int, anchor: bool) -> None:
        s = self.settings
        box = frame.boxes[d].copy()
        x1, y1, x2, y2 = box.tolist()
        centre = ((x1 + x2) / 2.0, (y1 + y2) / 2.0)
        if anchor:
            # the velocity is fitted to high-score observations only: a partly hidden object's
            # visible part moves differently from the object
            track.anchors.append((frame.timestamp, *centre))
            track.velocity = fit_velocity(track.anchors)
            track.anchor_box, track.anchor_mask, track.anchor_time = box, frame.mask(d), frame.timestamp
        track.box, track.mask, track.mask_scale = box, frame.mask(d), frame.scale
        track.timestamp = frame.timestamp
        track.score = float(frame.scores[d])
        if not s.class_aware:
            track.label = int(frame.labels[d])
        track.hits += 1
        track.streak += 1
        track.misses = 0
        track.detection_index = d
        track.trail.append(centre)
        if track.state == TrackState.LOST or (track.state == TrackState.TENTATIVE and track.streak >= s.min_hits):
            self._confirm(track)

    def _overlap(self, frame: "_Frame", det_index: np.ndarray, tracks: List[Track]) -> np.ndarray:
        """[D, T] overlap of the chosen detections with the tracks (the better of the track's
        last observation and its anchor, each moved by the motion model)."""
        d_n, t_n = len(det_index), len(tracks)
        if d_n == 0 or t_n == 0:
            return np.zeros((d_n, t_n))
        # views: every track's last observation, plus its anchor where that is older
        column = list(range(t_n))
        boxes = [t.box for t in tracks]
        masks = [t.mask for t in tracks]
        times = [t.timestamp for t in tracks]
        for i, t in enumerate(tracks):
            if t.anchor_time != t.timestamp:
                column.append(i)
                boxes.append(t.anchor_box)
                masks.append(t.anchor_mask)
                times.append(t.anchor_time)
        column = np.asarray(column)
        seen = np.stack(boxes)
        velocity = np.stack([tracks[i].velocity for i in column])
        predicted = predict_boxes(seen, velocity, frame.timestamp - np.asarray(times))
        if frame.width > 0 and frame.height > 0:
            predicted = clamp_centres(predicted, frame.width, frame.height)
        labels = np.array([t.label for t in tracks])
        same = frame.labels[det_index][:, None] == labels[column][None, :]  # [D, V]
        overlap = np.zeros((d_n, len(column)))
        by_box = np.ones((d_n, len(column)), dtype=bool)  # pairs without two comparable masks
        if frame.patches is not None:
            moved = predicted - seen  # centre displacement, image pixels
            shift = np.stack([np.rint(moved[:, 1] * frame.scale[0]), np.rint(moved[:, 0] * frame.scale[1])], 1)
            shift = shift.astype(np.int64)  # [V, 2] (dy, dx) in low-res pixels
            det_patches = [frame.patches[d] for d in det_index]
            det_ok = np.array([p is not None for p in det_patches])
            view_ok = np.array([m is not None and m.shape == frame.mask_shape
                                and tracks[c].mask_scale == frame.scale for m, c in zip(masks, column)])
            # crop rectangles (y0, x0, y1, x1): where they do not meet, the mask IoU is 0
            det_rect = np.array([_rect(p) for p in det_patches], dtype=np.int64).reshape(-1, 4)
            view_rect = np.array([_rect(m) for m in masks], dtype=np.int64).reshape(-1, 4) + np.tile(shift, 2)
            meet = ((det_rect[:, None, 0] < view_rect[None, :, 2]) & (view_rect[None, :, 0] < det_rect[:, None, 2])
                    & (det_rect[:, None, 1] < view_rect[None, :, 3]) & (view_rect[None, :, 1] < det_rect[:, None, 3]))
            by_box = ~(det_ok[:, None] & view_ok[None, :])
            compare = ~by_box & meet
            if self.settings.class_aware:
                compare &= same
            for r, v in zip(*np.nonzero(compare)):
                overlap[r, v] = patch_iou(det_patches[r], masks[v], int(shift[v, 0]), int(shift[v, 1]))
        if by_box.any():  # box IoU, only where it is needed
            rows, cols = np.flatnonzero(by_box.any(axis=1)), np.flatnonzero(by_box.any(axis=0))
            ious = box_iou(torch.from_numpy(frame.boxes[det_index[rows]]), torch.from_numpy(predicted[cols])).numpy()
            block = np.ix_(rows, cols)
            overlap[block] = np.where(by_box[block], ious, overlap[block])

        best = overlap[:, :t_n]
        if len(column) > t_n:  # each track has at most one extra view
            extra = column[t_n:]
            best[:, extra] = np.maximum(best[:, extra], overlap[:, t_n:])
        if self.settings.class_aware:
            best = np.where(same[:, :t_n], best, _FORBIDDEN)
        return best


def _rect(patch: Optional[MaskPatch]) -> Tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of a patch's crop; an empty rectangle for None."""
    if patch is None:
        return (0, 0, 0, 0)
    return (patch.top, patch.left, patch.top + patch.pixels.shape[0], patch.left + patch.pixels.shape[1])


def _snapshot(track: Track) -> Track:
    snap = Track.__new__(Track)  # a plain field copy; __init__ would re-run the defaults
    snap.__dict__.update(track.__dict__)
    snap.trail, snap.anchors = tuple(track.trail), tuple(track.anchors)
    return snap


@dataclass
class _Frame:
    """One update's detections as the tracker uses them (CPU, numpy where it is cheaper)."""

    timestamp: float
    scores: np.ndarray  # [N] float64
    boxes: np.ndarray  # [N, 4] float64
    labels: np.ndarray  # [N] int64
    patches: Optional[List[Optional[MaskPatch]]]  # N low-res masks (None: empty or not needed); None: no masks
    mask_shape: Tuple[int, int]  # (h, w) of the low-res masks
    scale: Tuple[float, float]
    height: int
    width: int

    @staticmethod
    def of(detections: Detections, s: TrackerSettings, timestamp: float) -> "_Frame":
        n = len(detections)
        ranking = detections.mask_scores if detections.mask_scores is not None else detections.scores
        full = detections.masks
        size = (int(full.shape[-2]), int(full.shape[-1])) if full is not None and full.dim() == 3 else (0, 0)
        masks, scale = low_res_masks(detections, s.mask_stride, s.mask_threshold) if s.use_masks and n \
            else (None, (1.0, 1.0))
        scores = ranking.detach().to("cpu", torch.float64).numpy().reshape(-1)
        patches = None
        if masks is not None:  # only for the detections the tracker looks at
            considered = np.flatnonzero(scores > s.low_score)
            patches = [None] * n
            for d, patch in zip(considered.tolist(), mask_patches(masks[considered])):
                patches[d] = patch
        return _Frame(
            timestamp=timestamp,
            scores=scores,
            boxes=detections.boxes.detach().to("cpu", torch.float64).numpy().reshape(-1, 4),
            labels=detections.classes.detach().to("cpu").numpy().astype(np.int64).reshape(-1),
            patches=patches,
            mask_shape=(0, 0) if masks is None else (int(masks.shape[1]), int(masks.shape[2])),
            scale=scale, height=size[0], width=size[1],
        )

    def mask(self, d: int) -> Optional[MaskPatch]:
        return None if self.patches is None else self.patches[d]
