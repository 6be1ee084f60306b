"""The instance tracker on synthetic sequences with known identities.

Each sequence renders shapes (discs, rectangles, triangles) that move, cross, hide behind one
another, leave the image and come back. From the visible part of each object a fake detector
makes a detection: jittered mask (eroded / dilated / shifted by a pixel), its box, a score that
drops when the object is partly hidden (ByteTrack's low-score detections), random drop-outs,
sometimes a low-score false blob; the camera sometimes drops frames (timestamp gaps). The
ground truth of a frame is every object with at least 30% of its area visible.

Metrics (implemented here, checked on a hand-computed case): CLEAR MOT (MOTA, ID switches)
and IDF1, with mask IoU >= 0.5 as the match criterion (MOTS style).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from yolact_lite.errors import ConfigError, DataError
from yolact_lite.inference.tracking import (
    Tracker,
    TrackerSettings,
    TrackState,
    assign,
    clamp_centres,
    fit_velocity,
    low_res_masks,
    mask_patches,
    patch_iou,
    predict_boxes,
    track_ids_of,
)
from yolact_lite.structures import Detections

H, W = 120, 160
FPS = 10.0


# --------------------------------------------------------------------------- metrics


def mask_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[A, h, w] x [B, h, w] bool -> [A, B] IoU (0 where both are empty)."""
    fa = a.reshape(len(a), -1).astype(np.float64)
    fb = b.reshape(len(b), -1).astype(np.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


@dataclass
class MotCounts:
    gt: int = 0
    hyp: int = 0
    fn: int = 0
    fp: int = 0
    idsw: int = 0
    idtp: int = 0

    def __add__(self, other: "MotCounts") -> "MotCounts":
        return MotCounts(*(a + b for a, b in zip(self.__dict__.values(), other.__dict__.values())))

    @property
    def mota(self) -> float:
        return 1.0 - (self.fn + self.fp + self.idsw) / max(self.gt, 1)

    @property
    def idf1(self) -> float:
        return 2.0 * self.idtp / max(self.gt + self.hyp, 1)


def mot_counts(frames, threshold: float = 0.5) -> MotCounts:
    """CLEAR MOT counts and IDF1's IDTP of one sequence.

    ``frames``: per frame ``(gt_ids, hyp_ids, similarity [G, H])``. A pair can match when its
    similarity is >= threshold. CLEAR MOT: a ground-truth object keeps last frame's
    hypothesis while that still matches; the rest are matched by maximum total similarity; a
    match to another hypothesis than the object's previous one is an ID switch. IDF1: the
    one-to-one mapping of ground-truth to hypothesis IDs with the most co-matched frames.
    """
    counts = MotCounts()
    previous: Dict[int, int] = {}  # gt -> hypothesis it was last matched to
    co: Dict[Tuple[int, int], int] = {}
    for gt_ids, hyp_ids, sim in frames:
        gt_ids, hyp_ids = list(gt_ids), list(hyp_ids)
        sim = np.asarray(sim, dtype=np.float64).reshape(len(gt_ids), len(hyp_ids))
        counts.gt += len(gt_ids)
        counts.hyp += len(hyp_ids)
        for gi, g in enumerate(gt_ids):
            for hi, h in enumerate(hyp_ids):
                if sim[gi, hi] >= threshold:
                    co[(g, h)] = co.get((g, h), 0) + 1
        matched: Dict[int, int] = {}
        for gi, g in enumerate(gt_ids):
            h = previous.get(g)
            if h in hyp_ids and sim[gi, hyp_ids.index(h)] >= threshold and hyp_ids.index(h) not in matched.values():
                matched[gi] = hyp_ids.index(h)
        free_g = [gi for gi in range(len(gt_ids)) if gi not in matched]
        free_h = [hi for hi in range(len(hyp_ids)) if hi not in matched.values()]
        if free_g and free_h:
            sub = sim[np.ix_(free_g, free_h)]
            rows, cols = linear_sum_assignment(-np.where(sub >= threshold, sub, -1e3))
            for r, c in zip(rows, cols):
                if sub[r, c] >= threshold:
                    matched[free_g[r]] = free_h[c]
        for gi, hi in matched.items():
            g, h = gt_ids[gi], hyp_ids[hi]
            if g in previous and previous[g] != h:
                counts.idsw += 1
            previous[g] = h
        counts.fn += len(gt_ids) - len(matched)
        counts.fp += len(hyp_ids) - len(matched)
    if co:
        gts = sorted({g for g, _ in co})
        hyps = sorted({h for _, h in co})
        table = np.zeros((len(gts), len(hyps)))
        for (g, h), n in co.items():
            table[gts.index(g), hyps.index(h)] = n
        rows, cols = linear_sum_assignment(-table)
        counts.idtp = int(table[rows, cols].sum())
    return counts


def test_metrics_on_a_hand_computed_case():
    # f0: g1-a, g2-b. f1: g1 now covered by b (switch), g2 unmatched (FN).
    # f2: g1-a again (switch back: g1 was last matched to b), g2-b, c matches nothing (FP).
    frames = [
        ([1, 2], ["a", "b"], [[0.9, 0.0], [0.0, 0.9]]),
        ([1, 2], ["b"], [[0.9], [0.1]]),
        ([1, 2], ["a", "b", "c"], [[0.8, 0.2, 0.0], [0.0, 0.7, 0.3]]),
    ]
    c = mot_counts(frames)
    assert (c.gt, c.hyp, c.fn, c.fp, c.idsw) == (6, 6, 1, 1, 2)
    assert c.mota == pytest.approx(1 - 4 / 6)
    # co-matched frames: (1,a)=2, (1,b)=1, (2,b)=2 -> best mapping 1-a, 2-b: IDTP 4
    assert c.idtp == 4 and c.idf1 == pytest.approx(8 / 12)
    # a kept match is not re-decided by a better-scoring newcomer (CLEAR MOT continuity)
    keep = mot_counts([([1], ["a"], [[0.6]]), ([1], ["a", "b"], [[0.55, 0.95]])])
    assert (keep.idsw, keep.fp, keep.fn) == (0, 1, 0)
    assert mot_counts([]).mota == 1.0


# --------------------------------------------------------------------------- synthetic world


_YS, _XS = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5  # pixel centres


def shape_mask(kind: str, cx: float, cy: float, half_w: float, half_h: float) -> np.ndarray:
    """[H, W] bool: a shape centred at (cx, cy), clipped to the image."""
    u, v = (_XS - cx) / half_w, (_YS - cy) / half_h
    inside = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if kind == "disc":
        return u * u + v * v <= 1
    if kind == "rect":
        return inside
    if kind == "upper":  # triangle above the box's rising diagonal
        return inside & (v < -u - 0.08)
    if kind == "lower":  # the complementary triangle: same box, no shared pixel
        return inside & (v > -u + 0.08)
    raise ValueError(kind)


@dataclass
class Obj:
    gid: int
    kind: str
    half: Tuple[float, float]
    position: Callable[[int], Optional[Tuple[float, float]]]  # frame -> centre, None = absent
    label: int = 0
    depth: int = 0  # larger: in front


def linear(x0, y0, vx, vy, start=0, stop=10 ** 9):
    return lambda t: (x0 + vx * t, y0 + vy * t) if start <= t < stop else None


def bouncing(x0, y0, vx, vy, margin=12):
    def position(t):
        def fold(p, v, size):
            span = size - 2 * margin
            q = (p - margin + v * t) % (2 * span)
            return margin + (q if q <= span else 2 * span - q)
        return fold(x0, vx, W), fold(y0, vy, H)
    return position


@dataclass
class Sequence:
    name: str
    objects: List[Obj]
    frames: int
    drop_rate: float = 0.0  # detector misses a visible object
    skipped: Tuple[int, ...] = ()  # frames the camera drops (the tracker never sees them)
    false_blobs: float = 0.0  # chance per frame of a low-score false detection
    jitter: bool = True
    box_jitter: float = 0.0  # extra box noise (pixels)
    missed: Dict[int, range] = field(default_factory=dict)  # gid -> frames without a detection
    seed: int = 0


def render(seq: Sequence):
    """Yield ``(frame, timestamp, gt_ids, gt_masks [G, H, W], detections, det_gids)``."""
    rng = np.random.default_rng(seq.seed)
    # each object misses round(drop_rate x frames) detections, at random frames
    drops = {o.gid: set(rng.choice(seq.frames, int(round(seq.drop_rate * seq.frames)), replace=False).tolist())
             for o in seq.objects}
    kernel = np.ones((3, 3), np.uint8)
    for t in range(seq.frames):
        placed = []
        for obj in seq.objects:
            pos = obj.position(t)
            if pos is not None:
                full = shape_mask(obj.kind, pos[0], pos[1], *obj.half)
                nominal = shape_mask(obj.kind, W / 2, H / 2, *obj.half).sum()
                placed.append((obj, full, nominal))
        placed.sort(key=lambda p: -p[0].depth)  # front first
        cover = np.zeros((H, W), bool)
        gt_ids, gt_masks, dets = [], [], []
        for obj, full, nominal in placed:
            visible = full & ~cover
            cover |= full
            fraction = visible.sum() / max(nominal, 1)
            if fraction < 0.3:
                continue
            gt_ids.append(obj.gid)
            gt_masks.append(visible)
            if t in seq.skipped or t in seq.missed.get(obj.gid, ()) or t in drops.get(obj.gid, ()):
                continue
            mask = visible.astype(np.uint8)
            if seq.jitter:
                op = rng.integers(3)
                mask = cv2.erode(mask, kernel) if op == 0 else cv2.dilate(mask, kernel) if op == 1 else mask
                shift = np.float32([[1, 0, rng.integers(-1, 2)], [0, 1, rng.integers(-1, 2)]])
                mask = cv2.warpAffine(mask, shift, (W, H), flags=cv2.INTER_NEAREST)  # zeros come in
            score = rng.uniform(0.65, 0.95) if fraction >= 0.7 else rng.uniform(0.15, 0.45)
            dets.append((mask.astype(bool), score, obj.label, obj.gid))
        if seq.false_blobs and rng.random() < seq.false_blobs:
            blob = shape_mask("disc", rng.uniform(10, W - 10), rng.uniform(10, H - 10), 4, 4)
            dets.append((blob, rng.uniform(0.12, 0.4), 0, None))
        if t in seq.skipped:
            continue
        order = rng.permutation(len(dets))  # detector order carries no identity
        dets = [dets[i] for i in order]
        yield t, t / FPS, gt_ids, gt_masks, make_detections(dets, rng, seq.box_jitter), [d[3] for d in dets]


def make_detections(dets, rng, box_jitter: float = 0.0) -> Detections:
    if not dets:
        return Detections.empty(H, W)
    masks = np.stack([d[0] for d in dets])
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64) if ys.size else np.zeros(4)
        boxes.append(box + rng.uniform(-box_jitter, box_jitter, 4))
    return Detections(boxes=torch.tensor(np.array(boxes), dtype=torch.float32),
                      scores=torch.tensor([d[1] for d in dets], dtype=torch.float32),
                      classes=torch.tensor([d[2] for d in dets], dtype=torch.int64),
                      masks=torch.from_numpy(masks))


