"""ONNX / TorchScript export and the Predictor's onnxruntime backend.

Small inputs (256) with scaled anchors. The EfficientNet-Lite0 backbone has its offline
ImageNet weights (so features, hence scores, differ from prior to prior: no score ties) and
random heads whose class layer bias is set so that detections survive.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import onnx
import pytest
import torch

from tests.paths import ROOT
from yolact_lite import load_config, with_overrides
from yolact_lite.box_ops import decode
from yolact_lite.checkpoint.files import model_checkpoint
from yolact_lite.data import read_image
from yolact_lite.data.preprocess import preprocess_batch
from yolact_lite.errors import CheckpointError, ConfigError, YolactError
from yolact_lite.inference.detection import detect
from yolact_lite.inference.export import (
    FULL_OUTPUT_NAMES,
    OUTPUT_NAMES,
    ExportError,
    ExportWrapper,
    export_onnx,
    export_torchscript,
)
from yolact_lite.inference.predictor import Predictor
from yolact_lite.inference.runtimes import OnnxRuntimeNetwork, _explain_ort_error
from yolact_lite.model import build_model
from yolact_lite.model.fuse import fuse_for_inference
from yolact_lite.model.outputs import decode_outputs, outputs_for_image
from yolact_lite.model.testing import detecting_model, small_overrides

PHOTOS = [ROOT / "data" / "photos" / n for n in ("messi5.jpg", "basketball1.png", "3132016470_c27baa00e8_z.jpg")]
SMALL = small_overrides(256)



@pytest.fixture(scope="module")
def config():
    return load_config("yolact_effl0", SMALL)


@pytest.fixture(scope="module")
def model(config):
    return detecting_model(config, pretrained=True)


@pytest.fixture(scope="module")
def photos():
    return [read_image(p) for p in PHOTOS]


@pytest.fixture(scope="module")
def batch(config, photos):
    m = config.model
    x, _ = preprocess_batch(photos[:2], m.input_size, m.pixel_mean, m.pixel_std, m.preserve_aspect_ratio)
    return x


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, model, config):
    return export_onnx(model, config, tmp_path_factory.mktemp("onnx") / "effl0.onnx")


def test_onnx_raw_outputs_match_torch(onnx_file, model, batch):
    graph = onnx.load(str(onnx_file))
    assert graph.opset_import[0].version == 17
    network = OnnxRuntimeNetwork(onnx_file)
    assert network.input_size == 256 and not network.with_nms
    got = network(batch)  # batch of 2: the batch dimension is dynamic
    with torch.no_grad():
        raw = model(batch)
    expected = {
        "boxes": decode(raw["box_deltas"], raw["priors"]),
        "scores": torch.softmax(raw["class_logits"], -1)[..., 1:],
        "coefficients": raw["coefficients"],
        "prototypes": raw["prototypes"],
    }
    for name in OUTPUT_NAMES:
        assert got[name].shape == expected[name].shape, name
        torch.testing.assert_close(got[name], expected[name], atol=1e-4, rtol=0, msg=name)


def _mask_iou(a, b):
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def assert_same_detections(a, b):
    assert len(a) == len(b) > 0
    assert torch.equal(a.classes, b.classes)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.boxes, b.boxes, rtol=1e-3, atol=1e-3)
    assert bool((_mask_iou(a.masks, b.masks) > 0.99).all())


def test_predictor_onnxruntime_same_detections(config, model, onnx_file, photos):
    checkpoint = model_checkpoint(model, config.to_dict())
    torch_predictor = Predictor(config, checkpoint)
    ort_predictor = Predictor(config, checkpoint, backend="onnxruntime", onnx_path=onnx_file)
    for image in photos:
        assert_same_detections(torch_predictor.predict(image), ort_predictor.predict(image))
    # batches go through the dynamic batch dimension
    for a, b in zip(torch_predictor.predict_batch(photos[:2]), ort_predictor.predict_batch(photos[:2])):
        assert_same_detections(a, b)
    assert set(ort_predictor.timings) == {"preprocess", "network", "detect", "masks"}


def test_predictor_onnxruntime_exports_automatically(config, model, photos):
    checkpoint = model_checkpoint(model, config.to_dict())
    predictor = Predictor(config, checkpoint, backend="onnxruntime")
    folder = Path(predictor._onnx_folder.name)
    assert (folder / "model.onnx").is_file()
    assert_same_detections(Predictor(config, checkpoint).predict(photos[0]), predictor.predict(photos[0]))
    del predictor
    import gc

    gc.collect()
    assert not folder.exists()


def test_predictor_backend_errors(config, onnx_file, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ConfigError, match="backend"):
            Predictor(config, backend="tensorrt")
        with pytest.raises(ConfigError, match="onnxruntime"):
            Predictor(config, backend="onnxruntime", onnx_path=onnx_file, compile=True)
        with pytest.raises(ConfigError, match="onnx_path"):
            Predictor(config, onnx_path=onnx_file)
        with pytest.raises(ExportError, match="input size 256"):
            Predictor(with_overrides(config, ["model.input_size=320"]), backend="onnxruntime", onnx_path=onnx_file)
        with pytest.raises(ExportError, match="not found"):
            Predictor(config, backend="onnxruntime", onnx_path=tmp_path / "missing.onnx")


def test_detect_on_contract_matches_detect_on_raw_outputs(model, batch, config):
    """detect takes the network-output contract (what every backend returns); raw model
    outputs are decoded into it first, with the same result as decoding by hand."""
    with torch.no_grad():
        raw = model(batch[:1])
    det = detect(outputs_for_image(decode_outputs(raw), 0), config.inference)
    dec = detect({"boxes": decode(raw["box_deltas"][0], raw["priors"]),
                  "scores": torch.softmax(raw["class_logits"][0], -1)[:, 1:],
                  "coefficients": raw["coefficients"][0]}, config.inference)
    assert det["classes"].numel() > 0
    for key in ("classes", "prior_index"):
        assert torch.equal(det[key], dec[key])
    for key in ("boxes_rel", "scores", "coefficients"):
        torch.testing.assert_close(det[key], dec[key])


def test_export_slips_are_one_line(tmp_path, model, config):
    with pytest.raises(ExportError, match="is a folder; give the file to write"):
        export_onnx(model, config, tmp_path)
    with pytest.raises(ConfigError, match="export_onnx takes a Config, got str"):
        export_onnx(model, "yolact_effl0", tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="export_torchscript takes the torch model"):
        export_torchscript(None, config, tmp_path / "m.pt")


def test_torchscript_that_cannot_be_written_is_one_line(tmp_path, model, config):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointError, match=r"could not write TorchScript file .*a_file/m\.pt") as info:
        export_torchscript(model, config, blocker / "m.pt")
    assert "\n" not in str(info.value)


def test_torchscript_round_trip(tmp_path, model, config, batch):
    path = export_torchscript(model, config, tmp_path / "effl0.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path))
    reference = ExportWrapper(fuse_for_inference(model, channels_last=False), config).eval()
    with torch.no_grad():
        got, expected = loaded(batch), reference(batch)
        single = loaded(batch[:1])
    for name, g, e in zip(OUTPUT_NAMES, got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(single[0], got[0][:1], atol=1e-4, rtol=1e-5)  # batch-size dependent kernels


def test_yolact_plus_exports_deform_conv(tmp_path, batch):
    cfg = load_config("yolact_plus_resnet50", SMALL)
    model = detecting_model(cfg, class_weight_scale=1.0)
    with torch.no_grad():  # non-zero offsets so that the sampling really is deformed
        for m in model.modules():
            if hasattr(m, "offset_mask"):
                m.offset_mask.weight.normal_(0.0, 0.02)
                m.offset_mask.bias.normal_(0.0, 0.5)
    with pytest.raises(ExportError, match=r"DeformConv.*opset >= 19.*--opset 19"):
        export_onnx(model, cfg, tmp_path / "pp17.onnx", opset=17)
    # onnxruntime 1.31 has a CPU DeformConv kernel: the graph runs and matches torch
    path = export_onnx(model, cfg, tmp_path / "pp.onnx")
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == 19
    assert sum(n.op_type == "DeformConv" for n in graph.graph.node) == 13  # dcn_layers [0, 4, 6, 3]
    got = OnnxRuntimeNetwork(path)(batch[:1])
    with torch.no_grad():
        expected = ExportWrapper(model, cfg)(batch[:1])
    for name, e in zip(OUTPUT_NAMES, expected):
        torch.testing.assert_close(got[name], e, atol=1e-4, rtol=1e-4, msg=name)


def test_missing_deform_conv_kernel_message():
    exc = RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for "
                       "DeformConv(19) node with name '/model/backbone/DeformConv'")
    err = _explain_ort_error(exc, Path("m.onnx"), ["CPUExecutionProvider"])
    assert isinstance(err, YolactError)
    text = str(err)
    assert "\n" not in text and "DeformConv" in text and "torch or TorchScript backend" in text


@pytest.mark.parametrize("overrides", [[], ["inference.candidate_threshold=0.3", "inference.nms_top_k=50",
                                              "inference.detection_threshold=0.999"]])
def test_full_postprocess_graph_matches_predictor(tmp_path, model, config, photos, overrides):
    """onnxruntime alone (the --with-nms graph) gives the Predictor's detections with
    nms=fast: same classes, scores, boxes and prototype-resolution masks, batch of 2."""
    cfg = with_overrides(config, ["inference.nms=fast", *overrides])
    path = export_onnx(model, cfg, tmp_path / "full.onnx", with_nms=True)
    graph = onnx.load(str(path))
    ops = {n.op_type for n in graph.graph.node}
    assert {"TopK", "Trilu", "Sigmoid", "MatMul"} <= ops and "NonMaxSuppression" not in ops
    network = OnnxRuntimeNetwork(path)
    assert network.with_nms and network.output_names == list(FULL_OUTPUT_NAMES)
    predictor = Predictor(cfg, model_checkpoint(model, cfg.to_dict()))
    batch, _ = predictor.preprocess(photos[:2])
    got = network(batch)
    d = cfg.inference.max_detections
    assert got["det_masks"].shape[:2] == (2, d) and got["det_boxes"].shape == (2, d, 4)
    for i, image in enumerate(photos[:2]):
        expected = predictor.predict(image)
        n = int(got["num_detections"][i])
        assert n == len(expected) > 0
        assert torch.equal(got["det_classes"][i, :n], expected.classes)
        torch.testing.assert_close(got["det_scores"][i, :n], expected.scores, atol=1e-4, rtol=0)
        h, w = image.shape[:2]
        pixels = got["det_boxes"][i, :n] * torch.tensor([w, h, w, h])
        clipped = torch.stack([pixels[:, 0].clamp(0, w), pixels[:, 1].clamp(0, h),
                               pixels[:, 2].clamp(0, w), pixels[:, 3].clamp(0, h)], 1)
        torch.testing.assert_close(clipped, expected.boxes, atol=1e-3, rtol=1e-5)  # + float32 rounding
        torch.testing.assert_close(got["det_masks"][i, :n], expected.proto_masks, atol=1e-4, rtol=0)
        torch.testing.assert_close(got["det_mask_scores"][i, :n], expected.mask_scores, atol=1e-4, rtol=0)
        # padding rows
        assert bool((got["det_classes"][i, n:] == -1).all()) and float(got["det_masks"][i, n:].abs().sum()) == 0
    if overrides:
        assert int(got["num_detections"].min()) < d  # the score threshold cut some
    with pytest.raises(ExportError, match="Fast NMS"):
        export_onnx(model, with_overrides(cfg, ["inference.nms=traditional"]), tmp_path / "t.onnx", with_nms=True)


def test_export_script_bad_input_exits_2(tmp_path):
    script = str(ROOT / "scripts" / "export.py")
    result = subprocess.run(
        [sys.executable, script, "--config", "no_such_config", "--format", "onnx", "--out", str(tmp_path / "m.onnx")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no_such_config" in lines[0]


def test_export_script_rejects_bad_options(tmp_path):
    spec = importlib.util.spec_from_file_location("export_script", ROOT / "scripts" / "export.py")
    export_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_script)
    with pytest.raises(ConfigError, match="onnx only"):
        export_script.main(["--config", "yolact_effl0", "--format", "torchscript", "--with-nms",
                            "--out", str(tmp_path / "m.pt")])
    with pytest.raises(YolactError, match="does not exist"):
        export_script.main(["--config", "yolact_effl0", "--format", "onnx",
                            "--out", str(tmp_path / "nowhere" / "m.onnx")])
    with pytest.raises(ExportError, match="opset 5"):
        export_script.main(["--config", "yolact_effl0", *[a for s in SMALL for a in ("--set", s)],
                            "--format", "onnx", "--opset", "5", "--no-verify", "--out", str(tmp_path / "m.onnx")])


def test_cpu_preset():
    cfg = load_config("yolact_effl0_cpu")
    m = cfg.model
    assert m.backbone.name == "efficientnet_lite0" and m.input_size == 320
    assert m.fpn.num_features == m.protonet_channels == m.head_channels == 64
    assert m.anchors.scales == [[float(int(s * 320 / 550))] for s in (24, 48, 96, 192, 384)]
    model = build_model(cfg, pretrained=False).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 320, 320))
    assert out["prototypes"].shape == (1, 80, 80, 32)


def test_infer_script_onnx_backend(onnx_file, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("infer_script_export", ROOT / "scripts" / "infer.py")
    infer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer)
    out = tmp_path / "drawn.png"
    overrides = [a for s in SMALL for a in ("--set", s)]
    code = infer.main(["--config", "yolact_effl0", *overrides, "--onnx", str(onnx_file),
                       "--image", str(PHOTOS[0]), "--out", str(out)])
    assert code == 0 and out.is_file()
    network = [line for line in capsys.readouterr().out.splitlines() if line.startswith("network: ")]
    assert network == ["network: onnxruntime fp32 on cpu"]
    with pytest.raises(ConfigError, match="onnx_path needs"):
        infer.main(["--config", "yolact_effl0", *overrides, "--backend", "torch", "--onnx", str(onnx_file),
                    "--image", str(PHOTOS[0]), "--out", str(out)])


def test_openvino_backend_without_openvino_is_one_clear_error(onnx_file, tmp_path, monkeypatch):
    """Where OpenVINO is missing (blocked here where it is installed) ``--backend openvino``
    says so and how to install it, through the CLI: exit 2, one error line."""
    from yolact_lite.cli import run_cli

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    spec = importlib.util.spec_from_file_location("infer_script_openvino", ROOT / "scripts" / "infer.py")
    infer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer)
    args = ["--config", "yolact_effl0", *(a for s in SMALL for a in ("--set", s)), "--backend", "openvino",
            "--onnx", str(onnx_file), "--image", str(PHOTOS[0]), "--out", str(tmp_path / "drawn.png")]
    with pytest.raises(ExportError, match=r"OpenVINO is not installed: pip install openvino"):
        infer.main(args)
    with pytest.raises(SystemExit, match="2"):
        run_cli(infer.main, args)


def test_full_postprocess_graph_rescores_like_yolact_plus(tmp_path, photos):
    """YOLACT++: the graph runs the mask-IoU head on its cropped masks, as the Predictor."""
    cfg = load_config("yolact_plus_resnet50", SMALL + ["inference.max_detections=20"])
    model = detecting_model(cfg, class_weight_scale=1.0)
    path = export_onnx(model, cfg, tmp_path / "pp_full.onnx", with_nms=True)
    got = OnnxRuntimeNetwork(path)(Predictor(cfg, model_checkpoint(model, cfg.to_dict())).preprocess(photos[:1])[0])
    expected = Predictor(cfg, model_checkpoint(model, cfg.to_dict())).predict(photos[0])
    n = int(got["num_detections"][0])
    assert n == len(expected) > 0
    assert not torch.equal(expected.mask_scores, expected.scores)  # the head really re-scores
    assert torch.equal(got["det_classes"][0, :n], expected.classes)
    torch.testing.assert_close(got["det_mask_scores"][0, :n], expected.mask_scores, atol=1e-4, rtol=0)
