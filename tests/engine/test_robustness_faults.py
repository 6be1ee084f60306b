"""Injected faults in training: a run killed with SIGKILL at random moments (also while a
checkpoint is being written) or stopped with SIGINT resumes to the same weights as an
uninterrupted run; a full disk and dying / failing DataLoader workers end with one
``error:`` line, and the last good checkpoint survives.

The hypothesis tests are derandomized (the same examples every run) and small."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.engine.runs import IMAGES, train_args, write_subset
from tests.fuzzing import TINY
from tests.paths import ROOT
from yolact_lite.checkpoint.files import read_state_file
from yolact_lite.cli import run_cli
from yolact_lite.cli.train import main as train_main
from yolact_lite.data.coco import CocoDataset
from yolact_lite.data.sampling import TrainSamples
from yolact_lite.errors import DataError

TRAIN_IDS = (262146, 483330, 352257)  # three bundled images with few, large instances
TRAIN_SETS = TINY + ["train.batch_size=2", "train.num_workers=0", "train.checkpoint_every_iters=1",
                     "loss.masks_to_train=2"]

@pytest.fixture(scope="module")
def train3_json(tmp_path_factory) -> Path:
    return write_subset(tmp_path_factory.mktemp("robust_train"), TRAIN_IDS, "three.json")


def _train_args(ann: Path, out: Path, steps: int, *extra: str, sets=()) -> list:
    return train_args(ann, out, steps, TRAIN_SETS, *extra, sets=sets)


def _main(argv) -> int:
    with pytest.raises(SystemExit, match="^[0-9]+$") as exc:  # a numeric exit code, never a message
        run_cli(train_main, argv)
    return exc.value.code


def _error_lines(err: str) -> list:
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if line.startswith("error:")]


CHILD_ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
STEPS = 6


def _spawn(ann: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py")] + _train_args(ann, out, STEPS, "--deterministic", *extra)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CHILD_ENV,
                            cwd=str(ROOT))


def _wait_for_new_checkpoint(path: Path, after_ns: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if path.stat().st_mtime_ns > after_ns:
                return
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            return
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("no checkpoint was written in time")


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def test_killed_and_interrupted_runs_resume_to_the_same_weights(train3_json, tmp_path):
    """SIGKILL at random moments (last.pt is written every step, so some kills land inside a
    write), then SIGINT (stops at the next iteration boundary and saves), then resume to the
    end: the final weights equal an uninterrupted run's, tensor for tensor."""
    full, run = tmp_path / "full", tmp_path / "run"
    reference = _spawn(train3_json, full)  # runs alongside (one thread each)
    rng = random.Random(20261122)
    steps_after_kill = []
    for attempt in range(2):
        before = _mtime(run / "last.pt")
        proc = _spawn(train3_json, run, *(["--resume"] if attempt else []))
        _wait_for_new_checkpoint(run / "last.pt", before, proc)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.kill()
        proc.communicate()
        state = read_state_file(run / "last.pt")  # loadable after a kill at any moment
        steps_after_kill.append(int(state["step"]))
    assert steps_after_kill[0] < STEPS, "the first kill came too late to test anything"

    before = _mtime(run / "last.pt")
    proc = _spawn(train3_json, run, "--resume")
    _wait_for_new_checkpoint(run / "last.pt", before, proc)
    proc.send_signal(signal.SIGINT)  # normally mid-loop: stop at the next boundary and save
    _, err = proc.communicate(timeout=180)
    assert proc.returncode in (0, 130) and "Traceback" not in err, err[-3000:]  # 0: it had finished
    interrupted_at = int(read_state_file(run / "last.pt")["step"])

    proc = _spawn(train3_json, run, "--resume")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]

    a, b = read_state_file(full / "last.pt"), read_state_file(run / "last.pt")
    assert a["step"] == b["step"] == STEPS and interrupted_at >= steps_after_kill[-1]
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    def strip(p):
        return [",".join(r.split(",")[:10]) for r in (p / "log.csv").read_text().splitlines()]
    assert strip(run) == strip(full)
    assert not list(run.glob(".*.tmp")), "temp files of killed writes are cleaned up"


