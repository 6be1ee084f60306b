"""Fast NMS: compiled CPU kernel vs torch reference vs an independent
brute-force implementation, plus argument validation and the fallback path."""
import importlib.util
import warnings

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import yolact_lite.ops.nms as nms_mod
from yolact_lite.ops import (
    extension_available,
    fast_nms,
    fast_nms_reference,
    traditional_nms,
)

HAS_EXT = extension_available()
needs_ext = pytest.mark.skipif(not HAS_EXT, reason="yolact_lite._C is not built "
                               "(pip install --no-build-isolation -e .)")


# --------------------------------------------------------------------------
# input generation
# --------------------------------------------------------------------------
BOX_KINDS = ["random", "clustered", "identical", "degenerate", "huge", "grid", "mixed"]
SCORE_KINDS = ["random", "ties", "constant", "signed_zero", "logits", "ramp"]


def make_boxes(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    def rand(*shape):
        return torch.rand(*shape, generator=g)

    if kind == "random":
        c, s = rand(n, 2) * 100, 1 + rand(n, 2) * 60
        return torch.cat([c - s / 2, c + s / 2], 1)
    if kind == "clustered":  # a few groups of heavily overlapping boxes
        centres = rand(3, 2) * 100
        c = centres[torch.randint(0, 3, (n,), generator=g)] + rand(n, 2) * 8
        s = 20 + rand(n, 2) * 10
        return torch.cat([c - s / 2, c + s / 2], 1)
    if kind == "identical":
        return torch.tensor([[10.0, 20.0, 50.0, 45.0]]).repeat(n, 1)
    if kind == "degenerate":  # zero width/height, points, inverted boxes
        x1y1 = rand(n, 2) * 50
        wh = (rand(n, 2) * 20).round() * torch.randint(-1, 2, (n, 2), generator=g)
        return torch.cat([x1y1, x1y1 + wh], 1)
    if kind == "huge":  # large coordinates; some areas overflow float32 to inf
        scale = torch.tensor([1e3, 1e6, 1e19])[torch.randint(0, 3, (n, 1), generator=g)]
        c, s = rand(n, 2) * scale, (0.1 + rand(n, 2)) * scale
        return torch.cat([c - s, c + s], 1)
    if kind == "grid":  # small integer boxes: exact IoU values such as 0.5 occur
        x1y1 = torch.randint(0, 4, (n, 2), generator=g).float()
        wh = torch.randint(1, 4, (n, 2), generator=g).float()
        return torch.cat([x1y1, x1y1 + wh], 1)
    if kind == "mixed":
        parts = [make_boxes(k, n, g) for k in ("random", "clustered", "degenerate", "grid")]
        pick = torch.randint(0, len(parts), (n,), generator=g)
        return torch.stack(parts)[pick, torch.arange(n)]
    raise ValueError(kind)


def make_scores(kind: str, c: int, n: int, g: torch.Generator) -> torch.Tensor:
    if kind == "random":
        return torch.rand(c, n, generator=g)
    if kind == "ties":
        return torch.tensor([0.1, 0.5, 0.9])[torch.randint(0, 3, (c, n), generator=g)]
    if kind == "constant":
        return torch.full((c, n), 0.5)
    if kind == "signed_zero":
        return torch.tensor([0.0, -0.0, 0.25])[torch.randint(0, 3, (c, n), generator=g)]
    if kind == "logits":
        return torch.randn(c, n, generator=g) * 5
    if kind == "ramp":  # monotone in the prior index, up or down, per class
        ramp = torch.linspace(0, 1, n).expand(c, n).clone()
        flip = torch.rand(c, generator=g) < 0.5
        ramp[flip] = ramp[flip].flip(1)
        return ramp
    raise ValueError(kind)


@st.composite
def nms_cases(draw, max_priors=40, max_classes=5, min_priors=0, max_top_k=50):
    n = draw(st.integers(min_priors, max_priors))
    c = draw(st.integers(0, max_classes))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    boxes = make_boxes(draw(st.sampled_from(BOX_KINDS)), n, g)
    scores = make_scores(draw(st.sampled_from(SCORE_KINDS)), c, n, g)
    kwargs = dict(
        iou_threshold=draw(st.one_of(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0, 2.0]),
                                     st.floats(0.0, 1.0))),
        top_k=draw(st.integers(1, max_top_k)),
        max_detections=draw(st.integers(1, 60)),
        cross_class=draw(st.booleans()),
    )
    return boxes, scores, kwargs


