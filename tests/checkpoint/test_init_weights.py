"""--init-weights: an 80-class checkpoint (ours or the original's) initialises a model with
another class count; only the class-dependent layers are re-initialised."""

from __future__ import annotations

import math

import pytest
import torch

from tests.checkpoint.test_compat import manifest_state_dict
from yolact_lite import CheckpointError, build_model, load_config
from yolact_lite.checkpoint.files import model_checkpoint, save_atomic
from yolact_lite.checkpoint.init_weights import init_from_checkpoint
from yolact_lite.checkpoint.original import original_key_to_ours
from yolact_lite.model.testing import small_overrides

SMALL = small_overrides(96)
CLASS_KEYS = ("head.cls.", "semantic_head.", "mask_iou_head.classify.")


def _is_class_key(key: str) -> bool:
    return key.startswith(CLASS_KEYS)


def _assert_xavier_reinitialised(conv, source_weight):
    fan_in = conv.weight[0].numel()
    fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    w = conv.weight.detach()
    assert w.abs().max() <= bound
    assert w.std() > 0.4 * bound  # uniform on [-b, b] has std b / sqrt(3) = 0.58 b
    assert torch.count_nonzero(conv.bias) == 0
    assert w.shape != source_weight.shape


def _original_80_class(name):
    state = manifest_state_dict(name)
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 0.5
    return state


def test_original_80_class_checkpoint_initialises_a_1_class_model(tmp_path):
    state = _original_80_class("yolact_resnet50")
    path = tmp_path / "yolact_resnet50_54_800000.pth"
    torch.save(state, path)
    torch.manual_seed(0)
    model = build_model(load_config("yolact_resnet50", ["model.num_classes=1"]), pretrained=False)
    model.head.cls.bias.data.fill_(3.0)  # must be reset, not left as it was
    report = init_from_checkpoint(model, path)

    ours = model.state_dict()
    mapped = {original_key_to_ours(k, "resnet50"): v for k, v in state.items()}
    assert set(mapped) == set(ours)
    for key, value in mapped.items():
        if not _is_class_key(key):
            assert torch.equal(ours[key], value), key
    _assert_xavier_reinitialised(model.head.cls, mapped["head.cls.weight"])
    _assert_xavier_reinitialised(model.semantic_head, mapped["semantic_head.weight"])
    assert model.head.cls.weight.shape == (3 * 2, 256, 3, 3)  # 3 anchors x (1 class + background)

    assert report.source_format == "original YOLACT checkpoint"
    assert (report.source_classes, report.model_classes) == (80, 1)
    assert report.reinitialised == ["head.cls", "semantic_head"]
    assert sorted(report.loaded) == sorted(k for k in ours if not _is_class_key(k))
    text = str(report)
    assert f"{len(ours) - 4} of {len(ours)} tensors loaded" in text
    assert "re-initialised: head.cls (class count 80 -> 1): weight 243x256x3x3 -> 6x256x3x3, bias 243 -> 6" in text
    assert "re-initialised: semantic_head (class count 80 -> 1): weight 80x256x1x1 -> 1x256x1x1" in text


def test_yolact_plus_mask_iou_classifier_is_reinitialised_and_its_convs_load():
    state = _original_80_class("yolact_plus_resnet50")
    model = build_model(load_config("yolact_plus_resnet50", ["model.num_classes=2"]), pretrained=False)
    report = init_from_checkpoint(model, state)
    assert report.reinitialised == ["head.cls", "semantic_head", "mask_iou_head.classify"]
    mapped = {original_key_to_ours(k, "resnet50"): v for k, v in state.items()}
    assert torch.equal(model.mask_iou_head.convs[4].weight, mapped["mask_iou_head.convs.4.weight"])
    assert torch.equal(model.backbone.layer4[0].conv2.offset_mask.weight,
                       mapped["backbone.layer4.0.conv2.offset_mask.weight"])
    _assert_xavier_reinitialised(model.mask_iou_head.classify, mapped["mask_iou_head.classify.weight"])
    assert "class count 80 -> 2" in str(report)


