"""Detect + postprocess against an independent, deliberately plain re-statement of the
original's rules (docs/original_yolact.md, section 2) written with numpy and loops."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from yolact_lite.config import InferenceConfig
from yolact_lite.inference.detection import detect
from yolact_lite.inference.mask_assembly import assemble_detections
from yolact_lite.model.outputs import decode_outputs
from yolact_lite.structures import InputGeometry

# --------------------------------------------------------------------------- reference


def ref_softmax(row):
    e = np.exp(row - row.max())
    return e / e.sum()


def ref_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_candidates(deltas, logits, priors, conf):
    """(prior index, foreground probabilities, decoded box) of every prior whose best foreground
    probability is above ``conf`` (the original's variances 0.1 / 0.2)."""
    cands = []
    for p in range(len(priors)):
        probs = ref_softmax(logits[p].astype(np.float64))[1:]
        if probs.max() > conf:
            cx, cy, w, h = priors[p]
            dx, dy, dw, dh = deltas[p]
            cx, cy = cx + dx * 0.1 * w, cy + dy * 0.1 * h
            w, h = w * math.exp(dw * 0.2), h * math.exp(dh * 0.2)
            cands.append((p, probs, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
    return cands


def ref_detect(deltas, logits, coefs, priors, conf=0.05, iou_thr=0.5, top_k=200, max_det=100):
    """Returns a list of (score, class, box[4], coef[k]) sorted by score descending."""
    num_cls1 = logits.shape[1]
    cands = ref_candidates(deltas, logits, priors, conf)
    survivors = []
    for c in range(num_cls1 - 1):
        ranked = sorted(cands, key=lambda t: -t[1][c])[:top_k]
        for j, (p, probs, box) in enumerate(ranked):
            worst = max([ref_iou(ranked[i][2], box) for i in range(j)], default=0.0)
            if worst <= iou_thr:  # suppressed boxes still suppress (Fast NMS)
                survivors.append((probs[c], c, box, coefs[p]))
    survivors.sort(key=lambda t: -t[0])
    return survivors[:max_det]


def ref_detect_cross_class(deltas, logits, coefs, priors, conf=0.05, iou_thr=0.5, top_k=200):
    """Cross-class Fast NMS: each candidate takes its best class and one suppression runs over
    all of them (no max_detections cut, as in the original). Same tuples as ref_detect."""
    cands = [(probs.max(), int(probs.argmax()), box, coefs[p])
             for p, probs, box in ref_candidates(deltas, logits, priors, conf)]
    ranked = sorted(cands, key=lambda t: -t[0])[:top_k]
    return [ranked[j] for j in range(len(ranked))
            if max([ref_iou(ranked[i][2], ranked[j][2]) for i in range(j)], default=0.0) <= iou_thr]


def ref_resize_bilinear(img, out_h, out_w):
    """align_corners=False bilinear resize, pixel by pixel."""
    in_h, in_w = img.shape
    out = np.zeros((out_h, out_w))
    for y in range(out_h):
        sy = max((y + 0.5) * in_h / out_h - 0.5, 0.0)
        y0 = min(int(sy), in_h - 1)
        y1 = min(y0 + 1, in_h - 1)
        ly = sy - y0
        for x in range(out_w):
            sx = max((x + 0.5) * in_w / out_w - 0.5, 0.0)
            x0 = min(int(sx), in_w - 1)
            x1 = min(x0 + 1, in_w - 1)
            lx = sx - x0
            top = (1 - lx) * img[y0, x0] + lx * img[y0, x1]
            bottom = (1 - lx) * img[y1, x0] + lx * img[y1, x1]
            out[y, x] = (1 - ly) * top + ly * bottom
    return out


def ref_postprocess(dets, protos, img_h, img_w, crop=True, pad=1.0, head=None):
    """Returns classes, scores, mask_scores, int boxes, float masks (values before > 0.5)."""
    hp, wp, _ = protos.shape
    classes, scores, mscores, boxes, values = [], [], [], [], []
    for score, c, box, coef in dets:
        mask = 1.0 / (1.0 + np.exp(-(protos.astype(np.float64) @ coef.astype(np.float64))))
        if crop:
            x1, x2 = sorted((box[0], box[2]))
            y1, y2 = sorted((box[1], box[3]))
            for r in range(hp):
                for col in range(wp):
                    inside = (max(x1 * wp - pad, 0) <= col < min(x2 * wp + pad, wp)
                              and max(y1 * hp - pad, 0) <= r < min(y2 * hp + pad, hp))
                    if not inside:
                        mask[r, col] = 0.0
        ms = score
        if head is not None:
            with torch.no_grad():
                pred = head(torch.tensor(mask, dtype=torch.float32)[None, None])[0]
            ms = score * float(pred[c])
        values.append(ref_resize_bilinear(mask, img_h, img_w))
        bx = [min(max(box[0] * img_w, 0), img_w), min(max(box[1] * img_h, 0), img_h),
              min(max(box[2] * img_w, 0), img_w), min(max(box[3] * img_h, 0), img_h)]
        boxes.append(bx)
        classes.append(c)
        scores.append(score)
        mscores.append(ms)
    return np.array(classes), np.array(scores), np.array(mscores), np.array(boxes), np.array(values)


# --------------------------------------------------------------------------- helpers


def random_case(seed, num_priors=60, num_classes=3, k=4, proto=8):
    g = torch.Generator().manual_seed(seed)
    priors = torch.cat([torch.rand(num_priors, 2, generator=g) * 0.8 + 0.1,
                        torch.rand(num_priors, 2, generator=g) * 0.4 + 0.1], 1)
    return {
        "box_deltas": torch.randn(num_priors, 4, generator=g) * 0.7,
        "class_logits": torch.randn(num_priors, num_classes + 1, generator=g) * 2.0,
        "coefficients": torch.tanh(torch.randn(num_priors, k, generator=g) * 2),
        "priors": priors,
        "prototypes": torch.relu(torch.randn(proto, proto, k, generator=g) * 2),
    }


def compare(ours, ref, img_h, img_w):
    classes, scores, mscores, boxes, values = ref
    assert len(ours) == len(classes) > 0
    assert ours.classes.tolist() == classes.tolist()
    np.testing.assert_allclose(ours.scores.numpy(), scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.mask_scores.numpy(), mscores, rtol=1e-4, atol=1e-6)
    ob = ours.boxes.numpy().astype(np.float64)
    np.testing.assert_allclose(ob, boxes, atol=1e-3)
    near_int = np.abs(boxes - np.round(boxes)) < 1e-3
    assert np.all((ob.astype(np.int64) == boxes.astype(np.int64)) | near_int)  # original truncates
    assert ours.masks.dtype == torch.bool and ours.masks.shape == (len(classes), img_h, img_w)
    expected = values > 0.5
    ambiguous = np.abs(values - 0.5) < 1e-5
    assert np.all((ours.masks.numpy() == expected) | ambiguous)
    assert expected.any()


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed,overrides", [
    (0, {}),
    (1, {"nms_top_k": 10, "max_detections": 12}),
    (2, {"nms_iou": 0.3}),
])
def test_matches_original_rules_square_stretch(seed, overrides):
    case = random_case(seed)
    cfg = dataclasses.replace(InferenceConfig(), **overrides)
    img_h, img_w, size = 37, 53, 32
    geometry = InputGeometry.for_image(img_h, img_w, size, preserve_aspect_ratio=False)
    det = detect(decode_outputs(case), cfg)
    ours = assemble_detections(det, case["prototypes"], geometry, cfg)
    dets = ref_detect(case["box_deltas"].numpy(), case["class_logits"].numpy(), case["coefficients"].numpy(),
                      case["priors"].numpy(), cfg.candidate_threshold, cfg.nms_iou, cfg.nms_top_k, cfg.max_detections)
    ref = ref_postprocess(dets, case["prototypes"].numpy(), img_h, img_w)
    compare(ours, ref, img_h, img_w)
    if not overrides:  # no second per-class threshold: low survivors exist (original quirk)
        assert (ours.scores < cfg.candidate_threshold).any()
    assert torch.all(ours.scores[:-1] >= ours.scores[1:])


def test_no_crop_mode():
    case = random_case(3)
    cfg = dataclasses.replace(InferenceConfig(), crop_mode="none")
    geometry = InputGeometry.for_image(30, 41, 32)
    ours = assemble_detections(detect(decode_outputs(case), cfg), case["prototypes"], geometry, cfg)
    dets = ref_detect(case["box_deltas"].numpy(), case["class_logits"].numpy(), case["coefficients"].numpy(),
                      case["priors"].numpy())
    compare(ours, ref_postprocess(dets, case["prototypes"].numpy(), 30, 41, crop=False), 30, 41)


class _ToyIoUHead(torch.nn.Module):
    """Stands in for the YOLACT++ re-scoring net on tiny maps: [M, 1, H, W] -> [M, C]."""

    def __init__(self, num_classes):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(0.3, 1.2, num_classes))

    def forward(self, x):
        return x.mean(dim=(1, 2, 3))[:, None] * self.weight[None] + 0.1