def assert_same(a, b):
    for name, x, y in zip(("prior_index", "class_id", "score"), a, b):
        assert x.dtype == y.dtype, (name, x.dtype, y.dtype)
        assert torch.equal(x, y), f"{name} differs:\n{x}\n{y}"


# --------------------------------------------------------------------------
# independent brute force (plain loops, float32 scalars, same IoU formula)
# --------------------------------------------------------------------------
def brute_force_fast_nms(boxes, scores, iou_threshold, top_k, max_detections, cross_class):
    b = boxes.numpy().astype(np.float32)
    s = scores.numpy().astype(np.float32)
    n_cls, n = s.shape
    thr = np.float32(iou_threshold)
    zero = np.float32(0)
    if n_cls == 0 or n == 0:
        return [], [], []

    def iou(p, q):
        ax1, ay1, ax2, ay2 = b[p]
        bx1, by1, bx2, by2 = b[q]
        w = max(min(ax2, bx2) - max(ax1, bx1), zero)
        h = max(min(ay2, by2) - max(ay1, by1), zero)
        inter = w * h
        union = ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1)) - inter
        return inter / union if union > 0 else zero

    def survivors(score_of):
        ranked = sorted(range(n), key=lambda p: (-score_of[p], p))[:top_k]
        return [ranked[j] for j in range(len(ranked))
                if all(iou(ranked[i], ranked[j]) <= thr for i in range(j))]

    with np.errstate(all="ignore"):
        if cross_class:
            best_cls = [max(range(n_cls), key=lambda c: (s[c, p], -c)) for p in range(n)]
            best = [s[best_cls[p], p] for p in range(n)]
            dets = [(best[p], best_cls[p], p) for p in survivors(best)]
        else:
            dets = [(s[c, p], c, p) for c in range(n_cls) for p in survivors(s[c])]
            dets = sorted(dets, key=lambda d: (-d[0], d[1], d[2]))[:max_detections]
    return ([d[2] for d in dets], [d[1] for d in dets], [float(d[0]) for d in dets])


# --------------------------------------------------------------------------
# property tests
# --------------------------------------------------------------------------
@needs_ext
@settings(deadline=None, max_examples=700, suppress_health_check=[HealthCheck.too_slow])
@given(nms_cases())
def test_extension_matches_reference(case):
    boxes, scores, kwargs = case
    ref = fast_nms_reference(boxes, scores, **kwargs)
    ext = fast_nms(boxes, scores, **kwargs)
    assert_same(ext, ref)


@needs_ext
@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(nms_cases(min_priors=64, max_priors=2000, max_classes=4, max_top_k=40))
def test_extension_matches_reference_many_priors(case):
    # P >= 64 blocks of 32 scores with small top_k: exercises the block-maximum
    # bound of the compiled top-k selection (and its partial last block)
    boxes, scores, kwargs = case
    assert_same(fast_nms(boxes, scores, **kwargs), fast_nms_reference(boxes, scores, **kwargs))


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(nms_cases(max_priors=25, max_classes=4))
def test_reference_matches_brute_force(case):
    boxes, scores, kwargs = case
    idx, cls, sc = fast_nms_reference(boxes, scores, **kwargs)
    b_idx, b_cls, b_sc = brute_force_fast_nms(boxes, scores, **kwargs)
    assert idx.tolist() == b_idx
    assert cls.tolist() == b_cls
    assert sc.tolist() == b_sc


@needs_ext
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cross_class", [False, True])
def test_extension_matches_reference_large(seed, cross_class):
    g = torch.Generator().manual_seed(seed)
    n, c = 3000, 24
    boxes = make_boxes("random", n, g) * 5
    scores = make_scores("ties" if seed % 2 else "random", c, n, g)
    kwargs = dict(iou_threshold=0.5, top_k=(200, 300, 500, 37)[seed],
                  max_detections=(100, 5000, 7, 100)[seed], cross_class=cross_class)
    ref = fast_nms_reference(boxes, scores, **kwargs)
    assert_same(fast_nms(boxes, scores, **kwargs), ref)
    assert len(ref[0]) > 0