def test_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    """Deterministic version of the above: the child is killed while half of the new
    checkpoint is on disk; last.pt is still the previous, complete checkpoint.

    The same child first feeds NaN boxes/scores straight to the compiled kernel (the Python
    wrapper refuses them): a crash there would show here instead of taking pytest down."""
    path = tmp_path / "last.pt"
    code = (
        "import io, sys, time, torch\n"
        "from yolact_lite import checkpoint as C\n"
        "from yolact_lite.ops import nms\n"
        "if nms._C is not None:\n"
        "    torch.manual_seed(0)\n"
        "    for t in range(10):\n"
        "        s = torch.rand(3, 4000); b = torch.rand(4000, 4); b[:, 2:] += b[:, :2]\n"
        "        s[torch.rand(3, 4000) < 0.3] = float('nan'); b[torch.rand(4000, 4) < 0.05] = float('nan')\n"
        "        for cc in (False, True): nms._C.fast_nms_cpu(b, s, 0.5, 200, 100, cc)\n"
        "print('NAN-OK', flush=True)\n"
        f"path = {str(path)!r}\n"
        "C.save_atomic({'step': 1, 'w': torch.arange(300000.)}, path)\n"
        "real = torch.save\n"
        "def slow(obj, f, *a, **k):\n"
        "    buf = io.BytesIO(); real(obj, buf, *a, **k); data = buf.getvalue()\n"
        "    f.write(data[: len(data) // 2]); f.flush(); print('HALF', flush=True); time.sleep(120)\n"
        "torch.save = slow\n"
        "C.save_atomic({'step': 2, 'w': torch.arange(300000.) * 2}, path)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=CHILD_ENV)
    assert proc.stdout.readline().strip() == "NAN-OK"
    assert proc.stdout.readline().strip() == "HALF"
    proc.kill()
    proc.wait()
    proc.stdout.close()
    state = read_state_file(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(300000.))
    assert len(list(tmp_path.glob(".last.pt.*.tmp"))) == 1  # the half-written temp file


def test_disk_full_fails_cleanly_and_keeps_the_last_checkpoint(train3_json, tmp_path, monkeypatch, capsys):
    out = tmp_path / "full_disk"
    real_save = torch.save
    calls = {"n": 0}

    def disk_full(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:  # the second checkpoint: some bytes land, then the disk is full
            f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full)
    assert _main(_train_args(train3_json, out, 3)) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "could not write checkpoint" in lines[0] and "No space left" in lines[0], lines
    assert read_state_file(out / "last.pt")["step"] == 1  # the last good checkpoint
    assert not list(out.glob(".*.tmp"))
    monkeypatch.undo()  # space freed: the run continues from there
    assert _main(_train_args(train3_json, out, 3, "--resume")) == 0
    assert read_state_file(out / "last.pt")["step"] == 3

    def log_full():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "log.csv"))

    with pytest.raises(SystemExit, match="^2$") as exc:
        run_cli(log_full)
    assert exc.value.code == 2
    assert _error_lines(capsys.readouterr().err) == [f"error: {out / 'log.csv'}: No space left on device"]


@pytest.mark.parametrize("failure", ["raise", "exit"])
def test_failing_dataloader_worker_is_one_line(train3_json, tmp_path, monkeypatch, capsys, failure):
    real = CocoDataset.raw_sample

    def broken(self, index):
        if torch.utils.data.get_worker_info() is not None:  # in the worker process
            if failure == "exit":
                os._exit(3)
            raise ValueError("simulated decoder failure")
        return real(self, index)

    monkeypatch.setattr(CocoDataset, "raw_sample", broken)
    out = tmp_path / failure
    code = _main(_train_args(train3_json, out, 4, sets=["train.num_workers=1"]))
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    lines = _error_lines(err)
    assert len(lines) == 1, err[-3000:]
    if failure == "raise":
        assert "simulated decoder failure" in lines[0] and str(IMAGES) in lines[0], lines
        assert "(in a DataLoader worker)" in lines[0]
    else:
        assert "DataLoader worker" in lines[0] and "num_workers=0" in lines[0], lines


def test_data_error_mid_run_saves_the_finished_iterations(train3_json, tmp_path, monkeypatch, capsys):
    real = TrainSamples.__getitem__
    seen = {"n": 0}

    def corrupt_later(self, key):
        seen["n"] += 1
        if seen["n"] > 4:  # two steps of batch 2 load fine, then an image is unreadable
            path = self.dataset.image_path(int(key[0]))
            raise DataError(f"{path}: truncated or corrupt JPEG (no end-of-image marker)")
        return real(self, key)

    monkeypatch.setattr(TrainSamples, "__getitem__", corrupt_later)
    out = tmp_path / "mid"
    code = _main(_train_args(train3_json, out, 6, sets=["train.checkpoint_every_iters=0"]))
    err = capsys.readouterr().err
    assert code == 2 and len(_error_lines(err)) == 1 and "truncated" in _error_lines(err)[0], err[-3000:]
    assert "stopped by an error at step 2: saved" in err
    assert read_state_file(out / "last.pt")["step"] == 2  # no finished iteration lost
