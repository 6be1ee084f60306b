import math

import pytest
import torch

from yolact_lite import build_model, load_config
from yolact_lite.model import count_parameters, make_priors
from yolact_lite.model.backbones import deformable_blocks

PARAMS = {
    "yolact_base": 50_157_071,
    "yolact_resnet50": 31_164_943,
    "yolact_darknet53": 47_783_087,
    "yolact_im400": 50_157_071,
    "yolact_im700": 50_157_071,
    "yolact_plus_base": 52_571_142,
    "yolact_plus_resnet50": 33_766_460,
}


def _level_sizes(size):
    # Conv arithmetic of the ResNet trunk: stride-2 convs with padding (k-1)/2.
    s = size
    s = (s + 6 - 7) // 2 + 1  # conv1
    s = (s + 2 - 3) // 2 + 1  # maxpool -> C2
    sizes = []
    for _ in range(3):
        s = (s + 2 - 3) // 2 + 1
        sizes.append(s)
    for _ in range(2):
        s = (s + 2 - 3) // 2 + 1
        sizes.append(s)
    return [(x, x) for x in sizes[:]]


@pytest.mark.parametrize("name, expected", list(PARAMS.items()))
def test_parameter_counts(name, expected):
    model = build_model(load_config(name), pretrained=False)
    assert count_parameters(model) == expected


def test_head_breakdown_matches_original():
    model = build_model(load_config("yolact_base"), pretrained=False)
    head = model.head
    assert count_parameters(head.shared_conv) == 590_080
    assert count_parameters(head.box) == 27_660
    assert count_parameters(head.cls) == 560_115
    assert count_parameters(head.coef) == 221_280
    assert count_parameters(model.semantic_head) == 20_560


def test_dcn_placement_rule():
    assert [i for i, f in enumerate(deformable_blocks(4, 4, 3)) if f] == [0, 3]
    assert [i for i, f in enumerate(deformable_blocks(23, 23, 3)) if f] == list(range(0, 23, 3))
    assert [i for i, f in enumerate(deformable_blocks(3, 3, 3)) if f] == [0]
    assert not any(deformable_blocks(3, 0, 1))
    model = build_model(load_config("yolact_plus_base"), pretrained=False)
    n_dcn = sum(1 for name, _ in model.named_modules() if name.endswith("conv2.offset_mask"))
    assert n_dcn == 11


@pytest.mark.parametrize(
    "name, size, total",
    [("yolact_base", 550, 19_248), ("yolact_im400", 400, 10_077), ("yolact_im700", 700, 30_963),
     ("yolact_plus_base", 550, 57_744)],
)
def test_prior_counts(name, size, total):
    a = load_config(name).model.anchors
    priors = make_priors(_level_sizes(size), size, a.scales, a.aspect_ratios, a.square_anchors)
    assert priors.shape == (total, 4)


def test_first_priors_v1_are_squares():
    a = load_config("yolact_base").model.anchors
    priors = make_priors(_level_sizes(550), 550, a.scales, a.aspect_ratios, a.square_anchors)
    c = 0.5 / 69
    expected = torch.tensor([
        [c, c, 24 / 550, 24 / 550],
        [c, c, 24 * math.sqrt(0.5) / 550, 24 * math.sqrt(0.5) / 550],
        [c, c, 24 * math.sqrt(2) / 550, 24 * math.sqrt(2) / 550],
        [1.5 / 69, c, 24 / 550, 24 / 550],  # next column, same row: row-major order
    ])
    torch.testing.assert_close(priors[:4], expected)
    assert priors[2, 2].item() == pytest.approx(0.06171, abs=1e-5)
    # The first prior of P4 comes after all 69*69*3 of P3.
    assert priors[69 * 69 * 3, 2].item() == pytest.approx(48 / 550)
    assert priors[69 * 69 * 3, 0].item() == pytest.approx(0.5 / 35)


def test_first_priors_plus_are_rectangles_scale_major():
    a = load_config("yolact_plus_base").model.anchors
    priors = make_priors(_level_sizes(550), 550, a.scales, a.aspect_ratios, a.square_anchors)
    r = math.sqrt(0.5)
    torch.testing.assert_close(priors[0, 2:], torch.tensor([24 / 550, 24 / 550]))
    torch.testing.assert_close(priors[1, 2:], torch.tensor([24 * r / 550, 24 / r / 550]))
    torch.testing.assert_close(priors[2, 2:], torch.tensor([24 / r / 550, 24 * r / 550]))
    s1 = 24 * 2 ** (1 / 3)  # second scale comes after all three ratios of the first
    torch.testing.assert_close(priors[3, 2:], torch.tensor([s1 / 550, s1 / 550]))


