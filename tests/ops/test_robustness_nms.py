"""The compiled NMS extension's inputs, fuzzed: wrong shapes, dtypes and devices are
refused, never a crash.

The hypothesis tests are derandomized (the same examples every run) and small."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzzing import FUZZ
from yolact_lite.ops import nms as nms_mod

needs_ext = pytest.mark.skipif(not nms_mod.extension_available(), reason="yolact_lite._C not built")
_dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int32, torch.int64, torch.bool,
                           torch.uint8, torch.complex64])


@needs_ext
@settings(max_examples=80, **FUZZ)
@given(box_shape=st.lists(st.integers(0, 6), min_size=0, max_size=3),
       score_shape=st.lists(st.integers(0, 6), min_size=0, max_size=3),
       box_dtype=_dtypes, score_dtype=_dtypes, transpose=st.booleans(),
       thr=st.sampled_from([0.5, -1.0, math.nan, 0.0, 1e9]), top_k=st.integers(-2, 5),
       max_det=st.integers(-2, 5), cross=st.booleans())
def test_fuzz_extension_inputs(box_shape, score_shape, box_dtype, score_dtype, transpose, thr, top_k, max_det, cross):
    boxes = torch.rand(*box_shape).to(box_dtype) if box_shape else torch.tensor(1.0).to(box_dtype)
    scores = torch.rand(*score_shape).to(score_dtype) if score_shape else torch.tensor(1.0).to(score_dtype)
    if transpose and scores.dim() == 2:
        scores = scores.t().contiguous().t()  # same values, column-major: non-contiguous
    try:
        idx, cls, sc = nms_mod._C.fast_nms_cpu(boxes, scores, thr, top_k, max_det, cross)
    except RuntimeError as exc:
        assert str(exc).startswith("fast_nms_cpu:"), str(exc)
        return
    assert idx.dtype == cls.dtype == torch.int64 and sc.dtype == torch.float32
    assert len(idx) == len(cls) == len(sc) <= scores.shape[1]


@needs_ext
def test_extension_rejects_wrong_device_and_argument_types():
    boxes, scores = torch.rand(3, 4), torch.rand(2, 3)
    with pytest.raises(RuntimeError, match="fast_nms_cpu: tensors must be on CPU"):
        nms_mod._C.fast_nms_cpu(boxes.to("meta"), scores.to("meta"), 0.5, 10, 10, False)
    with pytest.raises(RuntimeError, match="same device"):
        nms_mod._C.fast_nms_cpu(boxes, scores.to("meta"), 0.5, 10, 10, False)
    with pytest.raises(RuntimeError, match="boxes must be contiguous"):
        nms_mod._C.fast_nms_cpu(torch.rand(4, 3).t(), scores, 0.5, 10, 10, False)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        nms_mod._C.fast_nms_cpu(boxes, scores, "0.5", 10, 10, False)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        nms_mod._C.fast_nms_cpu(boxes.numpy(), scores, 0.5, 10, 10, False)


def test_nan_inputs_are_refused_by_the_wrapper():
    with pytest.raises(ValueError, match="NaN"):
        nms_mod.fast_nms(torch.rand(5, 4), torch.full((2, 5), math.nan))
    # fed directly to the kernel, NaN must not crash the process: checked in the child process
    # of test_kill_during_a_checkpoint_write_keeps_the_previous_one


def test_public_fast_nms_accepts_non_contiguous_inputs():
    torch.manual_seed(1)
    xy = torch.rand(50, 2) * 50
    boxes = torch.cat([xy, xy + torch.rand(50, 2) * 20 + 1], 1)
    scores = torch.rand(3, 50)
    boxes_nc = boxes.t().contiguous().t()  # column-major: not contiguous
    scores_nc = scores.t().contiguous().t()
    assert not boxes_nc.is_contiguous() and not scores_nc.is_contiguous()
    for cross in (False, True):
        expected = nms_mod.fast_nms(boxes, scores, 0.5, 20, 30, cross)
        got = nms_mod.fast_nms(boxes_nc, scores_nc, 0.5, 20, 30, cross)
        assert all(torch.equal(a, b) for a, b in zip(expected, got))
    strided = nms_mod.fast_nms(torch.cat([boxes, boxes], 1)[:, :4], scores[:, ::1], 0.5, 20, 30)
    assert all(torch.equal(a, b) for a, b in zip(nms_mod.fast_nms(boxes, scores, 0.5, 20, 30), strided))