def run_sequence(seq: Sequence, settings: Optional[TrackerSettings] = None, use_timestamps: bool = True):
    """Track ``seq``; returns (MotCounts, per-frame [(gt_ids, {gid: track_id})])."""
    tracker = Tracker(settings or TrackerSettings())
    frames, assoc = [], []
    for _, stamp, gt_ids, gt_masks, dets, det_gids in render(seq):
        tracks = tracker.update(dets, stamp if use_timestamps else None)
        hyp_ids = [tr.track_id for tr in tracks]
        if gt_ids and hyp_ids:
            hyp_masks = dets.masks[[tr.detection_index for tr in tracks]].numpy()
            sim = mask_iou_matrix(np.stack(gt_masks), hyp_masks)
        else:
            sim = np.zeros((len(gt_ids), len(hyp_ids)))
        frames.append((gt_ids, hyp_ids, sim))
        assoc.append((gt_ids, {det_gids[tr.detection_index]: tr.track_id for tr in tracks}))
    return mot_counts(frames), assoc


def crossing() -> Sequence:
    # two discs of one class cross (one in front), a rectangle of another class crosses both
    return Sequence("crossing", [
        Obj(1, "disc", (12, 12), linear(10, 60, 5, 0), depth=1),
        Obj(2, "disc", (12, 12), linear(150, 64, -5, 0)),
        Obj(3, "rect", (8, 14), linear(80, 5, 0, 4), label=1, depth=2),
    ], frames=30, seed=1)


