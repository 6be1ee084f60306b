"""scripts/gpu_check.sh without a GPU: argument parsing and the one-tar packing (--dry-run)."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args, env=None):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env)


def test_dry_run_packs_one_tar_with_the_plan(tmp_path):
    proc = _run("--dry-run", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["gpu_check_results.tar.gz"]
    with tarfile.open(tmp_path / "gpu_check_results.tar.gz") as tar:
        names = set(tar.getnames())
        plan = tar.extractfile("gpu_check/plan.txt").read().decode()
        summary = tar.extractfile("gpu_check/summary.txt").read().decode()
    assert {"gpu_check/plan.txt", "gpu_check/summary.txt", "gpu_check/logs", "gpu_check/results"} <= names
    for needed in ("setup.py build_ext --inplace", "tests/test_nms_gpu.py", "-m benchmarks.nms_speed --device cuda",
                   "-m benchmarks.end_to_end --device cuda", "--cuda-batches 1,8",
                   "-m benchmarks.train_speed --device cuda", "--config yolact_resnet50", "--max-iter 200 --amp"):
        assert needed in plan, needed
    steps = [line.split()[0] for line in summary.splitlines() if line and not line.startswith(("#", "total"))]
    steps = [s for s in steps if s != "wheels"]  # present only when a .whl/ folder was fetched
    assert steps == ["build", "cuda_kernel", "test_nms_gpu", "nms_speed", "end_to_end", "train_speed",
                     "train_amp", "loss_falls"]
    assert all("skipped(dry-run)" in line for line in summary.splitlines()[1:-1])


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option --bogus"),
    (["--dry-run", "--steps", "abc"], "--steps must be a positive integer"),
    (["--dry-run", "--steps", "10"], "--steps must be >= 40"),
    (["--dry-run", "--budget", "5m"], "--budget must be whole seconds"),
    (["--out"], "--out needs a folder"),
])
def test_bad_options_are_one_error_line(args, message):
    proc = _run(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_output_folder_is_required(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = _run("--dry-run", env=env)
    assert proc.returncode == 2 and "--out DIR or set $OUT" in proc.stderr


def test_out_from_the_environment(tmp_path):
    import os

    proc = _run("--dry-run", "--steps", "60", env={**os.environ, "OUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(tmp_path / "gpu_check_results.tar.gz") as tar:
        assert "--max-iter 60 --amp" in tar.extractfile("gpu_check/plan.txt").read().decode()