# --------------------------------------------------------------------------
# hand-worked example: Fast NMS vs traditional NMS
# --------------------------------------------------------------------------
def chain_boxes():
    # Same height; horizontal shifts chosen so that IoU(b1,b2)=0.60,
    # IoU(b2,b3)=0.54 and IoU(b1,b3)=0.29 (for equal boxes shifted by d,
    # IoU = (10 - d) / (10 + d)).
    d12 = 2.5
    d23 = 4.6 / 1.54
    xs = [0.0, d12, d12 + d23]
    return torch.tensor([[x, 0.0, x + 10.0, 10.0] for x in xs])


def test_chain_example_fast_vs_traditional():
    boxes = chain_boxes()
    iou = torchvision.ops.box_iou(boxes, boxes)
    assert iou[0, 1].item() == pytest.approx(0.60, abs=5e-4)
    assert iou[1, 2].item() == pytest.approx(0.54, abs=5e-4)
    assert iou[0, 2].item() == pytest.approx(0.29, abs=5e-3)
    scores = torch.tensor([[0.9, 0.8, 0.7]])

    for fn in (fast_nms, fast_nms_reference):
        for cross_class in (False, True):
            idx, cls, sc = fn(boxes, scores, iou_threshold=0.5, cross_class=cross_class)
            assert idx.tolist() == [0]  # b3 is removed by the suppressed b2
            assert cls.tolist() == [0]
            assert sc.tolist() == pytest.approx([0.9])
    assert brute_force_fast_nms(boxes, scores, 0.5, 200, 100, False)[0] == [0]

    assert torchvision.ops.nms(boxes, scores[0], 0.5).tolist() == [0, 2]
    idx, cls, sc = traditional_nms(boxes, scores, iou_threshold=0.5)
    assert idx.tolist() == [0, 2] and cls.tolist() == [0, 0]
    assert sc.tolist() == pytest.approx([0.9, 0.7])


# --------------------------------------------------------------------------
# specific semantics
# --------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [fast_nms, fast_nms_reference])
def test_ties_and_order(fn):
    # Disjoint boxes, all scores equal: order is (class, prior index).
    boxes = torch.tensor([[i * 20.0, 0.0, i * 20.0 + 10, 10.0] for i in range(4)])
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.5, 0.9, 0.5, 0.5]])
    idx, cls, sc = fn(boxes, scores, top_k=3, max_detections=5)
    assert cls.tolist() == [1, 0, 0, 0, 1]
    assert idx.tolist() == [1, 0, 1, 2, 0]
    assert sc.tolist() == pytest.approx([0.9, 0.5, 0.5, 0.5, 0.5])
    # identical boxes, equal scores: the lowest index survives
    same = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(3, 1)
    idx, _, _ = fn(same, torch.full((1, 3), 0.3))
    assert idx.tolist() == [0]
    # IoU exactly 1.0 with threshold 1.0 is kept (rule is max IoU <= threshold)
    idx, _, _ = fn(same, torch.full((1, 3), 0.3), iou_threshold=1.0)
    assert idx.tolist() == [0, 1, 2]


@pytest.mark.parametrize("fn", [fast_nms, fast_nms_reference])
def test_cross_class_not_capped_by_max_detections(fn):
    n = 30
    boxes = torch.tensor([[i * 20.0, 0.0, i * 20.0 + 10, 10.0] for i in range(n)])
    scores = torch.rand(3, n, generator=torch.Generator().manual_seed(0))
    idx, cls, sc = fn(boxes, scores, max_detections=5, cross_class=True)
    assert len(idx) == n
    best, best_cls = scores.max(0)
    assert torch.equal(sc, best[idx]) and torch.equal(cls, best_cls[idx])
    assert torch.all(sc[:-1] >= sc[1:])
    assert len(fn(boxes, scores, max_detections=5)[0]) == 5
    assert len(fn(boxes, scores, top_k=7, cross_class=True)[0]) == 7