def test_yolact_plus_rescoring():
    case = random_case(4)
    cfg = InferenceConfig()
    head = _ToyIoUHead(3)
    geometry = InputGeometry.for_image(32, 32, 32)
    ours = assemble_detections(detect(decode_outputs(case), cfg), case["prototypes"], geometry, cfg, mask_iou_head=head)
    dets = ref_detect(case["box_deltas"].numpy(), case["class_logits"].numpy(), case["coefficients"].numpy(),
                      case["priors"].numpy())
    compare(ours, ref_postprocess(dets, case["prototypes"].numpy(), 32, 32, head=head), 32, 32)
    assert not torch.allclose(ours.mask_scores, ours.scores)
    # rescoring off -> mask_scores are the box scores
    off = dataclasses.replace(cfg, rescore_masks=False)
    plain = assemble_detections(detect(decode_outputs(case), off), case["prototypes"], geometry, off,
                                mask_iou_head=head)
    assert torch.equal(plain.mask_scores, plain.scores)


def test_real_mask_iou_head_shapes():
    from yolact_lite.model.heads import MaskIoUHead

    case = random_case(5, proto=64)
    geometry = InputGeometry.for_image(100, 120, 256)
    out = assemble_detections(detect(decode_outputs(case), InferenceConfig()), case["prototypes"], geometry,
                              InferenceConfig(), mask_iou_head=MaskIoUHead(3).eval())
    assert out.mask_scores.shape == out.scores.shape and len(out) > 0


