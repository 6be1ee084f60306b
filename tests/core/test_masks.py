import math

import pytest
import torch

from yolact_lite.masks import assemble_mask_logits, assemble_masks, crop_masks, crop_region, prototype_activity


def test_assemble_equals_explicit_loop():
    gen = torch.Generator().manual_seed(1)
    protos = torch.relu(torch.randn(5, 7, 3, generator=gen))
    coeffs = torch.tanh(torch.randn(4, 3, generator=gen))
    logits = assemble_mask_logits(protos, coeffs)
    masks = assemble_masks(protos, coeffs)
    assert logits.shape == masks.shape == (4, 5, 7)
    for n in range(4):
        for y in range(5):
            for x in range(7):
                value = sum(float(protos[y, x, j]) * float(coeffs[n, j]) for j in range(3))
                assert logits[n, y, x].item() == pytest.approx(value, abs=1e-5)
                assert masks[n, y, x].item() == pytest.approx(1 / (1 + math.exp(-value)), abs=1e-6)


def _brute_force_region(box, height, width, pad):
    x1, x2 = sorted((float(box[0]), float(box[2])))
    y1, y2 = sorted((float(box[1]), float(box[3])))
    left, right = max(x1 * width - pad, 0.0), min(x2 * width + pad, float(width))
    top, bottom = max(y1 * height - pad, 0.0), min(y2 * height + pad, float(height))
    out = torch.zeros(height, width, dtype=torch.bool)
    for r in range(height):
        for c in range(width):
            out[r, c] = (left <= c < right) and (top <= r < bottom)
    return out


@pytest.mark.parametrize("pad", [0.0, 1.0, 2.5])
def test_crop_region_matches_the_rule(pad):
    boxes = torch.tensor(
        [
            [0.1, 0.2, 0.5, 0.6],  # fractional bounds
            [0.25, 0.25, 0.75, 0.75],  # bounds landing exactly on pixel edges
            [-0.3, -0.1, 0.2, 1.4],  # beyond the map: clamped
            [0.6, 0.7, 0.3, 0.2],  # swapped corners
            [0.5, 0.5, 0.5, 0.5],  # zero area: only the padding survives
            [0.9, 0.0, 1.0, 0.05],
        ]
    )
    height, width = 9, 12
    region = crop_region(boxes, height, width, pad)
    assert region.dtype == torch.bool and region.shape == (6, height, width)
    for n in range(boxes.shape[0]):
        assert torch.equal(region[n], _brute_force_region(boxes[n], height, width, pad)), n


def test_crop_region_random_boxes_against_brute_force():
    gen = torch.Generator().manual_seed(3)
    boxes = torch.rand(25, 4, generator=gen) * 1.4 - 0.2
    region = crop_region(boxes, 6, 5, 1.0)
    for n in range(25):
        assert torch.equal(region[n], _brute_force_region(boxes[n], 6, 5, 1.0))


def test_crop_region_hand_case():
    # x1*4-1 = -0.6 -> col 0; x2*4+1 = 3.0 -> cols < 3; rows: 0.4*4-1=0.6 -> rows >= 1, 0.45*4+1=2.8
    region = crop_region(torch.tensor([[0.1, 0.4, 0.5, 0.45]]), 4, 4, 1.0)[0]
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 0:3] = True
    assert torch.equal(region, expected)


def test_crop_masks_multiplies_by_region_and_keeps_gradient():
    masks = torch.rand(2, 6, 6, requires_grad=True)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.2, 0.3, 0.9, 1.0]])
    out = crop_masks(masks, boxes, 0.0)
    region = crop_region(boxes, 6, 6, 0.0)
    torch.testing.assert_close(out, masks * region)
    assert (out[~region] == 0).all()
    out.sum().backward()
    torch.testing.assert_close(masks.grad, region.float())


def test_prototype_activity_counts_pixels_above_zero_per_prototype():
    prototypes = torch.zeros(2, 4, 5, 3)  # [B, Hp, Wp, k]
    prototypes[0, 0, :, 0] = 1.0  # 5 of 40 pixels
    prototypes[1, :, :, 1] = 0.5  # 20 of 40
    prototypes[..., 2] = -1.0  # below zero counts as dead too (outputs before a ReLU)
    torch.testing.assert_close(prototype_activity(prototypes), torch.tensor([5 / 40, 20 / 40, 0.0]))