def occlusion() -> Sequence:
    # a disc passes behind a large still rectangle (hidden ~6 frames) and comes out the other side
    return Sequence("occlusion", [
        Obj(1, "rect", (18, 30), linear(80, 60, 0, 0), label=1, depth=1),
        Obj(2, "disc", (10, 10), linear(15, 62, 4, 0)),
        Obj(3, "disc", (9, 9), linear(140, 20, -3, 1)),
    ], frames=34, seed=2)


def leave_and_reenter() -> Sequence:
    # a rectangle walks out through the right edge, stays out 4 frames, walks back in
    def there_and_back(t):
        x = 120 + 6 * t if t <= 10 else 180 - 6 * (t - 10)
        return x, 50.0
    return Sequence("leave_reenter", [
        Obj(1, "rect", (10, 16), there_and_back),
        Obj(2, "disc", (10, 10), bouncing(40, 80, 3, 2)),
    ], frames=28, seed=3)


def dropouts() -> Sequence:
    # six objects of two classes: four cross the image left-right in lanes, two cross the lanes
    # top-down; 5% detector drop-outs, the camera drops frames, false low-score blobs
    paths = [(10, 20, 2.2, 0.3), (150, 40, -2.0, 0.2), (20, 95, 2.0, -0.2), (140, 108, -1.8, -0.3),
             (60, 10, 0.2, 1.6), (110, 110, -0.3, -1.5)]
    objs = [Obj(i + 1, ("disc", "rect")[i % 2], (8 + i % 3, 9), linear(*p), label=i % 2, depth=i)
            for i, p in enumerate(paths)]
    return Sequence("dropouts", objs, frames=60, drop_rate=0.05, skipped=(17, 18, 19, 40, 41),
                    false_blobs=0.3, seed=4)