def _letterbox_case(crop, tall=False):
    # 400 x 200 image (w x h) in a 64 input: content 64 x 32 at the top-left; protos 16 x 16,
    # of which rows 0..7 cover the image. A box [100, 50, 300, 150] px is, relative to the
    # input, [0.25, 0.125, 0.75, 0.375] -> proto cols 4..11, rows 2..5. ``tall``: the same
    # case transposed (a 200 x 400 image, content 32 x 64), so each axis is un-mapped once.
    geometry = InputGeometry.for_image(400, 200, 64, preserve_aspect_ratio=True) if tall else \
        InputGeometry.for_image(200, 400, 64, preserve_aspect_ratio=True)
    assert (geometry.content_h, geometry.content_w) == ((64, 32) if tall else (32, 64))
    box = torch.tensor([[0.125, 0.25, 0.375, 0.75]] if tall else [[0.25, 0.125, 0.75, 0.375]])
    prior = torch.cat([(box[:, :2] + box[:, 2:]) / 2, box[:, 2:] - box[:, :2]], 1)
    # mask logits = 5 * proto0 - 5 * proto1: +5 inside the box, -5 elsewhere in the image,
    # +20 under the padding (garbage that must never reach the image)
    protos = torch.zeros(16, 16, 2)
    protos[2:6, 4:12, 0] = 2.0
    protos[8:, :, 0] = 5.0
    protos[..., 1] = 1.0
    if tall:
        protos = protos.transpose(0, 1).contiguous()
    outputs = {
        "box_deltas": torch.zeros(1, 4), "priors": prior,
        "class_logits": torch.tensor([[0.0, 6.0]]),  # one foreground class
        "coefficients": torch.tensor([[5.0, -5.0]]),
    }
    cfg = dataclasses.replace(InferenceConfig(), crop_mode="hard" if crop else "none")
    return outputs, protos, geometry, cfg


