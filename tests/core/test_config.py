import dataclasses
import re

import pytest

from yolact_lite import ConfigError, build_model, load_config, with_overrides
from yolact_lite.config import CONFIG_DIR, Config

SHIPPED = ["yolact_base", "yolact_resnet50", "yolact_darknet53", "yolact_im400", "yolact_im700",
           "yolact_plus_base", "yolact_plus_resnet50", "yolact_effl0"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name):
    config = load_config(CONFIG_DIR / f"{name}.yaml")
    assert config.name == name
    assert config.model.num_classes == 80


def test_original_hyper_parameters():
    base = load_config("yolact_base")
    assert base.model.anchors.scales == [[24.0], [48.0], [96.0], [192.0], [384.0]]
    assert base.model.anchors.square_anchors is True
    assert (base.train.lr, base.train.momentum, base.train.weight_decay) == (1e-3, 0.9, 5e-4)
    assert base.train.lr_steps == [280_000, 600_000, 700_000, 750_000]
    assert (base.train.warmup_init, base.train.warmup_iters, base.train.batch_size) == (1e-4, 500, 8)
    assert (base.loss.box_weight, base.loss.mask_weight, base.loss.ohem_neg_pos_ratio) == (1.5, 6.125, 3)
    inference = base.inference
    assert (inference.nms_top_k, inference.max_detections, inference.candidate_threshold) == (200, 100, 0.05)
    im700 = load_config("yolact_im700")
    assert im700.model.input_size == 700 and im700.loss.masks_to_train == 300
    assert im700.model.anchors.scales == [[30.0], [61.0], [122.0], [244.0], [488.0]]
    assert load_config("yolact_im400").model.anchors.scales == [[17.0], [34.0], [69.0], [139.0], [279.0]]
    plus = load_config("yolact_plus_base")
    assert plus.model.anchors.square_anchors is False and plus.model.mask_iou_head
    assert plus.model.anchors.scales[0] == pytest.approx([24.0, 30.2381, 38.0976], abs=1e-4)
    assert plus.model.backbone.dcn_layers == [0, 4, 23, 3] and plus.model.backbone.dcn_interval == 3
    dark = load_config("yolact_darknet53")
    assert dark.model.pixel_mean == [0.0, 0.0, 0.0] and dark.model.pixel_std == [255.0] * 3


def test_dotted_overrides_parse_values():
    config = load_config("yolact_base", ["model.num_prototypes=64", "loss.masks_to_train=50",
                                         "model.anchors.aspect_ratios=[1, 2]", "inference.crop_mode=none",
                                         "inference.rescore_masks=false", "train.lr_multipliers={head.coef: 1}",
                                         "train.lr_multipliers.protonet=0.1", "model.coefficient_init=zero"])
    assert config.model.num_prototypes == 64
    assert config.loss.masks_to_train == 50
    assert config.model.anchors.aspect_ratios == [1.0, 2.0]
    assert config.inference.crop_mode == "none"
    assert config.inference.rescore_masks is False
    # a whole mapping sets the key, a dotted key adds to it; values are coerced like any float
    assert config.train.lr_multipliers == {"head.coef": 1.0, "protonet": 0.1}
    assert isinstance(config.train.lr_multipliers["head.coef"], float)
    assert config.model.coefficient_init == "zero"
    assert load_config("yolact_base").train.lr_multipliers == {}


def test_mask_iou_head_on_prototypes_too_small_for_it_is_a_one_line_error():
    with pytest.raises(ConfigError) as info:
        load_config("yolact_effl0_finetune", ["model.mask_iou_head=true", "model.input_size=128"])
    assert str(info.value) == ("model.mask_iou_head needs prototypes of at least 63 px; model.input_size 128 "
                               "gives 32 at proto_level 3: use an input_size >= 249 or mask_iou_head=false")
    assert load_config("yolact_effl0_finetune", ["model.mask_iou_head=true", "model.input_size=249"])
    with pytest.raises(ConfigError, match="input_size 248 gives 62 at proto_level 3"):
        load_config("yolact_effl0_finetune", ["model.mask_iou_head=true", "model.input_size=248"])


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.num_prototype=64", "unknown config key(s) model.num_prototype"),
        ("model.num_prototypes=zero", "model.num_prototypes: expected an integer"),
        ("model.num_prototypes=0", "model.num_prototypes must be >= 1"),
        ("loss.masks_selection=biggest", "loss.masks_selection must be one of"),
        ("inference.nms=soft", "inference.nms must be one of"),
        ("model.anchors.scales=[[24]]", "one list per level"),
        ("nonsense", "must look like section.key=value"),
        ("train.lr_multipliers.protonet=fast", "train.lr_multipliers.protonet: expected a number"),
        ("train.lr_multipliers=0.1", "train.lr_multipliers: expected a mapping"),
        ("train.lr_multipliers.protonet=-1", "train.lr_multipliers.protonet must be >= 0"),
        ("model.coefficient_init=he", "model.coefficient_init must be one of"),
    ],
)
def test_bad_values_give_one_line_errors(override, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as info:
        load_config("yolact_base", [override])
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(loop)


def test_configs_are_values_not_globals():
    a = load_config("yolact_resnet50", ["model.num_prototypes=16", "model.num_classes=3"])
    b = with_overrides(a, ["model.num_prototypes=8"])
    assert a.model.num_prototypes == 16 and b.model.num_prototypes == 8
    # Two models from two configs coexist and each keeps its own geometry.
    small = load_config("yolact_effl0", ["model.num_prototypes=8", "model.num_classes=3", "model.input_size=256",
                                         "model.anchors.scales=[[11], [22], [44], [89], [178]]"])
    other = with_overrides(small, ["model.num_prototypes=12", "model.num_classes=5"])
    import torch
    m1, m2 = build_model(small, pretrained=False).eval(), build_model(other, pretrained=False).eval()
    with torch.no_grad():
        o1, o2 = m1(torch.zeros(1, 3, 256, 256)), m2(torch.zeros(1, 3, 256, 256))
    assert o1["coefficients"].shape[-1] == 8 and o2["coefficients"].shape[-1] == 12
    assert o1["class_logits"].shape[-1] == 4 and o2["class_logits"].shape[-1] == 6


def test_to_dict_round_trip():
    from yolact_lite.config import config_from_dict

    config = load_config("yolact_plus_base")
    again = config_from_dict(config.to_dict())
    assert dataclasses.asdict(again) == dataclasses.asdict(config)
    assert isinstance(again, Config)


def test_float_fields_accept_yaml_1_1_exponents():
    # YAML 1.1 reads "1e-3" (no dot) as a string; a float field takes it as the number.
    assert load_config("yolact_base", ["train.lr=1e-3"]).train.lr == 1e-3
    with pytest.raises(ConfigError, match="train.lr: expected a number"):
        load_config("yolact_base", ["train.lr=fast"])


def test_old_threshold_names_are_migrated(capsys):
    """The three thresholds have distinct names; configs and --set values with the old ones
    still load, each with a one-line note."""
    config = load_config("yolact_effl0", ["inference.conf_threshold=0.2", "inference.score_threshold=0.4"])
    assert (config.inference.candidate_threshold, config.inference.detection_threshold) == (0.2, 0.4)
    err = capsys.readouterr().err
    assert "inference.conf_threshold is now inference.candidate_threshold" in err
    assert "inference.score_threshold is now inference.detection_threshold" in err