def test_forward_shapes_at_550_and_priors_match_levels():
    model = build_model(load_config("yolact_resnet50"), pretrained=False).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 550, 550))
    assert out["box_deltas"].shape == (2, 19_248, 4)
    assert out["class_logits"].shape == (2, 19_248, 81)
    assert out["coefficients"].shape == (2, 19_248, 32)
    assert out["prototypes"].shape == (2, 138, 138, 32)
    assert out["priors"].shape == (19_248, 4)
    assert "semantic_logits" not in out
    assert out["coefficients"].abs().max() <= 1.0  # tanh
    assert out["prototypes"].min() >= 0.0  # ReLU


def test_training_mode_adds_semantic_logits_and_gradients_flow():
    config = load_config("yolact_effl0", ["model.num_classes=3", "model.input_size=256",
                                          "model.anchors.scales=[[11], [22], [44], [89], [178]]"])
    model = build_model(config, pretrained=False).train()
    out = model(torch.randn(2, 3, 256, 256))
    assert out["semantic_logits"].shape == (2, 3, 32, 32)
    loss = sum(v.float().square().mean() for k, v in out.items() if k != "priors")
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_head_is_shared_and_anchor_major():
    # A one-level slice: channel a*4+j of the box conv must land at prior a, coordinate j.
    model = build_model(load_config("yolact_resnet50", ["model.num_classes=2"]), pretrained=False).eval()
    head = model.head
    x = torch.randn(1, 256, 2, 3)
    with torch.no_grad():
        boxes, logits, coefs = head([x])
        raw = head.box(torch.relu(head.shared_conv(x)))  # [1, 12, 2, 3]
    # position (row 1, col 2) = index 5, anchor 2 -> prior 5*3+2
    torch.testing.assert_close(boxes[0, 5 * 3 + 2], raw[0, 8:12, 1, 2])
    assert logits.shape == (1, 18, 3) and coefs.shape == (1, 18, 32)


def test_mask_iou_head_shape():
    model = build_model(load_config("yolact_plus_resnet50"), pretrained=False)
    out = model.mask_iou_head(torch.rand(4, 1, 138, 138))
    assert out.shape == (4, 80) and (out >= 0).all()


@pytest.mark.parametrize("config_name, size", [("yolact_effl0_finetune", 249), ("yolact_plus_resnet50", 250)])
def test_config_check_of_the_mask_iou_head_matches_the_model(config_name, size):
    """The config check's prototype side is the model's, and its smallest mask is the head's."""
    from yolact_lite.config.validation import MASK_IOU_MIN_SIDE, prototype_side

    config = load_config(config_name, ["model.mask_iou_head=true", f"model.input_size={size}"])
    model = build_model(config, pretrained=False).train()
    out = model(torch.zeros(1, 3, size, size))
    assert out["prototypes"].shape[1:3] == (prototype_side(config.model),) * 2
    assert model.mask_iou_head(torch.rand(2, 1, MASK_IOU_MIN_SIDE, MASK_IOU_MIN_SIDE)).shape[0] == 2
    with pytest.raises(RuntimeError):
        model.mask_iou_head(torch.rand(2, 1, MASK_IOU_MIN_SIDE - 1, MASK_IOU_MIN_SIDE - 1))


@pytest.mark.parametrize("backbone", ["resnet50", "darknet53", "efficientnet_lite0"])
def test_p2_level_and_finer_prototypes(backbone):
    overrides = [f"model.backbone.name={backbone}", "model.input_size=256", "model.num_classes=3",
                 "model.fpn.min_level=2", "model.proto_level=2",
                 "model.anchors.scales=[[6], [11], [22], [44], [89], [178]]"]
    if backbone == "darknet53":
        overrides += ["model.pixel_mean=[0, 0, 0]", "model.pixel_std=[255, 255, 255]"]
    model = build_model(load_config("yolact_base", overrides), pretrained=False).train()
    out = model(torch.zeros(1, 3, 256, 256))
    # Levels P2..P7 at 256: 64, 32, 16, 8, 4, 2 -> 3 anchors each.
    assert out["priors"].shape[0] == 3 * (64 ** 2 + 32 ** 2 + 16 ** 2 + 8 ** 2 + 4 ** 2 + 2 ** 2)
    assert out["prototypes"].shape == (1, 128, 128, 32)  # 2 x P2
    assert out["semantic_logits"].shape == (1, 3, 64, 64)
    assert out["priors"][0, 2].item() == pytest.approx(6 / 256)


def test_p2_config_is_validated():
    from yolact_lite import ConfigError

    with pytest.raises(ConfigError, match="one list per level \\(6\\)"):
        load_config("yolact_base", ["model.fpn.min_level=2"])
    with pytest.raises(ConfigError, match="proto_level"):
        load_config("yolact_base", ["model.proto_level=2"])