def test_degenerate_iou_is_zero_not_nan():
    boxes = torch.tensor([[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 1.0, 1.0],
                          [0.0, 0.0, 0.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    iou = nms_mod._pairwise_iou(boxes)
    assert torch.isfinite(iou).all()
    assert torch.equal(iou - torch.diag(torch.diag(iou)), torch.zeros(4, 4))
    assert iou[3, 3].item() == 1.0 and iou[0, 0].item() == 0.0
    # none of the degenerate boxes suppress anything
    idx, _, _ = fast_nms(boxes, torch.tensor([[0.9, 0.8, 0.7, 0.6]]), iou_threshold=0.0)
    assert idx.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("fn", [fast_nms, fast_nms_reference])
@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (3, 0)])
def test_empty_inputs(fn, shape):
    c, n = shape
    out = fn(torch.zeros(n, 4), torch.zeros(c, n))
    assert [len(t) for t in out] == [0, 0, 0]
    assert [t.dtype for t in out] == [torch.int64, torch.int64, torch.float32]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes(dtype):
    g = torch.Generator().manual_seed(1)
    boxes = make_boxes("clustered", 50, g).to(dtype)
    scores = torch.rand(4, 50, generator=g).to(dtype)
    ref = fast_nms_reference(boxes, scores)
    out = fast_nms(boxes, scores)
    assert_same(out, ref)
    assert out[2].dtype == dtype
    assert torch.equal(out[2], scores[out[1], out[0]])


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [fast_nms, fast_nms_reference])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_inf_scores_rejected(fn, bad):
    scores = torch.rand(2, 3)
    scores[1, 2] = bad
    with pytest.raises(ValueError, match=r"fast_nms: scores contain NaN/inf"):
        fn(torch.rand(3, 4), scores)


@pytest.mark.parametrize("fn", [fast_nms, fast_nms_reference])
def test_nan_boxes_rejected(fn):
    boxes = torch.rand(3, 4)
    boxes[0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"fast_nms: boxes contain NaN/inf"):
        fn(boxes, torch.rand(2, 3))


@pytest.mark.parametrize("fn", [fast_nms, fast_nms_reference])
@pytest.mark.parametrize("boxes, scores, message", [
    (torch.rand(3, 5), torch.rand(2, 3), r"boxes must have shape \[P, 4\], got \[3, 5\]"),
    (torch.rand(3, 4, 1), torch.rand(2, 3), r"boxes must have shape \[P, 4\]"),
    (torch.rand(3, 4), torch.rand(3), r"scores must have shape \[C, P\], got \[3\]"),
    (torch.rand(3, 4), torch.rand(2, 4), r"disagree on P"),
    (torch.rand(3, 4), torch.randint(0, 2, (2, 3)), r"must be floating point"),
    (torch.randint(0, 9, (3, 4)), torch.rand(2, 3), r"must be floating point"),
])
def test_bad_shapes_and_dtypes_rejected(fn, boxes, scores, message):
    with pytest.raises(ValueError, match=message):
        fn(boxes, scores)


@pytest.mark.parametrize("kwargs, message", [
    (dict(iou_threshold=-0.1), "iou_threshold must be >= 0"),
    (dict(iou_threshold=float("nan")), "iou_threshold must be >= 0"),
    (dict(top_k=0), "top_k must be an int >= 1"),
    (dict(top_k=2.5), "top_k must be an int >= 1"),
    (dict(max_detections=0), "max_detections must be an int >= 1"),
])
def test_bad_arguments_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fast_nms(torch.rand(3, 4), torch.rand(2, 3), **kwargs)


def test_not_tensors_rejected():
    with pytest.raises(TypeError, match="must be torch.Tensor"):
        fast_nms([[0, 0, 1, 1]], torch.rand(1, 1))


# --------------------------------------------------------------------------
# the compiled extension and the dispatcher
# --------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("yolact_lite._C") is None,
                    reason="yolact_lite._C was never built (no shared library found)")
def test_extension_is_built_and_importable():
    # a built but unimportable library fails here instead of being skipped
    assert extension_available(), f"yolact_lite._C failed to import: {nms_mod._C_IMPORT_ERROR}"


