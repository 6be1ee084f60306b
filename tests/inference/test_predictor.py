"""Predictor on real bundled photos with small random-init models whose class layer is
biased so that detections survive."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.paths import ROOT
from yolact_lite import load_config, with_overrides
from yolact_lite.box_ops import decode
from yolact_lite.checkpoint.files import model_checkpoint
from yolact_lite.data import read_image
from yolact_lite.errors import CheckpointError, ConfigError, DataError
from yolact_lite.inference.predictor import COCO_CATEGORY_IDS, COCO_CLASSES, Predictor
from yolact_lite.model import build_model
from yolact_lite.model.testing import detecting_model, small_overrides

PHOTO = ROOT / "data" / "photos" / "messi5.jpg"
SMALL = small_overrides(256)



@pytest.fixture(scope="module")
def small_config():
    return load_config("yolact_effl0", SMALL)


@pytest.fixture(scope="module")
def checkpoint(small_config):
    return model_checkpoint(detecting_model(small_config), small_config.to_dict(),
                            class_names=[f"thing{i}" for i in range(80)])


@pytest.fixture(scope="module")
def predictor(small_config, checkpoint):
    return Predictor(small_config, checkpoint)


@pytest.fixture(scope="module")
def photo():
    return read_image(PHOTO)


def check_detections(dets, height, width):
    n = len(dets)
    assert n > 0
    assert dets.masks.shape == (n, height, width) and dets.masks.dtype == torch.bool
    assert dets.boxes.shape == (n, 4) and dets.boxes.dtype == torch.float32
    b = dets.boxes
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 2] <= width).all() and (b[:, 3] <= height).all()
    assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
    assert torch.all(dets.scores[:-1] >= dets.scores[1:])
    assert dets.classes.dtype == torch.int64
    assert ((dets.classes >= 0) & (dets.classes < 80)).all()
    assert dets.masks.any()


def test_predict_real_photo(predictor, photo):
    dets = predictor.predict(photo)
    check_detections(dets, *photo.shape[:2])
    assert len(dets) <= predictor.config.inference.max_detections
    assert dets.class_names[0] == "thing0" and predictor.class_names[5] == "thing5"
    assert set(predictor.timings) == {"preprocess", "network", "detect", "masks"}
    assert all(v >= 0 for v in predictor.timings.values())
    # display filters: the same detections, fewer of them
    top = predictor.predict(photo, top_k=5)
    assert len(top) == 5
    assert torch.equal(top.scores, dets.scores[:5]) and torch.equal(top.masks, dets.masks[:5])


def _original_pipeline(config, checkpoint, image):
    """The original's Detect (Fast NMS) + postprocess, written out plainly in torch on the
    un-fused model: full-size masks for every detection, no display filters."""
    model = build_model(config, pretrained=False).eval()
    model.load_state_dict(checkpoint["model"])
    h, w = image.shape[:2]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(config.model.input_size,) * 2, mode="bilinear", align_corners=False)
    mean = torch.tensor(config.model.pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(config.model.pixel_std).view(1, 3, 1, 1)
    x = (x.flip(1) - mean) / std
    with torch.no_grad():
        out = model(x)
    scores = out["class_logits"][0].softmax(-1)[:, 1:]
    keep = scores.max(1).values > 0.05
    boxes = decode(out["box_deltas"][0][keep], out["priors"][keep])
    coefs, scores = out["coefficients"][0][keep], scores[keep].t()
    sc, idx = scores.sort(1, descending=True)
    sc, idx = sc[:, :200], idx[:, :200]
    b = boxes[idx]  # [C, n, 4]
    lt = torch.maximum(b[:, :, None, :2], b[:, None, :, :2])
    rb = torch.minimum(b[:, :, None, 2:], b[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (b[..., 2:] - b[..., :2]).prod(-1)
    iou = (inter / (area[:, :, None] + area[:, None, :] - inter)).triu(1)
    survive = iou.max(1).values <= 0.5
    cls = torch.arange(scores.shape[0])[:, None].expand_as(idx)[survive]
    sc, idx = sc[survive], idx[survive]
    order = sc.argsort(descending=True)[:100]
    cls, sc, idx = cls[order], sc[order], idx[order]
    protos = out["prototypes"][0]
    masks = torch.sigmoid(protos @ coefs[idx].t()).permute(2, 0, 1)
    hp, wp = masks.shape[1:]
    bb = boxes[idx]
    cols = torch.arange(wp)[None].float()
    rows = torch.arange(hp)[None].float()
    cx = (cols >= (bb[:, :1] * wp - 1).clamp(min=0)) & (cols < (bb[:, 2:3] * wp + 1).clamp(max=wp))
    cy = (rows >= (bb[:, 1:2] * hp - 1).clamp(min=0)) & (rows < (bb[:, 3:4] * hp + 1).clamp(max=hp))
    masks = masks * (cy[:, :, None] & cx[:, None, :])
    full = F.interpolate(masks[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    px = bb * torch.tensor([w, h, w, h])
    px[:, 0::2] = px[:, 0::2].clamp(0, w)
    px[:, 1::2] = px[:, 1::2].clamp(0, h)
    return cls, sc, px, full > 0.5


def test_matches_original_defaults(small_config, checkpoint, photo, predictor):
    cls, sc, px, masks = _original_pipeline(small_config, checkpoint, photo)
    # classes/boxes must agree except where two scores are (numerically) tied
    tied = torch.zeros(len(sc), dtype=torch.bool)
    close = (sc[1:] - sc[:-1]).abs() < 1e-5
    tied[1:] |= close
    tied[:-1] |= close
    for pred in (predictor, Predictor(small_config, checkpoint, fuse=False)):
        dets = pred.predict(photo)
        assert len(dets) == len(sc) > 0
        assert torch.allclose(dets.scores, sc, atol=1e-5)
        assert torch.equal(dets.classes[~tied], cls[~tied])
        assert torch.allclose(dets.boxes[~tied], px[~tied], atol=2e-2)
        assert (dets.masks[~tied] != masks[~tied]).float().mean() < 1e-3


def test_letterbox_runs(small_config, checkpoint, photo):
    cfg = with_overrides(small_config, ["model.preserve_aspect_ratio=true"])
    dets = Predictor(cfg, checkpoint).predict(photo)
    check_detections(dets, *photo.shape[:2])  # (stretch: the other tests)


def test_predict_batch_mixed_sizes(predictor, photo):
    other = read_image(ROOT / "data" / "photos" / "basketball1.png")
    single = predictor.predict(other)
    out = predictor.predict_batch([photo, other])
    assert len(out) == 2
    check_detections(out[0], *photo.shape[:2])
    check_detections(out[1], *other.shape[:2])
    assert torch.allclose(out[1].scores, single.scores, atol=1e-5)


def test_yolact_plus_rescoring_path():
    cfg = load_config("yolact_plus_resnet50", ["model.input_size=256"])
    pred = Predictor(cfg, model_checkpoint(detecting_model(cfg), cfg.to_dict()))
    image = read_image(ROOT / "data" / "photos" / "messi5.jpg")[::2, ::2].copy()
    dets = pred.predict(image)
    check_detections(dets, *image.shape[:2])
    assert pred.model.mask_iou_head is not None
    assert dets.mask_scores.shape == dets.scores.shape
    assert not torch.equal(dets.mask_scores, dets.scores)


def test_default_names_and_ids(small_config):
    with pytest.warns(UserWarning, match="MEANINGLESS"):
        pred = Predictor(small_config)  # random weights: loud warning
    assert pred.class_names == list(COCO_CLASSES) and len(COCO_CLASSES) == 80
    assert pred.category_ids == list(COCO_CATEGORY_IDS) and pred.category_ids[-1] == 90
    cfg3 = with_overrides(small_config, ["model.num_classes=3"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred3 = Predictor(cfg3, fuse=False)
    assert pred3.class_names == ["class_0", "class_1", "class_2"] and pred3.category_ids == [1, 2, 3]


def test_errors(small_config, checkpoint, predictor):
    with pytest.raises(DataError, match=r"empty image \(shape \(0, 10, 3\)\)"):
        predictor.predict(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(DataError, match=r"expected a BGR image of shape \[H, W, 3\], got \(10, 10\)"):
        predictor.predict(np.zeros((10, 10), np.uint8))
    with pytest.raises(CheckpointError, match="checkpoint does not match the model: .*model.num_classes"):
        Predictor(with_overrides(small_config, ["model.num_classes=3"]), checkpoint)
    with pytest.raises(ConfigError, match="backend must be one of torch, onnxruntime, openvino \\(got 'onnx'\\)"):
        Predictor(small_config, checkpoint, backend="onnx")
    with pytest.raises(CheckpointError, match="checkpoint not found: /nonexistent/weights.pth"):
        Predictor(small_config, "/nonexistent/weights.pth")


def test_api_slips_are_refused_not_silently_wrong(predictor, photo):
    """Inputs that used to give a wrong result without a word: 0-1 float pixels (a near-black
    image at 0-255), out-of-range floats, display filters out of range, a missing image list."""
    with pytest.raises(DataError, match=r"look scaled to 0-1 \(max 1\): multiply by 255"):
        predictor.predict(photo.astype(np.float32) / 255)
    with pytest.raises(DataError, match="must be 0-255 like uint8 ones; got values from -1000"):
        predictor.predict(photo.astype(np.float32) - 1000)
    exact = predictor.predict(photo)
    as_float = predictor.predict(photo.astype(np.float32))  # 0-255 floats are fine
    assert torch.equal(exact.boxes, as_float.boxes)
    for kwargs, words in ((dict(display_threshold=1.5), "display_threshold must be a score in [0, 1]"),
                          (dict(display_threshold=float("nan")), "display_threshold must be a score in [0, 1]"),
                          (dict(display_threshold="0.3"), "display_threshold must be a score in [0, 1]"),
                          (dict(top_k=0), "top_k must be an integer >= 1"),
                          (dict(top_k=2.5), "top_k must be an integer >= 1"),
                          (dict(top_k=True), "top_k must be an integer >= 1")):
        with pytest.raises(ValueError, match=re.escape(words)):
            predictor.predict(photo, **kwargs)
    with pytest.raises(DataError, match="predict_batch takes a list of BGR images"):
        predictor.predict_batch(None)


def test_draw_detections_layers_best_on_top():
    from yolact_lite.inference.visualize import class_color, draw_detections
    from yolact_lite.structures import Detections

    image = np.full((40, 60, 3), 100, np.uint8)
    masks = torch.zeros(2, 40, 60, dtype=torch.bool)
    masks[0, 10:30, 10:40] = True
    masks[1, 5:35, 20:50] = True
    dets = Detections(boxes=torch.tensor([[10.0, 10, 40, 30], [20.0, 5, 50, 35]]),
                      scores=torch.tensor([0.9, 0.6]), classes=torch.tensor([1, 2]), masks=masks,
                      class_names=["a", "b", "c"])
    out = draw_detections(image, dets, display_threshold=0.0, show_boxes=False, show_labels=False)
    assert out.shape == image.shape and out is not image and (image == 100).all()

    def blended(label):
        return np.clip(100 * 0.55 + np.array(class_color(label), np.float32) * 0.45 + 0.5, 0, 255).astype(np.uint8)

    assert (out[20, 25] == blended(1)).all()  # overlap: the higher score wins
    assert (out[32, 45] == blended(2)).all()
    assert (out[0, 0] == 100).all()
    only_best = draw_detections(image, dets, display_threshold=0.7, show_boxes=False, show_labels=False)
    assert (only_best[32, 45] == 100).all()
    assert draw_detections(image, dets, top_k=1).shape == image.shape
