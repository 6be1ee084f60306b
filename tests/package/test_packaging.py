"""The package as a user gets it: a wheel built from a clean clone, installed NON-editable.

The wheel is built with ``CUDA_HOME``/``CUDA_PATH`` unset (the situation outside the Makefile)
and ``YOLACT_LITE_NO_CUDA=1`` (the CPU extension only, for speed), installed into a fresh venv
without its dependencies (torch is not downloaded again: a ``.pth`` file makes the project
venv's site-packages visible), and used from a directory outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import NamedTuple

import cv2
import pytest

from tests.paths import ROOT

pytestmark = pytest.mark.slow

# A small random-weight model (ResNet-50 at 128 px, narrow heads): fast on a CPU.
TINY_CONFIG = {
    "name": "tiny_packaging_test",
    "model": {
        "num_classes": 3,
        "input_size": 128,
        "backbone": {"name": "resnet50"},
        "anchors": {"scales": [[5], [11], [22], [44], [89]]},
        "fpn": {"num_features": 32},
        "protonet_channels": 32,
        "head_channels": 32,
    },
}


def _run(cmd, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, (f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n"
                                 f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_HOME", "CUDA_PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra)
    return env


class Installed(NamedTuple):
    python: Path  # of a fresh venv holding the installed wheel
    bin: Path  # that venv's scripts (console entry points)
    work: Path  # an empty directory outside the checkout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of the project (builds from a clean clone)")
    tmp = tmp_path_factory.mktemp("packaging")
    src, dist, venv, work = tmp / "src", tmp / "dist", tmp / "venv", tmp / "work"
    work.mkdir()
    _run(["git", "clone", "--quiet", "--no-hardlinks", ROOT, src], cwd=tmp)

    build_env = _clean_env(YOLACT_LITE_NO_CUDA="1", MAX_JOBS=str(min(2, os.cpu_count() or 1)))
    _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
          "--quiet", "--wheel-dir", dist, src], cwd=tmp, env=build_env)
    wheels = sorted(dist.glob("yolact_lite-*.whl"))
    assert len(wheels) == 1, wheels

    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--quiet", wheels[0]], cwd=tmp, env=_clean_env())
    # Dependencies (torch, OpenCV, ...) come from this venv: a plain path line, so the .pth
    # files there (e.g. the editable install of this checkout) are NOT processed.
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=work).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_project_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    return Installed(python, venv / "bin", work)


def run_installed(installed: Installed, code: str) -> str:
    """Run Python ``code`` with the installed package, from outside the checkout; its stdout."""
    return run_command(installed, [installed.python, "-c", textwrap.dedent(code)])


def run_command(installed: Installed, cmd) -> str:
    """Run ``cmd`` (e.g. ``[installed.bin / "yolact-lite", "--help"]``) from outside the checkout."""
    return _run(cmd, cwd=installed.work, env=_clean_env(), timeout=300).stdout


def test_installed_package_is_the_wheel_not_the_checkout(installed):
    out = run_installed(installed, """
        import sys, yolact_lite
        print(yolact_lite.__file__)
        print(sys.prefix)
    """)
    package_file, prefix = out.split()
    assert Path(package_file).resolve().is_relative_to(Path(prefix).resolve())
    assert not Path(package_file).resolve().is_relative_to(ROOT.resolve())


def test_compiled_nms_loads_and_matches_the_reference(installed):
    out = run_installed(installed, """
        import torch
        from yolact_lite import _C
        from yolact_lite.ops import nms
        assert nms.extension_available()
        torch.manual_seed(0)
        xy = torch.rand(300, 2) * 100
        boxes = torch.cat([xy, xy + 5 + torch.rand(300, 2) * 40], 1)
        scores = torch.rand(4, 300)
        compiled = nms.fast_nms(boxes, scores, 0.5, 200, 100)  # dispatches to _C
        reference = nms.fast_nms_reference(boxes, scores, 0.5, 200, 100)
        assert all(torch.equal(a, b) for a, b in zip(compiled, reference)), "compiled != reference"
        print(_C.__file__, len(reference[0]), int(_C.with_cuda()))
    """)
    so_file, kept, with_cuda = out.split()
    assert so_file.endswith(".so") and "site-packages" in so_file
    assert int(kept) > 10
    assert with_cuda == "0"  # built with YOLACT_LITE_NO_CUDA=1


def test_tiny_prediction_with_random_weights(installed):
    out = run_installed(installed, f"""
        import warnings
        import numpy as np
        from yolact_lite import Predictor
        from yolact_lite.config import config_from_dict

        config = config_from_dict({TINY_CONFIG!r})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random weights: the loud warning is expected
            predictor = Predictor(config, weights=None, device="cpu")
        image = np.random.default_rng(0).integers(0, 256, (96, 160, 3), dtype=np.uint8)
        det = predictor.predict(image, display_threshold=0.0)
        print(type(det).__name__, len(det), tuple(det.masks.shape))
    """)
    name, n, *shape = out.split()
    assert name == "Detections"
    n = int(n)
    assert n > 0  # score threshold 0: random weights still give detections
    assert out.strip().endswith(f"({n}, 96, 160)")


def test_command_and_shipped_configs_work_outside_the_checkout(installed):
    out = run_command(installed, [installed.bin / "yolact-lite", "--help"])
    assert "train" in out and "data check" in out and "predict" in out
    out = run_installed(installed, """
        from yolact_lite.config import config_names, load_config
        names = config_names()
        assert "yolact_base" in names and "yolact_effl0_finetune" in names, names
        print(load_config("yolact_effl0_finetune").model.input_size)
    """)
    assert out.strip() == "448"


def test_predict_with_the_bundled_model_outside_the_checkout(installed):
    """The command a new user runs first: the bundled person model on a photo, writing the
    drawn image and COCO results, from a folder outside the checkout."""
    weights, photo = ROOT / "data" / "models" / "person_effl0.pt", ROOT / "data" / "photos" / "messi5.jpg"
    out = run_command(installed, [installed.bin / "yolact-lite", "predict", "--weights", weights, "--input", photo,
                                  "--out", "drawn.png", "--save-json", "dets.json"])
    drawn, dets = installed.work / "drawn.png", installed.work / "dets.json"
    assert drawn.is_file() and drawn.stat().st_size > 10_000, out
    assert cv2.imread(str(drawn)).shape[:2] == cv2.imread(str(photo)).shape[:2]
    results = json.loads(dets.read_text())
    people = [r for r in results if r["category_id"] == 1 and r["score"] > 0.3]
    assert people, f"the person model found no person in {photo.name}: {results[:3]}"
    assert {"image_id", "bbox", "segmentation", "score"} <= set(people[0])