@needs_ext
def test_cpp_side_checks():
    C = nms_mod._C
    boxes, scores = torch.rand(3, 4), torch.rand(2, 3)
    with pytest.raises(RuntimeError, match="boxes must be float32"):
        C.fast_nms_cpu(boxes.double(), scores, 0.5, 10, 10, False)
    with pytest.raises(RuntimeError, match="scores must be contiguous"):
        C.fast_nms_cpu(boxes, torch.rand(3, 2).t(), 0.5, 10, 10, False)
    with pytest.raises(RuntimeError, match="disagree on P"):
        C.fast_nms_cpu(boxes, torch.rand(2, 4), 0.5, 10, 10, False)
    with pytest.raises(RuntimeError, match=r"boxes must have shape \[P, 4\]"):
        C.fast_nms_cpu(torch.rand(3, 3), scores, 0.5, 10, 10, False)
    with pytest.raises(RuntimeError, match="top_k must be >= 1"):
        C.fast_nms_cpu(boxes, scores, 0.5, 0, 10, False)
    with pytest.raises(RuntimeError, match="iou_threshold must be >= 0"):
        C.fast_nms_cpu(boxes, scores, -1.0, 10, 10, False)
    idx, cls, sc = C.fast_nms_cpu(boxes, scores, 0.5, 10, 10, False)
    assert idx.dtype == cls.dtype == torch.int64 and sc.dtype == torch.float32


def test_fallback_warns_once_and_matches(monkeypatch):
    monkeypatch.setattr(nms_mod, "_C", None)
    monkeypatch.setattr(nms_mod, "_warned_missing_extension", False)
    monkeypatch.delenv(nms_mod.FORCE_REFERENCE_ENV, raising=False)
    g = torch.Generator().manual_seed(3)
    boxes, scores = make_boxes("clustered", 40, g), torch.rand(3, 40, generator=g)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = fast_nms(boxes, scores)
        second = fast_nms(boxes, scores, cross_class=True)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "not built" in messages[0]
    assert "pip install --no-build-isolation -e ." in messages[0]
    assert_same(first, fast_nms_reference(boxes, scores))
    assert_same(second, fast_nms_reference(boxes, scores, cross_class=True))


def test_force_reference_env(monkeypatch):
    class Exploding:
        def __getattr__(self, name):
            raise AssertionError("extension used despite the force-reference variable")

    monkeypatch.setattr(nms_mod, "_C", Exploding())
    monkeypatch.setenv(nms_mod.FORCE_REFERENCE_ENV, "1")
    boxes, scores = chain_boxes(), torch.tensor([[0.9, 0.8, 0.7]])
    assert fast_nms(boxes, scores)[0].tolist() == [0]
    monkeypatch.setenv(nms_mod.FORCE_REFERENCE_ENV, "0")
    with pytest.raises(AssertionError, match="extension used"):
        fast_nms(boxes, scores)


# --------------------------------------------------------------------------
# traditional NMS
# --------------------------------------------------------------------------
def test_traditional_nms_thresholds_and_cap():
    g = torch.Generator().manual_seed(5)
    boxes, scores = make_boxes("clustered", 60, g), torch.rand(3, 60, generator=g)
    idx, cls, sc = traditional_nms(boxes, scores, candidate_threshold=0.3, max_detections=1000)
    assert (sc > 0.3).all() and torch.all(sc[:-1] >= sc[1:])
    assert torch.equal(sc, scores[cls, idx])
    for c in range(3):  # within a class, survivors overlap by at most the threshold
        b = boxes[idx[cls == c]]
        iou = torchvision.ops.box_iou(b, b).triu(diagonal=1)
        assert (iou <= 0.5).all()
    capped = traditional_nms(boxes, scores, candidate_threshold=0.3, max_detections=4)
    assert_same(capped, (idx[:4], cls[:4], sc[:4]))
    # Fast NMS never keeps more than traditional NMS on the same candidates
    t = traditional_nms(boxes, scores, candidate_threshold=-1.0, max_detections=1000, top_k=20)
    f = fast_nms(boxes, scores, top_k=20, max_detections=1000)
    assert len(f[0]) <= len(t[0])
    assert set(zip(f[0].tolist(), f[1].tolist())) <= set(zip(t[0].tolist(), t[1].tolist()))
