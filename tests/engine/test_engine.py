"""Training engine: schedule arithmetic, BN freezing, the non-finite guard, checkpoints,
bit-exact resume, worker-count independence, read-only run dirs and 2-process DDP (gloo)."""

from __future__ import annotations

import csv
import errno
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.engine.runs import train_args, write_subset
from tests.paths import ROOT
from yolact_lite.checkpoint.files import load_weights, read_state_file
from yolact_lite.cli import run_cli
from yolact_lite.cli.train import main as train_main
from yolact_lite.config import TrainConfig, load_config
from yolact_lite.data.sampling import RETRIES, TrainSamples, epoch_order, shard_batch
from yolact_lite.engine import step as S
from yolact_lite.engine import trainer as T
from yolact_lite.engine.data import StepBatchSampler
from yolact_lite.engine.schedule import Schedule, build_schedule
from yolact_lite.errors import CheckpointError, ConfigError, DataError
from yolact_lite.model import build_model

TRAIN_DIR = ROOT / "data" / "coco_mini" / "train"
IMAGES = TRAIN_DIR / "images"
# Four bundled images with few, large instances (3-4 each): cheap to decode.
IMAGE_IDS = (262146, 483330, 352257, 204802)

TINY = [
    "model.input_size=128",
    "model.anchors.scales=[[5],[11],[22],[44],[89]]",
    "model.fpn.num_features=32",
    "model.protonet_channels=32",
    "model.head_channels=32",
    "train.batch_size=2",
    "train.num_workers=0",
    "train.checkpoint_every_iters=0",
    "loss.masks_to_train=2",  # < positives per image: the mask subset draws from torch's RNG
]


@pytest.fixture(scope="module")
def subset_json(tmp_path_factory) -> Path:
    return write_subset(tmp_path_factory.mktemp("engine_data"), IMAGE_IDS)


def _cli_args(subset_json: Path, out: Path, steps: int, *extra: str, sets=()) -> list:
    return train_args(subset_json, out, steps, TINY, *extra, sets=sets)


def _main(argv) -> int:
    """scripts/train.py in-process: the exit code."""
    with pytest.raises(SystemExit, match="^[0-9]+$") as exc:  # a numeric exit code, never a message
        run_cli(train_main, argv)
    return exc.value.code


def _trainer(subset_json: Path, out: Path, steps: int, sets=(), **opts) -> T.Trainer:
    config = load_config("yolact_effl0", list(TINY) + ["model.num_classes=80"] + list(sets))
    options = T.TrainOptions(train_json=str(subset_json), train_images=str(IMAGES), out=str(out),
                             max_iter=steps, pretrained=False, progress=False, **opts)
    return T.Trainer(config, options)


def _weights(path: Path) -> dict:
    return read_state_file(path)["model"]


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        va, vb = a[key], b[key]
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), key
        elif isinstance(va, dict):
            _assert_same_state(va, vb)
        elif isinstance(va, list):
            assert len(va) == len(vb)
            for x, y in zip(va, vb):
                if isinstance(x, dict):
                    _assert_same_state(x, y)
                else:
                    assert x == y, key
        else:
            assert va == vb, key


# --------------------------------------------------------------------------- schedule


def _original_lrs(lr, steps, gamma, warmup_init, warmup_until, n):
    """The original train.py's stateful per-iteration lr updates, literally."""
    current, step_index, out = lr, 0, []
    for it in range(n):
        if warmup_until > 0 and it <= warmup_until:
            current = (lr - warmup_init) * (it / warmup_until) + warmup_init
        while step_index < len(steps) and it >= steps[step_index]:
            step_index += 1
            current = lr * gamma**step_index
        out.append(current)
    return out