@pytest.mark.parametrize("tall", [False, True])
@pytest.mark.parametrize("crop", [True, False])
def test_letterbox_round_trip_is_exact(crop, tall):
    outputs, protos, geometry, cfg = _letterbox_case(crop, tall)
    det = detect(decode_outputs(outputs), cfg)
    out = assemble_detections(det, protos, geometry, cfg)
    assert len(out) == 1 and out.classes.tolist() == [0]
    assert out.boxes.tolist() == [[50.0, 100.0, 150.0, 300.0] if tall else [100.0, 50.0, 300.0, 150.0]]
    expected = torch.zeros(200, 400, dtype=torch.bool)
    expected[50:150, 100:300] = True
    assert out.masks.shape == ((1, 400, 200) if tall else (1, 200, 400))
    mask = out.masks[0].T if tall else out.masks[0]  # compared in the wide case's layout
    # edges land exactly on the box; bilinear interpolation only rounds the corners
    assert not (mask & ~expected).any()  # nothing outside (no padding garbage either)
    assert torch.equal(mask[100], expected[100]) and torch.equal(mask[:, 200], expected[:, 200])
    corners = torch.zeros_like(expected)
    for r, c in ((50, 100), (137, 100), (50, 287), (137, 287)):  # half a proto pixel
        corners[r:r + 13, c:c + 13] = True
    assert torch.equal(mask[~corners], expected[~corners])
    full = assemble_detections(det, protos, geometry, cfg, roi_resize=False)
    assert torch.equal(full.masks, out.masks)


def test_roi_resize_equals_full_resize():
    case = random_case(6, proto=16)
    cfg = InferenceConfig()
    for geometry in (InputGeometry.for_image(90, 70, 64), InputGeometry.for_image(90, 70, 64, True)):
        det = detect(decode_outputs(case), cfg)
        a = assemble_detections(det, case["prototypes"], geometry, cfg)
        b = assemble_detections(det, case["prototypes"], geometry, cfg, roi_resize=False)
        assert a.masks.shape == b.masks.shape == (len(det["scores"]), 90, 70)
        assert (a.masks != b.masks).float().mean() < 1e-4


def test_display_filters_drop_before_masks():
    case = random_case(7)
    cfg = InferenceConfig()
    geometry = InputGeometry.for_image(40, 40, 32)
    det = detect(decode_outputs(case), cfg)
    every = assemble_detections(det, case["prototypes"], geometry, cfg)
    some = assemble_detections(det, case["prototypes"], geometry, cfg, top_k=5, display_threshold=0.2)
    keep = (every.scores > 0.2).nonzero().squeeze(1)[:5]
    assert torch.equal(some.scores, every.scores[keep])
    assert torch.equal(some.masks, every.masks[keep])


def test_display_threshold_and_nms_modes():
    case = random_case(8)
    base = detect(decode_outputs(case), InferenceConfig())
    thr = detect(decode_outputs(case), dataclasses.replace(InferenceConfig(), detection_threshold=0.3))
    assert torch.equal(thr["scores"], base["scores"][base["scores"] > 0.3])
    cross = detect(decode_outputs(case), dataclasses.replace(InferenceConfig(), nms="cross_class"))
    expected = ref_detect_cross_class(case["box_deltas"].numpy(), case["class_logits"].numpy(),
                                      case["coefficients"].numpy(), case["priors"].numpy())
    assert cross["classes"].tolist() == [c for _, c, _, _ in expected]
    np.testing.assert_allclose(cross["scores"].numpy(), [s for s, _, _, _ in expected], rtol=1e-5)
    np.testing.assert_allclose(cross["boxes_rel"].numpy(), [b for _, _, b, _ in expected], atol=1e-5)
    assert len(cross["scores"]) < len(base["scores"])  # one NMS over all classes keeps fewer than per class
    trad = detect(decode_outputs(case), dataclasses.replace(InferenceConfig(), nms="traditional"))
    assert (trad["scores"] > 0.05).all() and torch.all(trad["scores"][:-1] >= trad["scores"][1:])
    for d in (base, cross, trad):
        assert d["coefficients"].shape == (len(d["scores"]), 4)
        assert d["boxes_rel"].shape == (len(d["scores"]), 4)


