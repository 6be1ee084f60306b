
import pytest
import torch

from tests.paths import FIXTURES
from yolact_lite import CheckpointError, build_model, load_config
from yolact_lite.checkpoint.files import (
    carried_config,
    load_original,
    load_weights,
    model_checkpoint,
    read_state_file,
    save_atomic,
)
from yolact_lite.checkpoint.original import original_key_to_ours

MANIFEST_DIR = FIXTURES / "original_state_dicts"

MANIFESTS = ["yolact_base", "yolact_resnet50", "yolact_darknet53", "yolact_plus_base", "yolact_plus_resnet50"]


def manifest_state_dict(name):
    state = {}
    generator = torch.Generator().manual_seed(0)
    path = MANIFEST_DIR / f"state_dict_{name}.tsv"
    for line in path.read_text().splitlines():
        key, shape = line.split("\t")
        if shape == "scalar":
            state[key] = torch.tensor(7)
        else:
            state[key] = torch.randn(*[int(s) for s in shape.split("x")], generator=generator)
    return state


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_original_manifest_loads_strictly(name):
    state = manifest_state_dict(name)
    model = build_model(load_config(name), pretrained=False)
    load_original(model, state)
    ours = model.state_dict()
    # Every original tensor lands somewhere, unchanged, and every one of ours was filled.
    mapped = {original_key_to_ours(k, model.config.backbone.name): v for k, v in state.items()}
    assert set(mapped) == set(ours)
    for key, value in mapped.items():
        assert torch.equal(ours[key], value), key


def test_reversed_fpn_lists_and_stage_names():
    assert original_key_to_ours("fpn.lat_layers.0.weight", "resnet50") == "fpn.lateral.2.weight"
    assert original_key_to_ours("fpn.pred_layers.2.bias", "resnet50") == "fpn.output.0.bias"
    assert original_key_to_ours("backbone.layers.3.0.downsample.1.weight", "resnet101") == \
        "backbone.layer4.0.downsample.1.weight"
    assert original_key_to_ours("backbone.layers.1.0.conv2.conv_offset_mask.bias", "resnet101") == \
        "backbone.layer2.0.conv2.offset_mask.bias"
    assert original_key_to_ours("backbone.layers.2.3.conv1.0.weight", "darknet53") == \
        "backbone.stages.2.3.conv1.0.weight"
    assert original_key_to_ours("maskiou_net.maskiou_net.10.weight", "resnet50") == "mask_iou_head.classify.weight"


def test_original_checkpoint_gives_same_outputs_as_loaded_weights(tmp_path):
    # Save an original-format file, load it through the file path, compare forward outputs
    # with a model whose weights were set by our own names.
    state = manifest_state_dict("yolact_resnet50")
    state = {k: (v * 0.01 if v.is_floating_point() else v) for k, v in state.items()}
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 1.0
    path = tmp_path / "yolact_resnet50_54_800000.pth"
    torch.save(state, path)
    model = build_model(load_config("yolact_resnet50"), pretrained=False).eval()
    assert load_weights(model, path) is None  # original checkpoints carry no config
    x = torch.randn(1, 3, 550, 550)
    with torch.no_grad():
        out = model(x)
        # The class conv of the original is anchor-major: prior 0's logits are channels 0..80.
        feats = model.fpn(model.backbone(x)[1:])  # C3..C5
        raw = model.head.cls(torch.relu(model.head.shared_conv(feats[0])))
    torch.testing.assert_close(out["class_logits"][0, 0], raw[0, :81, 0, 0])
    assert torch.equal(model.head.cls.weight, state["prediction_layers.0.conf_layer.weight"])


def test_mismatched_config_lists_keys():
    state = manifest_state_dict("yolact_resnet50")
    model = build_model(load_config("yolact_base"), pretrained=False)
    with pytest.raises(ValueError, match=r"306 missing: backbone\.layer3\.10"):
        load_original(model, state)
    small = build_model(load_config("yolact_resnet50", ["model.num_classes=3"]), pretrained=False)
    with pytest.raises(CheckpointError, match=r"mis-shaped: head\.cls\.weight \(243, 256, 3, 3\) vs \(12, 256, 3, 3\)"):
        load_original(small, state)


def test_legacy_keys_are_dropped_like_the_original():
    state = manifest_state_dict("yolact_resnet50")
    state["backbone.layer1.0.conv1.weight"] = torch.zeros(1)  # old torchvision-style duplicate
    state["fpn.downsample_layers.2.weight"] = torch.zeros(1)  # beyond num_downsample
    model = build_model(load_config("yolact_resnet50"), pretrained=False)
    load_original(model, state)


def test_our_checkpoint_round_trip_and_config_mismatch(tmp_path):
    config = load_config("yolact_effl0", ["model.num_classes=3"])
    model = build_model(config, pretrained=False)
    path = tmp_path / "ckpt.pt"
    save_atomic(model_checkpoint(model, config.to_dict(), step=5), path)
    other = build_model(config, pretrained=False)
    assert load_weights(other, path)["model"]["num_classes"] == 3
    assert carried_config(read_state_file(path)) == config
    assert carried_config(model.state_dict()) is None  # a bare state dict carries none
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key])
    wrong = build_model(load_config("yolact_effl0", ["model.num_classes=5"]), pretrained=False)
    with pytest.raises(CheckpointError, match=r"model\.num_classes=3 \(checkpoint\) vs 5"):
        load_weights(wrong, path)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_truncated_and_empty_checkpoints_are_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, evil)
    with pytest.raises(CheckpointError, match="arbitrary Python objects"):
        read_state_file(evil)
    good = tmp_path / "good.pt"
    torch.save({"a": torch.zeros(1000)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_state_file(truncated)
    # the pickle format too: a byte torch's unpickler does not know is named, not its whole notice
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(read_state_file(legacy)["a"], torch.zeros(3))
    broken = bytearray(legacy.read_bytes())
    broken[2] = ord("n")  # an opcode the weights-only unpickler refuses
    legacy.write_bytes(bytes(broken))
    with pytest.raises(CheckpointError, match=r"corrupt or truncated: .*legacy\.pt \(Unsupported operand 110\)$"):
        read_state_file(legacy)
    text = tmp_path / "photo.jpg"  # a wrong --weights argument
    text.write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"not a checkpoint: .*photo\.jpg \(torch\.save writes a zip archive"):
        read_state_file(text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_state_file(empty)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_file(tmp_path / "missing.pt")


def test_atomic_save_keeps_last_good_file_on_failure(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"step": 1}, path)

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_atomic({"step": 2, "bad": Unsaveable()}, path)
    assert read_state_file(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_unwritable_destination_is_a_checkpoint_error(tmp_path):
    # A path below a regular file cannot be created, whoever runs the test (root included).
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="could not write checkpoint"):
        save_atomic({"step": 2}, blocker / "last.pt")