def twin_triangles(frames: int = 30) -> Sequence:
    # two triangles share one bounding box (the halves of a square, cut along a diagonal)
    # and move together: the boxes overlap almost completely, the masks not at all
    return Sequence("twin_triangles", [
        Obj(1, "upper", (16, 16), linear(40, 50, 2.0, 0.5)),
        Obj(2, "lower", (16, 16), linear(40, 50, 2.0, 0.5)),
    ], frames=frames, box_jitter=2.0, seed=5)


SUITE = (crossing, occlusion, leave_and_reenter, dropouts, twin_triangles)


# --------------------------------------------------------------------------- suite


@functools.lru_cache(maxsize=None)
def suite_counts() -> Dict[str, MotCounts]:
    return {make.__name__: run_sequence(make())[0] for make in SUITE}


def test_suite_mota_and_idf1():
    per = suite_counts()
    total = sum(per.values(), MotCounts())
    summary = {k: (round(v.mota, 3), round(v.idf1, 3), v.fn, v.fp, v.idsw) for k, v in per.items()}
    assert total.gt > 400
    assert total.mota >= 0.95, summary
    assert total.idf1 >= 0.9, summary
    assert total.idsw <= 2, summary


@pytest.mark.parametrize("make", SUITE)
def test_each_sequence_keeps_identities(make):
    counts = suite_counts()[make.__name__]
    assert counts.mota >= 0.85 and counts.idf1 >= 0.85, (counts, counts.mota, counts.idf1)


def test_heavily_overlapping_boxes_no_switch_with_masks_but_boxes_swap():
    with_masks, _ = run_sequence(twin_triangles())
    boxes_only, _ = run_sequence(twin_triangles(), TrackerSettings(use_masks=False))
    assert with_masks.idsw == 0 and with_masks.fn == 0 and with_masks.fp == 0
    assert boxes_only.idsw >= 3  # a box-IoU tracker cannot tell the two apart


def _coasting(missed: range, frames: int = 40) -> Sequence:
    # a disc at constant velocity whose detections are missing for ``missed`` frames
    return Sequence("coast", [Obj(1, "disc", (9, 9), linear(15, 40, 3, 1)),
                              Obj(2, "rect", (8, 8), linear(140, 100, -2, -1))],
                    frames=frames, missed={1: missed}, seed=6)


@pytest.mark.parametrize("gap", [1, 5, 10])
def test_no_switch_when_missed_up_to_max_age(gap):
    settings = TrackerSettings(max_age=10)
    _, assoc = run_sequence(_coasting(range(10, 10 + gap)), settings)
    ids = {seen[1] for _, seen in assoc if 1 in seen}
    assert len(ids) == 1  # the disc keeps its one ID across the gap
    assert any(1 in seen for _, seen in assoc[10 + gap:])


