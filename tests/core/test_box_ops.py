import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from yolact_lite.box_ops import (
    box_area,
    box_intersection,
    box_ioa,
    box_iou,
    center_size,
    decode,
    encode,
    point_form,
)

_coord = st.floats(0.0, 1.0, allow_nan=False)
_size = st.floats(0.01, 1.0, allow_nan=False)


def _boxes(rows):
    """list of (cx, cy, w, h) -> [N, 4] float64 cxcywh"""
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_coord, _coord, _size, _size, _coord, _coord, _size, _size), min_size=1, max_size=6))
def test_encode_decode_round_trip(rows):
    gt = point_form(_boxes([r[:4] for r in rows]))
    priors = _boxes([r[4:] for r in rows])
    deltas = encode(gt, priors)
    assert torch.isfinite(deltas).all()
    torch.testing.assert_close(decode(deltas, priors), gt, atol=1e-9, rtol=1e-9)
    # and the other way round
    torch.testing.assert_close(encode(decode(deltas, priors), priors), deltas, atol=1e-7, rtol=1e-7)


def test_encode_matches_the_ssd_formula():
    prior = torch.tensor([[0.25, 0.25, 0.5, 0.5]])
    gt = torch.tensor([[0.05, 0.0, 0.5, 0.45]])  # centre (0.275, 0.225), size 0.45 x 0.45
    expected = torch.tensor(
        [[0.025 / (0.1 * 0.5), -0.025 / (0.1 * 0.5), math.log(0.9) / 0.2, math.log(0.9) / 0.2]]
    )
    torch.testing.assert_close(encode(gt, prior, (0.1, 0.2)), expected)
    # other variances scale the targets
    torch.testing.assert_close(encode(gt, prior, (0.2, 0.4)), expected / 2)


def test_decode_is_batched_and_unclipped():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.9, 0.1, 0.4, 0.4]])
    deltas = torch.randn(3, 2, 4) * 3
    out = decode(deltas, priors)
    assert out.shape == (3, 2, 4)
    for b in range(3):
        torch.testing.assert_close(out[b], decode(deltas[b], priors))
    cx = 0.9 + 10 * 0.1 * 0.4
    w = 0.4 * math.exp(5 * 0.2)
    big = decode(torch.tensor([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 5.0, 0.0]]), priors)
    torch.testing.assert_close(big[1], torch.tensor([cx - w / 2, 0.1 - 0.2, cx + w / 2, 0.1 + 0.2]))
    assert big[1, 2] > 1.0  # not clipped to the image
    torch.testing.assert_close(big[0], torch.tensor([0.4, 0.3, 0.6, 0.7]))


def test_point_form_and_center_size_are_inverse():
    cxcywh = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.3, 0.05]])
    xyxy = point_form(cxcywh)
    torch.testing.assert_close(xyxy[0], torch.tensor([0.4, 0.3, 0.6, 0.7]))
    torch.testing.assert_close(center_size(xyxy), cxcywh)


def test_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    expected = torch.tensor([[1 / 7, 1.0, 0.0], [0.0, 1 / 4, 0.0]])
    torch.testing.assert_close(box_iou(a, b), expected)
    torch.testing.assert_close(box_intersection(a, b), torch.tensor([[1.0, 4.0, 0.0], [0.0, 1.0, 0.0]]))
    # intersection over the first box's area (crowd measure)
    torch.testing.assert_close(box_ioa(a, b), torch.tensor([[0.25, 1.0, 0.0], [0.0, 1.0, 0.0]]))


def test_iou_matches_torchvision_on_valid_boxes():
    from torchvision.ops import box_iou as tv_box_iou

    gen = torch.Generator().manual_seed(0)
    a = point_form(torch.cat([torch.rand(40, 2, generator=gen), torch.rand(40, 2, generator=gen) * 0.5 + 0.01], 1))
    b = point_form(torch.cat([torch.rand(30, 2, generator=gen), torch.rand(30, 2, generator=gen) * 0.5 + 0.01], 1))
    torch.testing.assert_close(box_iou(a, b), tv_box_iou(a, b))
    # batched form
    batched = box_iou(torch.stack([a[:10], a[10:20]]), torch.stack([b[:5], b[5:10]]))
    torch.testing.assert_close(batched[1], tv_box_iou(a[10:20], b[5:10]))


def test_degenerate_boxes_give_zero_not_nan():
    point = torch.tensor([[0.3, 0.3, 0.3, 0.3]])
    line = torch.tensor([[0.1, 0.2, 0.5, 0.2]])
    inverted = torch.tensor([[0.6, 0.6, 0.2, 0.2]])
    normal = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    for a in (point, line, inverted):
        for b in (point, line, inverted, normal):
            iou = box_iou(a, b)
            assert torch.isfinite(iou).all()
            assert iou.item() == 0.0
        assert box_ioa(a, normal).item() == 0.0
    assert box_area(inverted).item() == 0.0
    # a degenerate gt still encodes to finite targets
    assert torch.isfinite(encode(point, torch.tensor([[0.3, 0.3, 0.1, 0.1]]))).all()
