"""OpenVINO converted straight from torch: exact against torch fp32 (the rule that lets the CLI
run ``--precision fp32`` on it), cached per weights, never reporting usage, and a clean
fall-back or one-line error when it cannot be used."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from tests.paths import ROOT
from yolact_lite import load_config
from yolact_lite.checkpoint import model_checkpoint
from yolact_lite.data import read_image
from yolact_lite.errors import ConfigError
from yolact_lite.inference import openvino_ir
from yolact_lite.inference.export import ExportError
from yolact_lite.inference.predictor import Predictor
from yolact_lite.model.testing import detecting_model, small_overrides

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")


BUNDLED = ROOT / "data" / "models" / "person_effl0.pt"
PHOTOS = [ROOT / "data" / "photos" / n for n in ("messi5.jpg", "basketball1.png")]


@pytest.fixture(scope="module")
def small():
    config = load_config("yolact_effl0", small_overrides(192))
    torch.manual_seed(0)
    return config, model_checkpoint(detecting_model(config), config.to_dict())


def _predictor(config, checkpoint, **kwargs) -> Predictor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Predictor(config, checkpoint, **kwargs)


def test_openvino_fp32_detections_equal_torch_fp32_on_the_bundled_model():
    """--precision fp32 may run on OpenVINO only because its detections are torch's within
    1e-4: same boxes, scores, classes and masks on real photos."""
    torch_fp32 = Predictor.from_checkpoint(BUNDLED)
    fast = Predictor.from_checkpoint(BUNDLED, precision="fp32", fastest_runtime=True)
    assert (torch_fp32.backend, fast.backend, fast.precision) == ("torch", "openvino", "fp32")
    for path in PHOTOS:
        image = read_image(path)
        ref, got = torch_fp32.predict(image), fast.predict(image)
        assert len(ref) == len(got) > 0
        assert torch.equal(ref.classes, got.classes)
        torch.testing.assert_close(got.scores, ref.scores, atol=1e-4, rtol=0)
        torch.testing.assert_close(got.boxes, ref.boxes, atol=1e-2, rtol=0)  # pixels: 1e-4 of the input size
        differ = (ref.masks != got.masks).float().mean()
        assert differ < 1e-4  # a pixel flips only where a mask sits on the threshold


def test_the_converted_model_is_cached_per_weights(small, monkeypatch, tmp_path):
    config, checkpoint = small
    monkeypatch.setenv("YOLACT_LITE_CACHE", str(tmp_path))
    first = _predictor(config, checkpoint, backend="openvino")
    entries = sorted(p.name for p in (tmp_path / "openvino").iterdir() if p.name != "compiled")
    assert len(entries) == 1 and (tmp_path / "openvino" / entries[0] / "model.bin").is_file()

    def no_conversion(*args):
        raise AssertionError("converted again although the cache holds this model")

    monkeypatch.setattr(openvino_ir, "_convert", no_conversion)
    second = _predictor(config, checkpoint, backend="openvino")
    batch = first.preprocess([read_image(PHOTOS[0])])[0]
    a, b = first.network(batch), second.network(batch)
    assert all(torch.equal(a[name], b[name]) for name in a)
    # other weights: another entry (and a conversion)
    changed = {**checkpoint, "model": {k: v + 0.01 if v.is_floating_point() else v
                                       for k, v in checkpoint["model"].items()}}
    with pytest.raises(AssertionError, match="converted again"):
        _predictor(config, changed, backend="openvino")


def test_an_unwritable_cache_is_one_line_or_a_fallback_to_torch(small, monkeypatch, tmp_path):
    config, checkpoint = small
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("YOLACT_LITE_CACHE", str(blocker))
    with pytest.raises(ExportError, match="cannot write the OpenVINO cache under .*YOLACT_LITE_CACHE") as err:
        _predictor(config, checkpoint, backend="openvino")
    assert "\n" not in str(err.value)
    # a runtime the Predictor chose itself falls back to torch and says why
    chosen = _predictor(config, checkpoint, precision="fp32", fastest_runtime=True)
    assert chosen.backend == "torch" and "cannot write the OpenVINO cache" in chosen.precision_reason


def test_conversion_sends_no_usage_report(tmp_path):
    """Imported plainly, OpenVINO creates ~/intel/openvino_ga_cid and its converter reports to
    Google Analytics unless the user opted out; through this library it does neither."""
    ours = (
        "import torch\n"
        "from yolact_lite.inference.openvino_ir import import_openvino\n"
        "ov = import_openvino()\n"
        "from openvino.tools.ovc import convert_impl, telemetry_stub\n"
        "assert convert_impl.tm is telemetry_stub\n"
        "ov.convert_model(torch.nn.Conv2d(3, 4, 3), example_input=torch.zeros(1, 3, 8, 8))\n"
    )
    for name, code in (("plain", "import openvino\n"), ("ours", ours)):
        home = tmp_path / name
        home.mkdir()
        env = {**os.environ, "HOME": str(home)}
        env.pop("CI", None)  # OpenVINO keeps quiet on CI machines anyway: test the user's case
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert (home / "intel").exists() == (name == "plain")


def test_networks_released_in_any_order_leave_signal_handling_intact(tmp_path):
    """Each OpenVINO Core's CPU plugin swaps in its own alternate signal stack and unmaps it
    when released; two networks released first-made-first used to leave the thread's stack
    pointing at unmapped memory, and the SIGCHLD of the next finished child (a data-loader
    worker, a subprocess) killed the process with SIGSEGV. In a child process, so a failure
    cannot take the test run down with it."""
    code = (
        "import faulthandler, gc, os, signal, time, torch\n"
        "from yolact_lite import load_config\n"
        "from yolact_lite.checkpoint import model_checkpoint\n"
        "from yolact_lite.inference.predictor import Predictor\n"
        "from yolact_lite.model.testing import detecting_model, small_overrides\n"
        "faulthandler.enable()  # as under pytest: the main thread has an alternate signal stack\n"
        "config = load_config('yolact_effl0', small_overrides(192))\n"
        "checkpoint = model_checkpoint(detecting_model(config), config.to_dict())\n"
        "first = Predictor(config, checkpoint, backend='openvino')\n"
        "second = Predictor(config, checkpoint, backend='openvino')\n"
        "assert first.network_impl.core is second.network_impl.core\n"
        "del first; gc.collect(); del second; gc.collect()\n"
        "signal.signal(signal.SIGCHLD, lambda *_: None)  # CPython runs it on the alternate stack\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0)\n"
        "time.sleep(0.3); os.waitpid(pid, 0); print('handled SIGCHLD')\n"
    )
    env = {**os.environ, "YOLACT_LITE_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0 and "handled SIGCHLD" in done.stdout, (done.returncode, done.stderr[-2000:])


def test_cli_default_is_the_fastest_path_and_says_which(tmp_path, capsys):
    from yolact_lite.cli.predict import main

    out = tmp_path / "drawn.png"
    assert main(["--weights", str(BUNDLED), "--input", str(PHOTOS[0]), "--out", str(out)]) in (0, None)
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("network: ")]
    assert len(line) == 1 and line[0].startswith("network: openvino ") and "(auto: " in line[0]
    assert out.is_file()
    assert main(["--weights", str(BUNDLED), "--input", str(PHOTOS[0]), "--out", str(out), "--precision", "fp32"]) \
        in (0, None)
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("network: ")]
    assert line == ["network: openvino fp32 on cpu (fp32 on OpenVINO (the fastest CPU runtime here))"]


def test_bf16_where_the_cpu_has_none_is_still_one_line(small):
    from yolact_lite.hardware import bf16_supported

    if bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has native bf16")
    config, checkpoint = small
    with pytest.raises(ConfigError, match="precision 'bf16' needs native bf16 hardware"):
        _predictor(config, checkpoint, precision="bf16", fastest_runtime=True)


def test_eval_is_exact_unless_asked(capsys, tmp_path):
    from yolact_lite.cli.eval import main

    val = ROOT / "data" / "coco_mini" / "val"
    common = ["--weights", str(BUNDLED), "--json", str(val / "annotations_person.json"), "--images",
              str(val / "images"), "--max-images", "2", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "exact")]) == 0
    assert "network: " not in capsys.readouterr().out  # the torch fp32 model, nothing to say
    assert main([*common, "--out", str(tmp_path / "fast"), "--precision", "fp32"]) == 0
    assert "network: openvino fp32 on cpu" in capsys.readouterr().out
    exact, fast = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("exact", "fast"))
    assert exact["box"]["AP"] == pytest.approx(fast["box"]["AP"], abs=1e-6)
    assert exact["mask"]["AP"] == pytest.approx(fast["mask"]["AP"], abs=1e-6)


def test_each_batch_size_gets_its_own_static_compilation(small, monkeypatch, tmp_path):
    """The converted graph has a dynamic batch; OpenVINO runs static shapes faster, so each
    batch size is compiled with its size fixed: a batch of two gives each image's own result."""
    config, checkpoint = small
    monkeypatch.setenv("YOLACT_LITE_CACHE", str(tmp_path))
    pred = _predictor(config, checkpoint, backend="openvino")
    images = [read_image(p) for p in PHOTOS]
    single = [pred.predict(image) for image in images]
    assert sorted(pred.network_impl._requests) == [1]
    both = pred.predict_batch(images)
    assert sorted(pred.network_impl._requests) == [1, 2]
    for one, two in zip(single, both):
        assert len(one) == len(two) > 0
        torch.testing.assert_close(one.scores, two.scores, atol=1e-5, rtol=0)
