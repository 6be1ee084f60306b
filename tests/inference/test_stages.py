"""One stage sequence: single images, batches, tiling and video all run the Predictor's
InferenceStages (preprocess -> network -> detect -> masks)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from yolact_lite import load_config
from yolact_lite.checkpoint.files import model_checkpoint
from yolact_lite.inference.detection import detect
from yolact_lite.inference.predictor import Predictor
from yolact_lite.inference.stages import STAGES
from yolact_lite.inference.video import run_sequential, run_video
from yolact_lite.model.testing import detecting_model

TINY = ["model.input_size=128", "model.anchors.scales=[[5],[11],[22],[44],[89]]"]
H, W, FRAMES = 96, 128, 3


@pytest.fixture(scope="module")
def predictor():
    cfg = load_config("yolact_effl0", TINY)
    return Predictor(cfg, model_checkpoint(detecting_model(cfg), cfg.to_dict()))


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), (W, H), interpolation=cv2.INTER_CUBIC)
    return [np.roll(base, i * 5, axis=1).copy() for i in range(FRAMES)]


@pytest.fixture(scope="module")
def video(tmp_path_factory, frames):
    path = tmp_path_factory.mktemp("stages") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def calls(predictor, monkeypatch):
    """The names of the stages the predictor's InferenceStages runs, in order."""
    seen = []
    for name in STAGES:
        original = getattr(predictor.stages, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            seen.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(predictor.stages, name, spy)
    return seen


def test_single_image_runs_the_four_stages_in_order(predictor, frames, calls):
    dets = predictor.predict(frames[0])
    assert calls == list(STAGES)
    assert len(dets) > 0
    assert set(predictor.timings) == set(STAGES)


def test_batch_runs_the_stages_once_and_masks_per_image(predictor, frames, calls):
    predictor.predict_batch(frames[:2])
    assert calls == ["preprocess", "network", "detect", "masks", "masks"]


def test_tiling_runs_the_stages_per_window(predictor, calls):
    frame = np.zeros((100, 300, 3), np.uint8)
    predictor.predict(frame, tile=100, tile_overlap=0.0)
    windows = calls.count("preprocess")
    assert windows == 4  # the full frame + 3 tiles
    assert calls == list(STAGES) * windows


@pytest.mark.parametrize("runner", [run_video, run_sequential], ids=["pipeline", "sequential"])
def test_video_runs_the_same_stages_and_detections_as_images(predictor, frames, video, calls, runner):
    got = {}
    runner(predictor, video, on_result=lambda i, drawn, dets: got.__setitem__(i, dets))
    assert sorted(got) == list(range(FRAMES))
    for name in STAGES:
        assert calls.count(name) == FRAMES, name
    decoded = []
    cap = cv2.VideoCapture(str(video))
    while (read := cap.read())[0]:
        decoded.append(read[1])
    cap.release()
    for i, frame in enumerate(decoded):
        expected = predictor.predict(frame)
        assert torch.equal(got[i].classes, expected.classes)
        assert torch.allclose(got[i].boxes, expected.boxes, atol=1e-4)
        assert torch.equal(got[i].masks, expected.masks)


def test_detect_takes_only_the_network_output_contract(predictor, frames):
    with torch.no_grad():
        raw = predictor.model(predictor.preprocess(frames[:1])[0])
    with pytest.raises(ValueError, match="decode raw model outputs"):
        detect({k: v[0] if k != "priors" else v for k, v in raw.items()}, predictor.config.inference)
