"""Keeping some classes of a trained model: the kept class logits (and per-class semantic and
mask-IoU outputs) equal the full model's, channel for channel."""

from __future__ import annotations

import pytest
import torch

from yolact_lite import CheckpointError, build_model, load_config
from yolact_lite.checkpoint.files import carried_config, keep_classes, model_checkpoint
from yolact_lite.model.testing import small_overrides

NAMES = ["cat", "dog", "person", "car"]


def close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-4)


def _size(config_name: str) -> int:
    return 256 if config_name.startswith("yolact_plus") else 96  # the mask-IoU head needs >= 249


def _checkpoint(config_name: str):
    config = load_config(config_name, small_overrides(_size(config_name)) + [f"model.num_classes={len(NAMES)}"])
    torch.manual_seed(0)
    model = build_model(config, pretrained=False).eval()
    for p in model.parameters():  # random class logits: a slicing error cannot hide in zeros
        torch.nn.init.normal_(p, std=0.05) if p.dim() > 1 else torch.nn.init.normal_(p, std=0.5)
    return model, model_checkpoint(model, config.to_dict(), class_names=NAMES, category_ids=[17, 18, 1, 3])


@pytest.mark.parametrize("config_name", ["yolact_effl0", "yolact_plus_resnet50"])
def test_kept_classes_give_the_full_models_outputs(config_name):
    full, ckpt = _checkpoint(config_name)
    kept = keep_classes(ckpt, ["person", "cat"])
    assert kept["class_names"] == ["person", "cat"] and kept["category_ids"] == [1, 17]
    config = carried_config(kept)
    assert config.model.num_classes == 2
    small = build_model(config, pretrained=False).eval()
    small.load_state_dict(kept["model"])

    x = torch.randn(1, 3, _size(config_name), _size(config_name))
    with torch.no_grad():
        a, b = full(x), small(x)
        # a conv with fewer output channels may sum in another order: equal up to rounding
        close(b["class_logits"], a["class_logits"][..., [0, 3, 1]])
        assert torch.equal(b["coefficients"], a["coefficients"])
        assert torch.equal(b["box_deltas"], a["box_deltas"])
        if config.model.mask_iou_head:
            masks = torch.rand(2, 1, 69, 69)
            close(small.mask_iou_head(masks), full.mask_iou_head(masks)[:, [2, 0]])
    if config.model.semantic_head:
        full.train(), small.train()
        with torch.no_grad():
            sa, sb = full(x)["semantic_logits"], small(x)["semantic_logits"]
        close(sb, sa[:, [2, 0]])


def test_keep_classes_names_what_is_missing():
    _, ckpt = _checkpoint("yolact_effl0")
    with pytest.raises(CheckpointError, match="bicycle not in the checkpoint"):
        keep_classes(ckpt, ["person", "bicycle"])
    with pytest.raises(CheckpointError, match="names 0 classes"):
        keep_classes({**ckpt, "class_names": []}, ["person"])
