"""scripts/gpu_check.sh without a GPU: argument parsing, the --dry-run plan, and every step end to end
with a stub python that fakes the device (budget skip, timeout capping, the loss check, packing)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile

import pytest

from tests.paths import ROOT

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
    for needed in ("setup.py build_ext --inplace", "tests/ops/test_nms_gpu.py", "-m benchmarks.nms_speed --device cuda",
                   "-m benchmarks.end_to_end --device cuda", "--cuda-batches 1,8",
                   "-m benchmarks.train_speed --device cuda", "--config yolact_resnet50", "--max-iter 200 --amp",
                   "-m benchmarks.video_fps --device cuda --config yolact_resnet50 yolact_base",
                   "-m benchmarks.k_sweep --cost-only --device cuda --config yolact_base --k 8 32 128"):
        assert needed in plan, needed
    steps = [line.split()[0] for line in summary.splitlines() if line and not line.startswith(("#", "total"))]
    steps = [s for s in steps if s != "wheels"]  # present only when a .whl/ folder was fetched
    assert steps == ["build", "cuda_kernel", "test_nms_gpu", "nms_speed", "end_to_end", "train_speed",
                     "train_amp", "loss_falls", "video_fps", "k_sweep_cost"]
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


# --------------------------------------------------------------------------- end to end, faked device

# A stand-in for the device's python: each step of the script gets the answer a machine with a
# GPU would give (benchmarks write their results files, training writes log.csv), fast.
# STUB_BUILD_SLEEP makes the build hang; STUB_LOSS=rises makes the training loss rise.
STUB_PYTHON = r"""#!/usr/bin/env bash
case "$1" in
  setup.py) echo "building the CUDA kernel"; [ -z "${STUB_BUILD_SLEEP:-}" ] || exec sleep "$STUB_BUILD_SLEEP"; exit 0 ;;
  -c) case "$2" in
        *cuda_extension_available*) echo "CUDA kernel built: True" ;;
        *) echo "python 3.12.3 torch 2.11.0 cuda 12.8 NVIDIA H200" ;;
      esac; exit 0 ;;
  -m) case "$2" in
        pytest) echo "4 passed"; exit 0 ;;
        benchmarks.*)  # any benchmark: its results file, named by --name or <module>_cuda
          name="${2#benchmarks.}_cuda"; prev=""
          for a in "$@"; do [ "$prev" = "--name" ] && name="$a"; prev="$a"; done
          mkdir -p benchmarks/results && echo "{\"module\": \"$2\"}" > "benchmarks/results/$name.json"
          echo "wrote benchmarks/results/$name.json"; exit 0 ;;
      esac ;;
  scripts/train.py)
    out=""; steps=0; prev=""
    for a in "$@"; do
      [ "$prev" = "--out" ] && out="$a"; [ "$prev" = "--max-iter" ] && steps="$a"; prev="$a"
    done
    mkdir -p "$out" && echo "step,total" > "$out/log.csv"
    for i in $(seq 1 "$steps"); do
      if [ "${STUB_LOSS:-falls}" = falls ]; then echo "$i,$((1000 - i))" >> "$out/log.csv"
      else echo "$i,$((1000 + i))" >> "$out/log.csv"; fi
    done
    echo "trained $steps steps"; exit 0 ;;
  -) exec "$REAL_PYTHON" "$@" ;;  # the loss check's inline program runs for real
esac
echo "stub python: unexpected call: $*" >&2
exit 3
"""


@pytest.fixture
def faked_device(tmp_path):
    """A copy of the script in an empty checkout (its results land there, not in ours), a stub
    python and an nvidia-smi on PATH; returns a function that runs it and unpacks the tar."""
    import os
    import stat
    import sys

    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / "gpu_check.sh")
    stale = root / "benchmarks" / "results" / "train_speed_cuda.csv"  # from an earlier run: not packed
    stale.parent.mkdir(parents=True)
    stale.write_text("old\n")
    os.utime(stale, (1, 1))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("python", STUB_PYTHON), ("nvidia-smi", "#!/bin/sh\necho 'NVIDIA H200, 143771 MiB, 570.1'\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)

    def run(*args, **env):
        out = tmp_path / "out"
        environ = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "REAL_PYTHON": sys.executable, **env}
        environ.pop("OUT", None)
        proc = subprocess.run(["bash", str(root / "scripts" / "gpu_check.sh"), "--python", str(bin_dir / "python"),
                               "--out", str(out), *args], capture_output=True, text=True, timeout=120, env=environ)
        assert proc.returncode == 0, proc.stderr
        unpacked = tmp_path / "unpacked"
        shutil.rmtree(unpacked, ignore_errors=True)
        with tarfile.open(out / "gpu_check_results.tar.gz") as tar:
            tar.extractall(unpacked, filter="data")
        pack = unpacked / "gpu_check"
        rows = {line.split()[0]: line.split()[1:] for line in (pack / "summary.txt").read_text().splitlines()
                if line and not line.startswith(("#", "total"))}
        return proc, pack, rows

    return run


def test_every_step_runs_and_the_results_are_packed(faked_device):
    proc, pack, rows = faked_device("--steps", "40", "--budget", "100")
    assert rows and all(rc == "0" for rc, _ in rows.values()), rows
    assert {"build", "cuda_kernel", "test_nms_gpu", "train_amp", "loss_falls"} <= set(rows)
    assert "NVIDIA H200, 143771 MiB" in (pack / "machine.txt").read_text()
    results = sorted(p.name for p in (pack / "results").iterdir())
    assert {"nms_speed_cuda.json", "end_to_end_cuda.json", "train_speed_cuda.json",
            "train_amp_log.csv", "train_amp_loss.json"} <= set(results)
    assert "train_speed_cuda.csv" not in results  # older than this run
    loss = json.loads((pack / "results" / "train_amp_loss.json").read_text())
    assert loss["steps"] == 40 and loss["falls"] is True and loss["last20_mean_loss"] < loss["first20_mean_loss"]
    assert (pack / "logs" / "test_nms_gpu.log").read_text() == "4 passed\n"
    assert "wrote" in proc.stdout


def test_a_rising_loss_fails_its_step(faked_device):
    _, pack, rows = faked_device("--steps", "40", "--budget", "100", STUB_LOSS="rises")
    assert rows["train_amp"][0] == "0" and rows["loss_falls"][0] == "1"
    assert json.loads((pack / "results" / "train_amp_loss.json").read_text())["falls"] is False


def test_a_hanging_step_is_cut_at_the_budget_and_the_rest_skipped(faked_device):
    """The build would take 170 s: it gets what is left of a 15 s budget, then every later step
    is skipped, and the tar is still written.  (The budget leaves the machine-info step, which
    imports torch, up to 10 s on a loaded machine before the build would be skipped too.)"""
    import re

    proc, pack, rows = faked_device("--steps", "40", "--budget", "15", STUB_BUILD_SLEEP="60")
    found = re.search(r"== build \(limit (\d+)s\)", proc.stdout)
    assert found, (proc.stdout, rows)
    limit = int(found.group(1))
    assert 1 <= limit <= 15
    assert rows["build"][0] == "124" and int(rows["build"][1]) <= 16
    later = [name for name in rows if name not in ("build", "wheels")]
    assert later and all(rows[name][0].startswith("skipped(budget:") for name in later), rows
    assert (pack / "logs" / "build.log").read_text() == "building the CUDA kernel\n"