def test_a_mismatch_outside_the_class_layers_names_the_key_and_changes_nothing():
    state = _original_80_class("yolact_resnet50")
    state["fpn.lat_layers.0.weight"] = torch.zeros(256, 1024, 1, 1)  # acts on C5 (2048 channels)
    model = build_model(load_config("yolact_resnet50", ["model.num_classes=1"]), pretrained=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"1 mis-shaped: fpn\.lateral\.2\.weight \(256, 1024, 1, 1\) vs "
                                              r"\(256, 2048, 1, 1\)"):
        init_from_checkpoint(model, state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key

    del state["fpn.lat_layers.0.weight"]
    state["backbone.layers.0.0.conv1.weight"] = state.pop("backbone.layers.0.0.conv1.weight")[:0]
    with pytest.raises(CheckpointError, match=r"missing: fpn\.lateral\.2\.weight; 1 mis-shaped: "
                                              r"backbone\.layer1\.0\.conv1\.weight"):
        init_from_checkpoint(model, state)


def test_another_backbone_is_an_error():
    state = _original_80_class("yolact_base")  # ResNet-101
    model = build_model(load_config("yolact_resnet50", ["model.num_classes=1"]), pretrained=False)
    with pytest.raises(CheckpointError, match=r"unexpected: backbone\.layer3\.10\."):
        init_from_checkpoint(model, state)


def _our_checkpoint(num_classes, overrides=()):
    config = load_config("yolact_effl0", [f"model.num_classes={num_classes}", *SMALL, *overrides])
    torch.manual_seed(1)
    model = build_model(config, pretrained=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # differs from a fresh model's initialisation everywhere
    return model, model_checkpoint(model, config.to_dict(), step=7)


@pytest.mark.parametrize("frozen_stages", [0, 3])
def test_our_checkpoint_initialises_a_model_with_other_classes(tmp_path, frozen_stages):
    source, checkpoint = _our_checkpoint(80)
    path = tmp_path / "last.pt"
    save_atomic(checkpoint, path)
    model = build_model(load_config("yolact_effl0", ["model.num_classes=3", *SMALL,
                                                     f"model.backbone.frozen_stages={frozen_stages}"]),
                        pretrained=False)
    report = init_from_checkpoint(model, path)
    assert report.source_format == "yolact_lite checkpoint"
    assert report.reinitialised == ["head.cls", "semantic_head"]
    assert "class count 80 -> 3" in str(report)
    expected = source.state_dict()
    for key, value in model.state_dict().items():
        if not _is_class_key(key):
            assert torch.equal(value, expected[key]), key
    _assert_xavier_reinitialised(model.head.cls, expected["head.cls.weight"])
    assert all(not p.requires_grad for p in model.backbone.stem.parameters()) == (frozen_stages != 0)


def test_same_class_count_loads_everything():
    source, checkpoint = _our_checkpoint(5)
    model = build_model(load_config("yolact_effl0", ["model.num_classes=5", *SMALL]), pretrained=False)
    report = init_from_checkpoint(model, checkpoint)
    assert report.skipped == [] and len(report.loaded) == len(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_checkpoint_without_the_semantic_head_and_model_without_it():
    # The checkpoint lacks a class-dependent layer the model has: re-initialised, said so.
    _, checkpoint = _our_checkpoint(80, ["model.semantic_head=false"])
    model = build_model(load_config("yolact_effl0", ["model.num_classes=1", *SMALL]), pretrained=False)
    report = init_from_checkpoint(model, checkpoint)
    assert ("re-initialised: semantic_head (not in the checkpoint): weight absent -> 1x128x1x1, "
            "bias absent -> 1") in str(report)
    # The model lacks one the checkpoint has: ignored, said so.
    _, checkpoint = _our_checkpoint(80)
    model = build_model(load_config("yolact_effl0", ["model.num_classes=1", "model.semantic_head=false", *SMALL]),
                        pretrained=False)
    report = init_from_checkpoint(model, checkpoint)
    assert report.reinitialised == ["head.cls"]
    assert "not in this model, ignored: semantic_head (this model has no such layer)" in str(report)


def test_unrecognised_and_unreadable_sources(tmp_path):
    model = build_model(load_config("yolact_effl0", ["model.num_classes=1", *SMALL]), pretrained=False)
    with pytest.raises(CheckpointError, match="neither a yolact_lite checkpoint nor an original"):
        init_from_checkpoint(model, {"weights": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="not found"):
        init_from_checkpoint(model, tmp_path / "missing.pt")