def test_track_removed_after_max_age():
    settings = TrackerSettings(max_age=10)
    _, assoc = run_sequence(_coasting(range(10, 21)), settings)  # 11 misses > max_age
    ids = [seen[1] for _, seen in assoc if 1 in seen]
    assert len(set(ids)) == 2 and ids[0] != ids[-1]


def test_timestamps_carry_the_motion_over_dropped_frames():
    # a fast small disc; the camera drops 5 frames: with timestamps the prediction jumps as far
    # as the disc did, with frame counting it lags behind and the disc gets a new ID
    seq = Sequence("fast", [Obj(1, "disc", (6, 6), linear(10, 60, 5, 0))], frames=24, skipped=(10, 11, 12, 13, 14),
                   jitter=False, seed=7)
    _, with_time = run_sequence(seq)
    _, without = run_sequence(seq, use_timestamps=False)
    assert len({seen[1] for _, seen in with_time if 1 in seen}) == 1
    assert len({seen[1] for _, seen in without if 1 in seen}) == 2


def test_class_aware_by_default():
    # an object of another class appears where a track's object was: a class-aware tracker
    # does not hand it the track's ID, a class-agnostic one does
    for class_aware, expect in ((True, []), (False, [1])):
        tracker = Tracker(TrackerSettings(class_aware=class_aware))
        tracker.update(_dets([[20, 20, 50, 50], [100, 20, 130, 50]], [0.9, 0.9], labels=[0, 1]), 0.0)
        out = tracker.update(_dets([[21, 20, 51, 50]], [0.9], labels=[1]), 1.0)
        assert [t.track_id for t in out] == expect


def test_deterministic():
    assert run_sequence(crossing())[1] == run_sequence(crossing())[1]


# --------------------------------------------------------------------------- states and API