def test_empty_result():
    case = random_case(9)
    case["class_logits"] = torch.zeros_like(case["class_logits"])
    case["class_logits"][:, 0] = 20.0  # background everywhere
    det = detect(decode_outputs(case), InferenceConfig())
    assert det["scores"].numel() == 0 and det["coefficients"].shape == (0, 4)
    out = assemble_detections(det, case["prototypes"], InputGeometry.for_image(33, 44, 32), InferenceConfig())
    assert len(out) == 0
    assert out.masks.shape == (0, 33, 44) and out.masks.dtype == torch.bool
    assert out.boxes.shape == (0, 4)


def test_accepts_batched_single_image():
    case = random_case(10)
    batched = {k: (v if k == "priors" else v[None]) for k, v in case.items()}
    a, b = detect(decode_outputs(case), InferenceConfig()), detect(decode_outputs(batched), InferenceConfig())
    assert torch.equal(a["scores"], b["scores"])


def test_non_finite_boxes_are_dropped_not_fatal():
    # A diverged network decodes to inf boxes; detection must skip them, not crash in NMS.
    from yolact_lite.config import InferenceConfig
    from yolact_lite.inference.detection import detect

    priors = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])
    deltas = torch.tensor([[0.0, 0.0, 1e6, 1e6], [0.0, 0.0, 0.0, 0.0]])  # exp overflow in prior 0
    logits = torch.tensor([[0.0, 5.0], [0.0, 5.0]])
    out = {"box_deltas": deltas, "class_logits": logits, "coefficients": torch.zeros(2, 4), "priors": priors}
    det = detect(decode_outputs(out), InferenceConfig())
    assert det["prior_index"].tolist() == [1]
    assert torch.isfinite(det["boxes_rel"]).all()


@pytest.mark.parametrize("letterbox", [False, True])
def test_clip_to_box_cuts_full_resolution_masks_to_the_box(letterbox):
    """With ``clip_to_box`` a mask keeps exactly the pixels of the proto-resolution result whose
    column c and row r satisfy x1 - 0.5 <= c < x2 + 0.5 (rows alike) for its pixel box."""
    h, w = 40, 60
    geometry = InputGeometry.for_image(h, w, 32, preserve_aspect_ratio=letterbox)
    det = {"boxes_rel": torch.tensor([[0.3, 0.35, 0.55, 0.7]]), "classes": torch.tensor([0]),
           "scores": torch.tensor([0.9]), "coefficients": torch.tensor([[1.0]])}
    prototypes = torch.full((8, 8, 1), 5.0)  # sigmoid(5) > 0.5 everywhere: the crop decides
    plain_cfg = InferenceConfig()
    plain = assemble_detections(det, prototypes, geometry, plain_cfg)
    clipped = assemble_detections(det, prototypes, geometry, dataclasses.replace(plain_cfg, clip_to_box=True))
    x1, y1, x2, y2 = clipped.boxes[0].tolist()
    assert torch.equal(clipped.boxes, plain.boxes)
    expected = np.zeros((h, w), dtype=bool)
    for r in range(h):
        for c in range(w):
            expected[r, c] = plain.masks[0, r, c].item() and x1 - 0.5 <= c < x2 + 0.5 and y1 - 0.5 <= r < y2 + 0.5
    assert np.array_equal(clipped.masks[0].numpy(), expected)
    # the prototype-resolution crop alone spills past the box (padding, coarse pixels)
    assert int(plain.masks[0].sum()) > int(clipped.masks[0].sum()) > 0
