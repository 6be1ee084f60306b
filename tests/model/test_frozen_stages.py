"""Frozen backbone stages (model.backbone.frozen_stages): what is frozen, that it stays frozen
in train mode, gets no gradient, and leaves checkpoints, BN folding and the Predictor working."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from yolact_lite import ConfigError, build_model, load_config
from yolact_lite.checkpoint.files import model_checkpoint
from yolact_lite.model.backbones import build_backbone
from yolact_lite.model.freeze import FrozenBatchNorm2d, freeze_backbone_stages
from yolact_lite.model.fuse import count_batchnorms, fuse_for_inference
from yolact_lite.model.testing import randomise_batchnorms, small_overrides

BACKBONES = ["resnet50", "darknet53", "efficientnet_lite0"]
CONFIGS = {"resnet50": "yolact_resnet50", "darknet53": "yolact_darknet53", "efficientnet_lite0": "yolact_effl0"}
VALUES = [0, 1, 2, 3, 4, 5, -1]
SMALL = small_overrides(96)


def _backbone(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    backbone = build_backbone(name)
    randomise_batchnorms(backbone, seed)
    return backbone


def _frozen_prefixes(backbone: nn.Module, value: int) -> list:
    stages = backbone.stage_names()
    count = len(stages) if value == -1 else value
    return [name for stage in stages[:count] for name in stage]


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _images(size: int = 64, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", BACKBONES)
def test_stage_table_partitions_the_backbone_and_ends_at_each_output(name):
    backbone = _backbone(name).eval()
    stages = backbone.stage_names()
    assert len(stages) == 5
    prefixes = [p for stage in stages for p in stage]
    # Every parameter and buffer lies in exactly one stage.
    for key in backbone.state_dict():
        assert sum(_under(key, [p]) for p in prefixes) == 1, key
    # The last module of stage i (i >= 1) produces pyramid output C(i+1).
    seen = {}
    for i, stage in enumerate(stages[1:]):
        backbone.get_submodule(stage[-1]).register_forward_hook(
            lambda _m, _inp, out, i=i: seen.__setitem__(i, out.detach().clone()))
    with torch.no_grad():
        outputs = backbone(_images())
    for i, output in enumerate(outputs):
        assert torch.equal(seen[i], output), f"stage {i + 1} does not end at C{i + 2}"


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("value", VALUES)
def test_requires_grad_and_frozen_batchnorms(name, value):
    model = build_model(load_config(CONFIGS[name], [f"model.backbone.frozen_stages={value}"] + SMALL),
                        pretrained=False)
    prefixes = _frozen_prefixes(model.backbone, value)
    assert model.frozen_backbone_modules == prefixes
    for key, p in model.named_parameters():
        frozen = key.startswith("backbone.") and _under(key[len("backbone."):], prefixes)
        assert p.requires_grad != frozen, key
    if value == -1:
        assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.fpn.parameters())
    for key, m in model.backbone.named_modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            assert isinstance(m, FrozenBatchNorm2d) == _under(key, prefixes), key
    if name == "efficientnet_lite0" and value != 0:
        assert model.backbone.stem[1].eps == 1e-3  # each BN keeps its own eps


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("value", [1, 2, 3, -1])
def test_train_mode_uses_eval_statistics_only_in_the_frozen_prefix(name, value):
    reference = _backbone(name)
    frozen = copy.deepcopy(reference)
    prefixes = freeze_backbone_stages(frozen, value)
    # Reference: ordinary BNs, the frozen prefix put in eval mode by hand, the rest training.
    reference.train()
    for prefix in prefixes:
        reference.get_submodule(prefix).eval()
    frozen.train()
    x = _images()
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    with torch.no_grad():
        expected = reference(x)
        got = frozen(x)
    for c, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"C{c + 2}")
    after = frozen.state_dict()
    for key, value_before in before.items():
        changed = not torch.equal(after[key], value_before)
        if _under(key, prefixes):
            assert not changed, f"frozen {key} changed in train mode"
        elif key.endswith(("running_mean", "num_batches_tracked")):
            assert changed, f"trainable {key} did not update"
    # The frozen prefix's output is exactly what the eval-mode unfrozen network computes.
    if value in (2, 3):
        with torch.no_grad():
            eval_outputs = _backbone(name).eval()(x)
        torch.testing.assert_close(got[value - 2], eval_outputs[value - 2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("value", [2, -1])
def test_backward_skips_the_frozen_prefix(name, value):
    model = build_model(load_config(CONFIGS[name], [f"model.backbone.frozen_stages={value}"] + SMALL),
                        pretrained=False).train()
    prefixes = model.frozen_backbone_modules
    last_frozen = model.backbone.get_submodule(prefixes[-1])
    records = []
    last_frozen.register_forward_hook(lambda _m, _i, out: records.append(out.requires_grad))
    out = model(_images(96))
    assert records == [False]  # autograd recorded nothing up to here: no backward through it
    loss = sum(v.float().square().mean() for k, v in out.items() if k != "priors")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # even over all params
    loss.backward()
    optimizer.step()
    for key, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, key
            assert p not in optimizer.state or not optimizer.state[p], key
    trainable = [p for p in model.backbone.parameters() if p.requires_grad]
    assert (len(trainable) == 0) == (value == -1)
    assert all(p.grad is not None for p in trainable)
    assert model.fpn.output[0].weight.grad is not None


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("value", [2, -1])
def test_state_dict_unchanged_and_strict_loading_both_ways(name, value):
    plain = _backbone(name)
    frozen = copy.deepcopy(plain)
    freeze_backbone_stages(frozen, value)
    a, b = plain.state_dict(), frozen.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    # A checkpoint of an unfrozen model loads strictly into a frozen one, and back.
    other_frozen = build_backbone(name)
    freeze_backbone_stages(other_frozen, value)
    other_frozen.load_state_dict(a, strict=True)
    for key, v in other_frozen.state_dict().items():
        assert torch.equal(v, a[key]), key
    other_plain = build_backbone(name)
    other_plain.load_state_dict(b, strict=True)
    for key, v in other_plain.state_dict().items():
        assert torch.equal(v, b[key]), key


def test_whole_model_checkpoints_load_across_frozen_settings():
    free = build_model(load_config("yolact_effl0", SMALL), pretrained=False)
    frozen = build_model(load_config("yolact_effl0", ["model.backbone.frozen_stages=-1"] + SMALL), pretrained=False)
    frozen.load_state_dict(free.state_dict(), strict=True)
    free.load_state_dict(frozen.state_dict(), strict=True)
    assert list(free.state_dict()) == list(frozen.state_dict())


def test_frozen_batchnorm_is_eval_batchnorm_with_its_own_eps():
    bn = nn.BatchNorm2d(6, eps=1e-3)
    randomise_batchnorms(bn)
    frozen = FrozenBatchNorm2d.from_batchnorm(bn)
    assert frozen.eps == 1e-3 and not list(frozen.parameters())
    x = torch.randn(3, 6, 5, 4)
    # Independent formula, not F.batch_norm.
    scale = bn.weight / torch.sqrt(bn.running_var + 1e-3)
    expected = (x - bn.running_mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    frozen.train()
    torch.testing.assert_close(frozen(x), expected.detach(), rtol=1e-5, atol=1e-6)
    assert torch.equal(frozen.running_mean, bn.running_mean)
    with pytest.raises(ValueError, match="affine"):
        FrozenBatchNorm2d.from_batchnorm(nn.BatchNorm2d(4, affine=False))


@pytest.mark.parametrize("name", ["yolact_resnet50", "yolact_effl0", "yolact_darknet53"])
def test_bn_folding_works_on_a_frozen_model(name):
    torch.manual_seed(0)
    model = build_model(load_config(name, SMALL), pretrained=False)
    randomise_batchnorms(model)
    frozen = build_model(load_config(name, ["model.backbone.frozen_stages=3"] + SMALL), pretrained=False)
    frozen.load_state_dict(model.state_dict())
    frozen.eval()
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    fused = fuse_for_inference(frozen)
    assert count_batchnorms(fused) == 0 and count_batchnorms(frozen) > 0
    x = _images(96, 1)
    with torch.no_grad():
        ref = frozen(x)
        plain = model.eval()(x)
        out = fused(x.contiguous(memory_format=torch.channels_last))
    for key in ("box_deltas", "class_logits", "coefficients", "prototypes"):
        scale = ref[key].abs().max().clamp(min=1e-6)
        assert ((out[key] - ref[key]).abs().max() / scale) < 1e-4, key
        assert torch.allclose(ref[key], plain[key], rtol=1e-5, atol=1e-6), key


def test_predictor_sees_the_training_structure():
    from yolact_lite import Predictor

    config = load_config("yolact_effl0", ["model.backbone.frozen_stages=2"] + SMALL)
    trained = build_model(config, pretrained=False)
    randomise_batchnorms(trained)
    checkpoint = model_checkpoint(trained, config.to_dict())
    predictor = Predictor(config, weights=checkpoint, fuse=False)
    structure = {k: type(m) for k, m in predictor.model.named_modules()}
    assert structure == {k: type(m) for k, m in trained.named_modules()}
    assert isinstance(structure["backbone.stem.1"], type) and structure["backbone.stem.1"] is FrozenBatchNorm2d
    for key, value in trained.state_dict().items():
        assert torch.equal(predictor.model.state_dict()[key], value), key
    fused = Predictor(config, weights=checkpoint, fuse=True)
    assert count_batchnorms(fused.model) == 0


def test_too_many_stages_is_a_config_error():
    with pytest.raises(ConfigError, match=r"frozen_stages=6: ResNet has 5 stages"):
        build_model(load_config("yolact_resnet50", ["model.backbone.frozen_stages=6"] + SMALL), pretrained=False)


def test_bf16_autocast_runs_through_frozen_stages():
    model = build_model(load_config("yolact_effl0", ["model.backbone.frozen_stages=3"] + SMALL),
                        pretrained=False).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_images(96))
    loss = out["class_logits"].float().mean()
    loss.backward()
    assert model.backbone.stem[0].weight.grad is None
    assert model.backbone.blocks[15].project[0].weight.grad is not None