def _dets(boxes, scores, labels=None, size=(H, W)) -> Detections:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    masks = torch.zeros(len(boxes), *size, dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
        masks[i, y1:y2, x1:x2] = True
    labels = labels if labels is not None else [0] * len(boxes)
    return Detections(boxes=boxes, scores=torch.tensor(scores, dtype=torch.float32),
                      classes=torch.tensor(labels, dtype=torch.int64), masks=masks)


def test_states_tentative_confirmed_lost_removed():
    tracker = Tracker(TrackerSettings(max_age=2, min_hits=2))
    box = [[20, 20, 50, 50]]
    assert [t.track_id for t in tracker.update(_dets(box, [0.9]), 0.0)] == [1]  # first frame: at once
    new = [[100, 60, 130, 90]]
    out = tracker.update(_dets(box + new, [0.9, 0.9]), 1.0)
    assert [t.track_id for t in out] == [1]  # the newcomer is tentative
    assert [t.state for t in tracker.tracks] == [TrackState.CONFIRMED, TrackState.TENTATIVE]
    out = tracker.update(_dets(box + new, [0.9, 0.9]), 2.0)
    assert [(t.track_id, t.detection_index) for t in out] == [(1, 0), (2, 1)]
    out = tracker.update(_dets(new, [0.9]), 3.0)
    assert [t.track_id for t in out] == [2] and tracker.tracks[0].state == TrackState.LOST
    tracker.update(_dets(new, [0.9]), 4.0)
    tracker.update(_dets(new, [0.9]), 5.0)  # third miss > max_age 2: removed
    assert [t.track_id for t in tracker.tracks] == [2]
    # a tentative track that misses once is dropped; low scores never start tracks
    tracker.update(_dets(new + [[10, 80, 30, 100]] + [[60, 5, 80, 25]], [0.9, 0.9, 0.4]), 6.0)
    assert len(tracker.tracks) == 2
    tracker.update(_dets(new, [0.9]), 7.0)
    assert len(tracker.tracks) == 1


def test_tracks_seen_last_frame_are_matched_before_lost_ones():
    """A lost track's extrapolation must not take the detection of an object tracked a frame
    ago: B moves left at 20 px a frame and is missed at t=2, so at t=3 its predicted box lies
    over A (IoU 0.71, above match_overlap); A, matched at t=2, keeps its detection and ID."""
    tracker = Tracker()
    a = [20, 20, 50, 50]
    for t, boxes in enumerate(([a, [85, 20, 115, 50]], [a, [65, 20, 95, 50]], [a])):
        tracker.update(_dets(boxes, [0.9] * len(boxes)), float(t))
    assert [(t.track_id, t.state) for t in tracker.tracks] == [(1, TrackState.CONFIRMED), (2, TrackState.LOST)]
    out = tracker.update(_dets([a], [0.9]), 3.0)
    assert [(t.track_id, t.detection_index) for t in out] == [(1, 0)]
    assert tracker.tracks[1].state == TrackState.LOST


def test_low_score_detection_keeps_a_track_alive_but_does_not_start_one():
    tracker = Tracker()
    tracker.update(_dets([[20, 20, 50, 50]], [0.9]), 0.0)
    out = tracker.update(_dets([[21, 20, 51, 50], [100, 20, 130, 50]], [0.2, 0.2]), 1.0)
    assert [(t.track_id, t.detection_index, round(t.score, 2)) for t in out] == [(1, 0, 0.2)]
    assert len(tracker.tracks) == 1
    assert track_ids_of(out, 2).tolist() == [1, -1]
    # below low_score: ignored entirely
    out = tracker.update(_dets([[22, 20, 52, 50]], [0.05]), 2.0)
    assert out == [] and tracker.tracks[0].state == TrackState.LOST


def test_trail_velocity_and_reset():
    tracker = Tracker(TrackerSettings(trail_length=3))
    for i in range(5):
        out = tracker.update(_dets([[10 + 4 * i, 10, 30 + 4 * i, 30]], [0.9]), 0.5 * i)
    track = out[0]
    assert list(track.trail) == [(28.0, 20.0), (32.0, 20.0), (36.0, 20.0)]
    assert track.velocity == pytest.approx([8.0, 0.0])  # 4 px per 0.5 s
    assert track.predicted_box(2.5) == pytest.approx([30, 10, 50, 30])
    samples = [(0.0, 0.0, 5.0), (1.0, 1.0, 5.0), (2.0, 2.0, 8.0), (4.0, 3.0, 4.0)]
    slope = np.polyfit([s[0] for s in samples], np.array([s[1:] for s in samples]), 1)[0]
    assert fit_velocity(samples) == pytest.approx(slope)  # least squares, as numpy's fit
    assert fit_velocity([(3.0, 1.0, 1.0)]).tolist() == [0.0, 0.0]
    assert fit_velocity([(3.0, 1.0, 1.0), (3.0, 2.0, 1.0)]).tolist() == [0.0, 0.0]
    tracker.reset()
    assert tracker.tracks == [] and tracker.update(_dets([[0, 0, 5, 5]], [0.9]), 0.0)[0].track_id == 1


def test_bad_input():
    tracker = Tracker()
    tracker.update(Detections.empty(H, W), 1.0)
    with pytest.raises(DataError, match="increase"):
        tracker.update(Detections.empty(H, W), 1.0)
    with pytest.raises(DataError, match="finite"):
        tracker.update(Detections.empty(H, W), float("nan"))
    for bad, message in (({"low_score": 0.7, "high_score": 0.5}, r"low_score \(0.7\) must be <= high_score"),
                         ({"max_age": -1}, "max_age must be an integer >= 0"),
                         ({"min_hits": 0}, "min_hits must be an integer >= 1"),
                         ({"match_overlap": 2.0}, r"match_overlap must be in \[0, 1\]"),
                         ({"mask_stride": 1.5}, "mask_stride must be an integer >= 1"),
                         ({"velocity_window": 1}, "velocity_window must be an integer >= 2")):
        with pytest.raises(ConfigError, match=message):
            TrackerSettings(**bad)


def test_frame_size_change_falls_back_to_boxes():
    tracker = Tracker()
    tracker.update(_dets([[20, 20, 50, 50]], [0.9]), 0.0)
    out = tracker.update(_dets([[21, 20, 51, 50]], [0.9], size=(100, 140)), 1.0)
    assert [t.track_id for t in out] == [1]


def test_tiny_object_without_low_res_pixels_is_tracked_by_box():
    # a 2x2 px object falls between the every-4th-pixel samples: box IoU decides for it,
    # mask IoU for the large one next to it
    tracker = Tracker()
    for i in range(4):
        dets = _dets([[40 + i, 40, 80 + i, 80], [100 + i, 20, 102 + i, 22]], [0.9, 0.9])
        assert low_res_masks(dets)[0][1].sum() == 0
        out = tracker.update(dets, float(i))
    assert [(t.track_id, t.detection_index) for t in out] == [(1, 0), (2, 1)]
    assert tracker.tracks[1].mask is None and tracker.tracks[0].mask is not None


def test_uses_proto_masks_when_present():
    # low-res masks that disagree with the full ones decide: proof the field is used
    dets = _dets([[20, 20, 60, 60]], [0.9])
    dets.proto_masks = torch.zeros(1, 30, 40, dtype=torch.float32)
    dets.proto_masks[0, 5:15, 5:15] = 0.9
    low, scale = low_res_masks(dets)
    assert low.dtype == bool and low.shape == (1, 30, 40) and int(low.sum()) == 100
    assert scale == (30 / H, 40 / W)
    del dets.proto_masks
    low, scale = low_res_masks(dets, stride=4)
    assert low.shape == (1, 30, 40) and int(low.sum()) == 100  # 40 px / 4 = 10 per side
    assert np.array_equal(low[0], dets.masks[0, 2::4, 2::4].numpy())


# --------------------------------------------------------------------------- pure functions


def test_mask_iou_matrix_against_pixel_counts():
    rng = np.random.default_rng(0)
    a = rng.random((4, 9, 11)) > 0.5
    b = rng.random((3, 9, 11)) > 0.6
    b[2] = False
    iou = mask_iou_matrix(a, b)
    for i in range(4):
        for j in range(3):
            union = (a[i] | b[j]).sum()
            assert iou[i, j] == pytest.approx((a[i] & b[j]).sum() / union if union else 0.0)


def _shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0),
                                                                      max(-dx, 0):w - max(dx, 0)]
    return out