def test_schedule_warmup_and_steps():
    s = build_schedule(TrainConfig())  # batch 8: no scaling
    assert (s.lr, s.max_iter, s.factor) == (1e-3, 800_000, 1.0)
    assert s.lr_steps == (280_000, 600_000, 700_000, 750_000)
    assert s.lr_at(0) == 1e-4  # warm-up start
    assert s.lr_at(250) == pytest.approx(5.5e-4, rel=1e-12)
    assert s.lr_at(500) == (1e-3 - 1e-4) * 1.0 + 1e-4 == pytest.approx(1e-3, rel=1e-12)  # warm-up end
    assert s.lr_at(279_999) == s.lr_at(500)
    assert s.lr_at(280_000) == 1e-3 * 0.1
    assert s.lr_at(600_000) == 1e-3 * 0.1**2
    assert s.lr_at(749_999) == 1e-3 * 0.1**3
    assert s.lr_at(750_000) == 1e-3 * 0.1**4


@pytest.mark.parametrize("batch, lr, max_iter, steps", [
    (4, 5e-4, 1_600_000, (560_000, 1_200_000, 1_400_000, 1_500_000)),
    (16, 2e-3, 400_000, (140_000, 300_000, 350_000, 375_000)),
    (6, 1e-3 * 0.75, 1_066_666, (373_333, 800_000, 933_333, 1_000_000)),
])
def test_autoscale_original_arithmetic(batch, lr, max_iter, steps):
    s = build_schedule(TrainConfig(batch_size=batch))
    assert s.factor == batch / 8
    assert s.lr == 1e-3 * (batch / 8) == lr
    assert s.max_iter == int(800_000 // (batch / 8)) == max_iter
    assert s.lr_steps == tuple(int(x // (batch / 8)) for x in (280_000, 600_000, 700_000, 750_000)) == steps
    assert (s.warmup_init, s.warmup_iters) == (1e-4, 500)  # warm-up not scaled
    assert s.lr_at(0) == 1e-4 and s.lr_at(500) == pytest.approx(lr, rel=1e-12)
    off = build_schedule(TrainConfig(batch_size=batch, autoscale_batch=False))
    assert (off.lr, off.max_iter, off.lr_steps) == (1e-3, 800_000, (280_000, 600_000, 700_000, 750_000))


@pytest.mark.parametrize("steps, warm", [
    ((30, 60, 75), 20), ((5, 60), 20), ((20, 40), 20), ((0, 50), 10), ((50, 30, 70), 10), ((40,), 0),
])
def test_lr_at_equals_the_original_loop(steps, warm):
    s = Schedule(lr=2e-3, max_iter=100, lr_steps=steps, gamma=0.1, warmup_init=1e-4, warmup_iters=warm)
    expected = _original_lrs(2e-3, list(steps), 0.1, 1e-4, warm, 100)
    assert [s.lr_at(i) for i in range(100)] == expected


def test_epoch_order_and_sharding():
    a = epoch_order(7, seed=3, epoch=2, length=16)
    assert np.array_equal(a, epoch_order(7, seed=3, epoch=2, length=16))
    assert not np.array_equal(a, epoch_order(7, seed=3, epoch=3, length=16))
    assert sorted(a[:7].tolist()) == list(range(7)) and len(a) == 16
    sampler0 = StepBatchSampler(10, 4, rank=0, world=2, seed=0, start=0, end=5)
    sampler1 = StepBatchSampler(10, 4, rank=1, world=2, seed=0, start=0, end=5)
    single = StepBatchSampler(10, 4, rank=0, world=1, seed=0, start=0, end=5)
    for b0, b1, whole in zip(sampler0, sampler1, single):
        assert b0 + b1 == whole and len(b0) == 2
    resumed = StepBatchSampler(10, 4, rank=0, world=1, seed=0, start=3, end=5)
    assert list(resumed) == list(single)[3:]
    with pytest.raises(ValueError, match="a global batch of 3 cannot be split evenly over 2 processes"):
        shard_batch([1, 2, 3], 0, 2)


class _FakeDataset:
    """Only image 2, and only on its 3rd augmentation, keeps a non-crowd ground truth."""

    seed, annotation_file = 5, "fake.json"

    def __init__(self, n=4):
        self.n, self.calls = n, []

    def __len__(self):
        return self.n

    def sample(self, index, rng, mosaic_open=True):
        draw = int(rng.integers(1 << 30))
        self.calls.append((index, draw))
        keep = index == 2 and len([c for c in self.calls if c[0] == 2]) == 3
        return {"is_crowd": torch.zeros(1 if keep else 0, dtype=torch.bool), "index": index, "draw": draw}


def test_samples_without_ground_truth_are_redrawn_deterministically():
    ds = _FakeDataset()
    sample = TrainSamples(ds)[(1, 7)]
    # image 1: RETRIES re-augmentations, then image 2 with seeds (5, 7, 2), (5, 7, 2, 1), (5, 7, 2, 2)
    assert [c[0] for c in ds.calls] == [1] * RETRIES + [2, 2, 2]
    assert sample["index"] == 2
    assert sample["draw"] == int(np.random.default_rng([5, 7, 2, 2]).integers(1 << 30))
    assert ds.calls[0][1] == int(np.random.default_rng([5, 7, 1]).integers(1 << 30))  # = CocoDataset.rng_for
    never = _FakeDataset()
    never.sample = lambda index, rng: {"is_crowd": torch.zeros(0, dtype=torch.bool)}
    with pytest.raises(DataError, match="no training image keeps a ground truth"):
        TrainSamples(never)[(0, 0)]


# --------------------------------------------------------------------------- BatchNorm


def _bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def test_freeze_bn_rule(subset_json, tmp_path):
    cfg = load_config("yolact_effl0", ["train.batch_size=8"])
    assert S.should_freeze_bn(cfg, world_size=1) is False
    assert S.should_freeze_bn(cfg, world_size=2) is True  # 4 per process
    assert S.should_freeze_bn(load_config("yolact_effl0", ["train.freeze_bn=false", "train.batch_size=2"])) is False

    frozen = _trainer(subset_json, tmp_path / "b4", 1, sets=["train.batch_size=4"])
    bns = S._bn_modules(frozen.model)
    assert frozen.freeze_bn and bns
    assert all(not bn.training for bn in bns)
    assert all(not p.requires_grad for bn in bns for p in bn.parameters())
    before = _bn_state(frozen.model)
    weights_before = {k: v.clone() for k, v in frozen.model.state_dict().items()}
    frozen.fit()
    after = frozen.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats untouched
    bn_params = [f"{name}.{p}" for name, m in frozen.model.named_modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for p in ("weight", "bias")]
    assert bn_params and all(torch.equal(weights_before[k], after[k]) for k in bn_params)
    assert any(not torch.equal(weights_before[k], after[k]) for k in after if k.startswith("head"))
    frozen.step_module.train()  # re-applied after every train()
    assert all(not bn.training for bn in bns)

    trained = _trainer(subset_json, tmp_path / "b8", 1, sets=["train.batch_size=8"])
    assert not trained.freeze_bn
    assert all(bn.training for bn in S._bn_modules(trained.model))
    before = _bn_state(trained.model)
    trained.fit()
    after = trained.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


# --------------------------------------------------------------------------- non-finite guard


def test_nonfinite_guard_skips_and_stops(subset_json, tmp_path, monkeypatch):
    original = T.YolactLoss.forward
    calls = {"n": 0}

    def nan_loss(self, outputs, targets, mask_iou_head=None):
        calls["n"] += 1
        losses = original(self, outputs, targets, mask_iou_head)
        losses["total"] = losses["total"] * float("nan")
        return losses

    monkeypatch.setattr(T.YolactLoss, "forward", nan_loss)
    trainer = _trainer(subset_json, tmp_path / "nan", 10, sets=["train.max_nonfinite_steps=3"])
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(T.NonFiniteLossError, match="3 consecutive iterations"):
        trainer.fit()
    assert calls["n"] == 3
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(before[key], value), key
    assert all(not s for s in trainer.optimizer.state.values())  # no momentum was ever created
    with open(tmp_path / "nan" / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(r["skipped"] == "1" for r in rows)


def test_single_nonfinite_step_is_skipped_then_training_continues(subset_json, tmp_path, monkeypatch):
    original = T.YolactLoss.forward
    calls = {"n": 0}

    def one_nan(self, outputs, targets, mask_iou_head=None):
        calls["n"] += 1
        losses = original(self, outputs, targets, mask_iou_head)
        if calls["n"] == 2:
            losses["total"] = losses["total"] + float("inf")
        return losses

    monkeypatch.setattr(T.YolactLoss, "forward", one_nan)
    result = _trainer(subset_json, tmp_path / "one", 3).fit()
    assert result.step == 3 and result.skipped_steps == 1
    with open(tmp_path / "one" / "log.csv", newline="") as f:
        skipped = [r["skipped"] for r in csv.DictReader(f)]
    assert skipped == ["0", "1", "0"]


# --------------------------------------------------------------------------- checkpoints / resume


@pytest.fixture(scope="module")
def uninterrupted(subset_json, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    assert _main(_cli_args(subset_json, out, 6)) == 0
    return out


def test_resume_is_bit_exact(subset_json, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run"
    assert _main(_cli_args(subset_json, out, 3)) == 0
    first = read_state_file(out / "last.pt")
    assert (first["step"], first["epoch"], first["position_in_epoch"]) == (3, 1, 1)  # 2 iterations per epoch
    assert len(first["rng"]) == 1 and isinstance(first["rng"][0]["torch"], torch.Tensor)
    assert first["class_names"][0] == "person" and first["category_ids"][0] == 1
    # without --resume an existing run is not overwritten
    assert _main(_cli_args(subset_json, out, 6)) == 2
    assert "pass --resume" in capsys.readouterr().err
    # --resume continues the run's own config: another --config is refused, not ignored
    other = ["yolact_resnet50" if a == "yolact_effl0" else a for a in _cli_args(subset_json, out, 6, "--resume")]
    assert _main(other) == 2
    assert "a yolact_effl0 run, but --config is yolact_resnet50" in capsys.readouterr().err
    # cheap checks come before the data is read
    missing = tmp_path / "no.pt"
    assert _main(_cli_args(subset_json, tmp_path / "new", 6, "--init-weights", str(missing))) == 2
    assert capsys.readouterr().err.strip() == f"error: --init-weights {missing}: no such file"

    assert _main(_cli_args(subset_json, out, 6, "--resume")) == 0
    full, resumed = read_state_file(uninterrupted / "last.pt"), read_state_file(out / "last.pt")
    assert resumed["step"] == full["step"] == 6
    _assert_same_state(full["model"], resumed["model"])
    _assert_same_state(full["optimizer"], resumed["optimizer"])
    assert torch.equal(full["rng"][0]["torch"], resumed["rng"][0]["torch"])
    # the log of the resumed run continues the first one, identical to the uninterrupted log
    def strip(p):
        return [",".join(r.split(",")[:10]) for r in (p / "log.csv").read_text().splitlines()]
    assert strip(out) == strip(uninterrupted)
    # last.pt is a regular checkpoint: loadable by load_weights into a fresh model
    config = load_config(out / "config.yaml")
    model = build_model(config, pretrained=False)
    load_weights(model, out / "last.pt")
    assert all(torch.equal(v, resumed["model"][k]) for k, v in model.state_dict().items())


def test_worker_count_does_not_change_training(subset_json, uninterrupted, tmp_path):
    out = tmp_path / "w2"
    assert _main(_cli_args(subset_json, out, 6, sets=["train.num_workers=2"])) == 0
    _assert_same_state(_weights(uninterrupted / "last.pt"), _weights(out / "last.pt"))


def _make_unwritable(path: Path, monkeypatch) -> None:
    """chmod a-w; as root (which ignores permissions) make creating files there fail instead."""
    path.chmod(0o555)
    try:
        fd, probe = tempfile.mkstemp(dir=path)
    except OSError:
        return
    os.close(fd)
    os.unlink(probe)
    real = tempfile.mkstemp

    def refuse(*args, **kwargs):
        target = Path(kwargs.get("dir") or (args[2] if len(args) > 2 else "."))
        if target.resolve() == path.resolve():
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def test_read_only_run_dir_fails_cleanly(subset_json, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ro"
    assert _main(_cli_args(subset_json, out, 2)) == 0
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    _make_unwritable(out, monkeypatch)
    try:
        assert _main(_cli_args(subset_json, out, 4, "--resume")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: cannot write to run directory"), err
        assert (out / "last.pt").read_bytes() == before

        # a checkpoint write that fails mid-run raises CheckpointError, last.pt stays intact
        monkeypatch.undo()
        out.chmod(0o755)
        trainer = _trainer(subset_json, out / "inner", 1)
        trainer.fit()
        good = (out / "inner" / "last.pt").read_bytes()
        _make_unwritable(out / "inner", monkeypatch)
        with pytest.raises(CheckpointError, match="could not write checkpoint"):
            trainer.save_last(1)
        assert (out / "inner" / "last.pt").read_bytes() == good
    finally:
        monkeypatch.undo()
        for p in (out, out / "inner"):
            if p.exists():
                p.chmod(0o755)


def test_time_budget_stops_cleanly_with_evaluation(subset_json, tmp_path, capsys):
    out = tmp_path / "budget"
    code = _main(_cli_args(subset_json, out, 50, "--max-minutes", "0.0001", "--val-json", str(subset_json),
                            "--val-images", str(IMAGES), "--eval-max-images", "1"))
    assert code == 0
    err = capsys.readouterr().err
    assert "stopped at the time budget" in err and "[eval @ step 1]" in err
    state = read_state_file(out / "last.pt")
    assert state["step"] == 1 and state["best_mask_ap"] is not None
    assert (out / "best.pt").is_file() and (out / "config.yaml").is_file()
    assert read_state_file(out / "best.pt")["category_ids"] == state["category_ids"]
    rows = list(csv.DictReader((out / "eval.csv").open()))  # the final evaluation, for curves
    assert [r["step"] for r in rows] == ["1"] and float(rows[0]["mask_AP"]) == pytest.approx(state["best_mask_ap"],
                                                                                          abs=1e-3)


# --------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes(subset_json, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(ROOT / "scripts" / "train.py")]
    cmd += _cli_args(subset_json, out, 2, sets=["train.batch_size=4"])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    sums = dict(re.findall(r"weights sha256 \(rank (\d)\): ([0-9a-f]{64})", proc.stdout))
    assert set(sums) == {"0", "1"} and sums["0"] == sums["1"], proc.stdout
    state = read_state_file(out / "last.pt")
    assert state["step"] == 2 and state["world_size"] == 2 and len(state["rng"]) == 2
    model = build_model(load_config(out / "config.yaml"), pretrained=False)
    load_weights(model, state)
    assert T.state_checksum(model) == sums["0"]


def test_train_options_refuse_what_would_fail_after_training(tmp_path):
    """Mistakes that used to surface at the first evaluation, after the steps had run."""
    base = dict(train_json="a.json", train_images="imgs", out=str(tmp_path / "r"))
    for extra, words in ((dict(val_json="v.json"), "val_json and val_images go together"),
                         (dict(eval_max_images=0), "eval_max_images must be >= 1"),
                         (dict(max_minutes=-1.0), "max_minutes must be > 0")):
        with pytest.raises(ConfigError, match=words):
            T.TrainOptions(**base, **extra)
    with pytest.raises(ConfigError, match="Trainer takes a Config, got str"):
        T.Trainer("yolact_effl0", T.TrainOptions(**base))
