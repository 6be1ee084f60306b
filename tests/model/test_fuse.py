"""BatchNorm folding: the fused copy computes what the eval-mode model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolact_lite import build_model, load_config
from yolact_lite.model.backbones import ModulatedDeformConv3x3
from yolact_lite.model.fuse import count_batchnorms, fold_bn_into_conv, fuse_for_inference
from yolact_lite.model.testing import randomise_batchnorms, small_overrides

SMALL = small_overrides(96)


def _randomise_statistics(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics/affine and active deformable offsets."""
    randomise_batchnorms(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ModulatedDeformConv3x3):
                m.offset_mask.weight.copy_(torch.randn(m.offset_mask.weight.shape, generator=g) * 0.01)
                m.offset_mask.bias.copy_(torch.randn(27, generator=g) * 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.mark.parametrize("name,overrides", [
    ("yolact_resnet50", SMALL),
    ("yolact_effl0", SMALL),
    ("yolact_darknet53", SMALL),
    # DCN blocks at 96 px; the mask-IoU head (no BN to fold) needs an input >= 249
    ("yolact_plus_resnet50", ["model.input_size=96", "model.mask_iou_head=false"]),
])
def test_fused_outputs_match(name, overrides):
    torch.manual_seed(0)
    model = build_model(load_config(name, overrides), pretrained=False).eval()
    _randomise_statistics(model)
    fused = fuse_for_inference(model)
    assert count_batchnorms(fused) == 0
    assert count_batchnorms(model) > 0  # the original is untouched
    assert not fused.training
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    with torch.inference_mode():
        out = fused(x.contiguous(memory_format=torch.channels_last))
        out_plain_layout = fused(x)
    for key in ("box_deltas", "class_logits", "coefficients", "prototypes", "priors"):
        scale = ref[key].abs().max().clamp(min=1e-6)
        assert ((out[key] - ref[key]).abs().max() / scale) < 1e-4, key
        assert ((out_plain_layout[key] - ref[key]).abs().max() / scale) < 1e-4, key
    if model.mask_iou_head is not None:
        masks = torch.rand(3, 1, 64, 64)
        with torch.no_grad():
            assert torch.allclose(fused.mask_iou_head(masks), model.mask_iou_head(masks), atol=1e-5)


def test_fold_single_pair_with_bias():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    bn = nn.BatchNorm2d(6, eps=1e-3)
    _randomise_statistics(nn.Sequential(conv, bn))
    x = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        ref = bn.eval()(conv(x))
        fold_bn_into_conv(conv, bn)
        assert torch.allclose(conv(x), ref, atol=1e-5)


def test_fold_rejects_mismatched_channels():
    with pytest.raises(ValueError, match=r"cannot fold BatchNorm2d\(5\) into a conv with 4 outputs"):
        fold_bn_into_conv(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(5))