def test_patch_iou_matches_full_masks_shifted():
    rng = np.random.default_rng(1)
    masks = np.zeros((6, 20, 24), bool)
    for i in range(5):  # random blobs of random size and place; the last mask stays empty
        y, x = rng.integers(0, 16), rng.integers(0, 20)
        masks[i, y:y + rng.integers(2, 9), x:x + rng.integers(2, 9)] = rng.random((1,)) < 2
        masks[i] &= rng.random((20, 24)) > 0.2
    patches = mask_patches(masks)
    assert patches[5] is None
    for p, m in zip(patches[:5], masks[:5]):
        full = np.zeros_like(m)
        full[p.top:p.top + p.pixels.shape[0], p.left:p.left + p.pixels.shape[1]] = p.pixels
        assert np.array_equal(full, m) and p.area == m.sum()
    for i in range(5):
        for j in range(5):
            for dy, dx in ((0, 0), (3, -2), (-7, 5), (15, 0), (0, -22), (30, 30)):
                moved = _shifted(masks[j], dy, dx)
                union = (masks[i] | moved).sum()
                expect = (masks[i] & moved).sum() / union if union else 0.0
                assert patch_iou(patches[i], patches[j], dy, dx) == pytest.approx(expect), (i, j, dy, dx)


def test_motion_helpers_and_assign():
    boxes = np.array([[0, 0, 10, 10], [100, 50, 120, 60]], np.float64)
    moved = predict_boxes(boxes, np.array([[2.0, -1.0], [0.0, 0.0]]), np.array([3.0, 5.0]))
    assert moved.tolist() == [[6, -3, 16, 7], [100, 50, 120, 60]]
    assert clamp_centres(np.array([[150, 10, 170, 30]], np.float64), 160, 120).tolist() == [[150, 10, 170, 30]]
    assert clamp_centres(np.array([[170, -40, 190, -20]], np.float64), 160, 120).tolist() == [[150, -10, 170, 10]]
    overlap = np.array([[0.9, 0.8], [0.85, 0.1], [0.0, -1.0]])
    pairs, rows, cols = assign(overlap, 0.2)
    assert pairs == [(0, 1), (1, 0)] and rows == [2] and cols == []  # total cost beats greedy 0-0
    pairs, rows, cols = assign(np.zeros((0, 2)), 0.2)
    assert pairs == [] and rows == [] and cols == [0, 1]
