"""The threaded video pipeline on a small synthetic video."""

from __future__ import annotations

import json
import time
import warnings

import cv2
import numpy as np
import pytest
import torch

from yolact_lite import load_config
from yolact_lite.checkpoint.files import model_checkpoint
from yolact_lite.errors import DataError
from yolact_lite.inference.predictor import Predictor
from yolact_lite.inference.video import run_sequential, run_video
from yolact_lite.model.testing import detecting_model

TINY = ["model.input_size=128", "model.anchors.scales=[[5],[11],[22],[44],[89]]"]
H, W, N = 96, 128, 20
BITS, CELL = 5, 16


def write_indexed_video(path, frames=N, size=(H, W)):
    """Frame i shows i in binary as BITS white/black squares along the bottom-left, over a
    smooth random-ish background."""
    h, w = size
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    assert writer.isOpened()
    base = cv2.resize(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    for i in range(frames):
        frame = np.roll(base, i * 3, axis=1).copy()
        for b in range(BITS):
            value = 255 if (i >> b) & 1 else 0
            frame[h - CELL:, b * CELL:(b + 1) * CELL] = value
        writer.write(frame)
    writer.release()
    return path


def read_indices(path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        h = frame.shape[0]
        bits = [frame[h - CELL + 4:h - 4, b * CELL + 4:(b + 1) * CELL - 4].mean() > 127 for b in range(BITS)]
        out.append(sum(int(v) << b for b, v in enumerate(bits)))
    cap.release()
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_indexed_video(tmp_path_factory.mktemp("video") / "synthetic.avi")


@pytest.fixture(scope="module")
def quiet_predictor():
    """Random weights: softmax ~ 1/81 < 0.05 everywhere, so nothing is detected or drawn and
    the written frames keep their index pattern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Predictor(load_config("yolact_effl0", TINY))


@pytest.fixture(scope="module")
def busy_predictor():
    cfg = load_config("yolact_effl0", TINY)
    model = detecting_model(cfg)
    return Predictor(cfg, model_checkpoint(model, cfg.to_dict()))


def test_file_mode_keeps_every_frame_in_order(video, quiet_predictor, tmp_path):
    out = tmp_path / "out.mp4"
    seen = []
    summary = run_video(quiet_predictor, video, out, on_result=lambda i, f, d: seen.append(i), queue_size=2)
    assert summary.frames == N and summary.skipped == 0
    assert seen == list(range(N))
    assert read_indices(video) == list(range(N))  # the pattern survives encoding
    assert read_indices(out) == list(range(N))
    assert summary.mean_fps > 0 and summary.median_fps > 0
    assert {"decode", "preprocess", "network", "detect", "masks", "encode"} <= set(summary.stage_ms)
    assert "frames" in summary.format()
    assert summary.expected_frames == N and not summary.ended_early and "note:" not in summary.format()


def test_a_file_that_ends_before_its_frame_count_says_so(video, quiet_predictor, tmp_path):
    cut = tmp_path / "cut.avi"
    data = video.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the header still says N frames
    for run in (run_video, run_sequential):
        summary = run(quiet_predictor, cut, None)
        assert 0 < summary.frames < N and summary.expected_frames == N and summary.ended_early
        assert f"note: the file reports {N} frames but only {summary.frames} could be read" in summary.format()
    assert not run_video(quiet_predictor, video, None, max_frames=3).ended_early  # a cap is not an early end


def _collect(into):
    def callback(index, frame, dets):
        into.append((index, dets.classes.clone(), dets.scores.clone(), dets.boxes.clone(),
                     dets.masks.sum().item()))
    return callback


def test_batching_and_sequential_give_same_detections(video, busy_predictor, tmp_path):
    runs = {}
    for name, fn, kwargs in (
        ("b1", run_video, {"batch_size": 1}),
        ("b3", run_video, {"batch_size": 3}),
        ("seq", run_sequential, {}),
    ):
        got = []
        summary = fn(busy_predictor, video, tmp_path / f"{name}.mp4", max_frames=5, top_k=10,
                     on_result=_collect(got), **kwargs)
        assert summary.frames == 5
        runs[name] = got
    for name in ("b3", "seq"):
        for a, b in zip(runs["b1"], runs[name]):
            assert a[0] == b[0]
            assert torch.equal(a[1], b[1])
            assert torch.allclose(a[2], b[2], atol=1e-5)
            assert torch.allclose(a[3], b[3], atol=1e-3)
            assert abs(a[4] - b[4]) <= 0.001 * max(a[4], 1)
    assert len(runs["b1"][0][1]) == 10  # detections were drawn (top_k)
    assert len(read_indices(tmp_path / "b3.mp4")) == 5


class _FakeCapture:
    """A capture whose frames change size mid-stream (a file cannot do that)."""

    def __init__(self, frames):
        self.frames = list(frames)

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def get(self, prop):
        return 10.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


def test_size_change_mid_stream_and_display_fps(tmp_path, quiet_predictor, busy_predictor, monkeypatch):
    import yolact_lite.inference.video as video_module

    sizes = [(H, W), (H, W), (50, 70), (H, W)]
    frames = [np.full((h, w, 3), 60 * i, np.uint8) for i, (h, w) in enumerate(sizes)]
    for predictor in (quiet_predictor, busy_predictor):
        monkeypatch.setattr(video_module, "open_video", lambda source, *timeouts: (_FakeCapture(frames), False, "fake"))
        seen = []
        out = tmp_path / "o.mp4"
        summary = run_video(predictor, "fake", out, display_fps=True, top_k=3,
                            on_result=lambda i, f, d, seen=seen: seen.append((f.shape[:2], tuple(d.masks.shape[1:]))))
        assert summary.frames == 4
        # each frame is processed with its own geometry ...
        assert [s[0] for s in seen] == sizes
        assert [s[1] for s in seen] == sizes
        # ... and written at the first frame's size
        cap = cv2.VideoCapture(str(out))
        shapes = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            shapes.append(frame.shape[:2])
        assert shapes == [(H, W)] * 4


def test_errors(tmp_path, quiet_predictor):
    with pytest.raises(DataError, match="no such file"):
        run_video(quiet_predictor, tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(DataError, match="bad.mp4: cannot open as a video"):
        run_video(quiet_predictor, bad)
    with pytest.raises(DataError, match="bad.mp4: cannot open as a video"):
        run_sequential(quiet_predictor, bad)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        run_video(quiet_predictor, empty)
    with pytest.raises(DataError, match="camera"):
        run_video(quiet_predictor, 57)
    zero = tmp_path / "zero.avi"  # a valid container holding no frame
    cv2.VideoWriter(str(zero), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48)).release()
    with pytest.raises(DataError, match="no frames"):
        run_video(quiet_predictor, zero)


def test_worker_errors_reach_the_caller(video, quiet_predictor):
    class Broken:
        def __getattr__(self, name):
            return getattr(quiet_predictor, name)

        def network(self, batch):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_video(Broken(), video, max_frames=5)


def test_camera_mode_skips_stale_frames(quiet_predictor, monkeypatch):
    import yolact_lite.inference.video as video_module

    class LiveCamera(_FakeCapture):
        def read(self):  # an endless 200 fps source
            time.sleep(0.005)
            return True, np.zeros((H, W, 3), np.uint8)

    monkeypatch.setattr(video_module, "open_video", lambda source, *timeouts: (LiveCamera([]), True, "camera 0"))
    order = []
    summary = run_video(quiet_predictor, 0, max_frames=6, on_result=lambda i, f, d: order.append(i))
    assert summary.frames == 6 and len(order) == 6
    assert order == sorted(order)  # never reordered; gaps are the skipped (stale) frames
    assert summary.skipped == order[-1] + 1 - 6  # every gap is a counted skip


# --------------------------------------------------------------------------- tracking

# the untrained model scores everything about 0.16: thresholds under that so tracks start
LOW_TRACKER = dict(low_score=0.05, high_score=0.1, new_track_score=0.1)


def _track_log(into):
    def callback(index, timestamp, dets, tracks):
        into.append((index, timestamp, dets, [(t.track_id, t.detection_index) for t in tracks]))
    return callback


def test_tracking_makes_full_masks_only_for_what_is_drawn(video, busy_predictor):
    """Without JSON lines, a tracking run resizes masks only for the drawn detections (top_k
    of the tracked ones): the tracker itself matches on prototype-resolution masks."""
    from yolact_lite.inference.tracking import Tracker, TrackerSettings

    got = []
    summary = run_video(busy_predictor, video, None, max_frames=4, display_threshold=0.0, top_k=3,
                        tracker=Tracker(TrackerSettings(**LOW_TRACKER)), on_result=lambda i, f, d: got.append(d))
    assert summary.tracks > 0 and [len(d) for d in got][1:] == [3, 3, 3]  # 100 candidates a frame are tracked
    assert all(d.masks.is_contiguous() and d.masks.any(dim=(1, 2)).all() for d in got[1:])  # real masks


def test_tracking_pipeline_matches_sequential_and_the_api(video, busy_predictor, tmp_path):
    from pycocotools import mask as mask_utils

    from yolact_lite.inference.track_records import TrackJsonLines
    from yolact_lite.inference.tracking import Tracker, TrackerSettings

    runs, drawn = {}, []
    for name, fn in (("pipeline", run_video), ("sequential", run_sequential)):
        log = []
        jsonl = tmp_path / f"{name}.jsonl"
        with TrackJsonLines(jsonl, category_ids=busy_predictor.category_ids) as writer:
            def on_tracks(*args, log=log, writer=writer):
                _track_log(log)(*args)
                writer(*args)
            # display threshold above every score: nothing is drawn, yet everything is tracked
            summary = fn(busy_predictor, video, None, max_frames=6, display_threshold=0.99, top_k=5,
                         tracker=Tracker(TrackerSettings(**LOW_TRACKER)), on_tracks=on_tracks,
                         on_result=(lambda i, f, d: drawn.append(f)) if name == "pipeline" else None)
        runs[name] = (log, summary, jsonl)
    log, summary, jsonl = runs["pipeline"]
    assert [entry[0] for entry in log] == list(range(6))
    assert [entry[1] for entry in log] == pytest.approx([i / 10.0 for i in range(6)])  # index / file FPS
    assert all(len(entry[3]) > 0 for entry in log[1:])
    assert max(float(entry[2].mask_scores.max()) for entry in log) < 0.99  # all below the display filter
    assert all(entry[2].proto_masks is not None for entry in log)  # the tracker gets the low-res masks
    ids = {tid for entry in log for tid, _ in entry[3]}
    assert summary.tracks == len(ids) > 0 and "track" in summary.stage_ms and "tracks" in summary.format()
    # same tracks from the sequential loop, and from the Python API on the same detections
    assert [e[3] for e in runs["sequential"][0]] == [e[3] for e in log]
    # ... and from the Python API: every detection above low_score of each frame, then the tracker;
    # the video made full-resolution masks only for the tracked detections (nothing is drawn)
    replay, cap = Tracker(TrackerSettings(**LOW_TRACKER)), cv2.VideoCapture(str(video))
    for _, timestamp, dets, pairs in log:
        full = busy_predictor.predict(cap.read()[1], display_threshold=LOW_TRACKER["low_score"])
        expected = [(t.track_id, t.detection_index) for t in replay.update(full, timestamp)]
        assert [tid for tid, _ in expected] == [tid for tid, _ in pairs]
        assert len(dets) == len({d for _, d in pairs if d >= 0}) <= len(full)
        for (_, d_full), (_, d) in zip(expected, pairs):
            assert (d_full >= 0) == (d >= 0)
            if d >= 0:
                assert torch.equal(full.boxes[d_full], dets.boxes[d]) and torch.equal(full.masks[d_full], dets.masks[d])
    cap.release()
    # nothing drawn above the display threshold: the frames come back as decoded
    cap = cv2.VideoCapture(str(video))
    for frame in drawn:
        ok, original = cap.read()
        assert ok and np.array_equal(frame, original)
    cap.release()
    # JSON lines: one per frame, the track IDs, masks that decode to the detection's mask
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(6))
    for line, (_, timestamp, dets, tracks) in zip(lines, log):
        assert line["time_s"] == pytest.approx(timestamp)
        assert [inst["track_id"] for inst in line["instances"]] == [tid for tid, _ in tracks]
        for inst, (_, d) in zip(line["instances"], tracks):
            assert inst["box"] == pytest.approx(dets.boxes[d].tolist(), abs=0.01)
            assert inst["category_id"] == busy_predictor.category_ids[int(dets.classes[d])]
            decoded = mask_utils.decode({"size": inst["rle"]["size"], "counts": inst["rle"]["counts"].encode()})
            assert np.array_equal(decoded.astype(bool), dets.masks[d].numpy())


def test_track_json_lines_errors(tmp_path):
    from yolact_lite.inference.track_records import TrackJsonLines

    with pytest.raises(DataError, match="does not exist"):
        TrackJsonLines(tmp_path / "missing" / "t.jsonl")


def test_draw_tracks_colour_per_id_trail_and_filter():
    from types import SimpleNamespace

    from yolact_lite.inference.visualize import draw_tracks, track_color
    from yolact_lite.structures import Detections

    image = np.full((120, 160, 3), 100, np.uint8)
    masks = torch.zeros(3, 120, 160, dtype=torch.bool)
    masks[0, 60:90, 10:40] = True
    masks[1, 80:110, 90:150] = True
    masks[2, 20:30, 120:150] = True
    dets = Detections(boxes=torch.tensor([[10., 60, 40, 90], [90, 80, 150, 110], [120, 20, 150, 30]]),
                      scores=torch.tensor([0.9, 0.5, 0.8]), classes=torch.tensor([0, 0, 0]), masks=masks,
                      class_names=["thing"])
    tracks = [SimpleNamespace(track_id=7, detection_index=1, trail=((50, 115), (80, 112), (120, 112))),
              SimpleNamespace(track_id=3, detection_index=0, trail=((20, 20),))]
    out = draw_tracks(image, dets, tracks, display_threshold=0.0, trails=True, alpha=0.5)

    def blended(color):
        return np.clip(np.float32(100) * 0.5 + np.float32(color) * 0.5 + 0.5, 0, 255).astype(np.uint8)

    assert np.array_equal(out[75, 25], blended(track_color(3)))  # mask interior in the track's colour
    assert np.array_equal(out[100, 120], blended(track_color(7)))
    assert np.array_equal(out[25, 135], image[25, 135])  # untracked detection: not drawn
    assert tuple(out[112, 100]) == track_color(7)  # trail
    # the same ID keeps its colour in another frame, wherever it is
    moved = [SimpleNamespace(track_id=3, detection_index=1, trail=())]
    assert np.array_equal(draw_tracks(image, dets, moved, alpha=0.5)[100, 120], blended(track_color(3)))
    # the display filter applies to the drawing: a score-0.5 track below a 0.6 threshold is not drawn
    filtered = draw_tracks(image, dets, tracks, display_threshold=0.6, alpha=0.5)
    assert np.array_equal(filtered[100, 120], image[100, 120]) and np.array_equal(filtered[75, 25], out[75, 25])
    assert np.array_equal(filtered[112, 100], image[112, 100])  # nor its trail
    assert track_color(3) != track_color(7)
