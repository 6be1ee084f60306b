"""Fine-tuning features of the engine on a tiny model: EMA, precision, frozen stages, the
budget plan, cosine schedule, and checkpoints of the previous format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.engine.runs import InterruptAt
from tests.paths import FIXTURES, ROOT
from yolact_lite.checkpoint.files import FORMAT_VERSION, load_weights, read_state_file, save_atomic
from yolact_lite.config import load_config
from yolact_lite.data import coco_subset
from yolact_lite.engine import step as S
from yolact_lite.engine import trainer as T
from yolact_lite.engine.schedule import CosineSchedule, Schedule, build_schedule, fit_to_steps
from yolact_lite.errors import CheckpointError, ConfigError
from yolact_lite.hardware import bf16_supported
from yolact_lite.model import build_model

TRAIN_DIR = ROOT / "data" / "coco_mini" / "train"
IMAGES = TRAIN_DIR / "images"
IMAGE_IDS = (262146, 483330)
TINY = ["model.input_size=128", "model.anchors.scales=[[5],[11],[22],[44],[89]]", "model.fpn.num_features=32",
        "model.protonet_channels=32", "model.head_channels=32", "train.batch_size=2", "train.num_workers=0",
        "train.checkpoint_every_iters=0", "loss.masks_to_train=2", "train.warmup_iters=2"]


@pytest.fixture(scope="module")
def subset_json(tmp_path_factory) -> Path:
    data = coco_subset(json.loads((TRAIN_DIR / "annotations.json").read_text()), IMAGE_IDS)
    path = tmp_path_factory.mktemp("features") / "subset.json"
    path.write_text(json.dumps(data))
    return path


def _config(subset_json, *sets):
    n = len(json.loads(Path(subset_json).read_text())["categories"])
    return load_config("yolact_effl0", TINY + [f"model.num_classes={n}"] + list(sets))


def _trainer(subset_json, out, steps=None, sets=(), resume_state=None, hooks=(), clock=None, **opts):
    options = T.TrainOptions(train_json=str(subset_json), train_images=str(IMAGES), out=str(out),
                             max_iter=steps, pretrained=False, progress=False, resume=resume_state is not None, **opts)
    config = _config(subset_json, *sets)
    kwargs = {"clock": clock} if clock is not None else {}
    return T.Trainer(config, options, resume_state=resume_state, extra_hooks=hooks, **kwargs)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------- schedules


def test_cosine_schedule_and_budget_fit():
    t = load_config("yolact_effl0", ["train.schedule=cosine", "train.max_iter=101", "train.warmup_iters=10",
                                     "train.batch_size=8", "train.lr=1e-3", "train.final_lr_ratio=0.1"]).train
    s = build_schedule(t)
    assert isinstance(s, CosineSchedule)
    assert s.lr_at(0) == pytest.approx(1e-4) and s.lr_at(10) == pytest.approx(1e-3)
    assert s.lr_at(100) == pytest.approx(1e-4)  # lr * final_lr_ratio at the last iteration
    assert s.lr_at(55) == pytest.approx(1e-4 + 0.5 * 9e-4)  # half way through the decay
    assert all(s.lr_at(i) >= s.lr_at(i + 1) for i in range(10, 100))
    fitted = fit_to_steps(s, 40)
    assert fitted.max_iter == 40 and fitted.warmup_iters == 2 and fitted.lr_at(39) == pytest.approx(1e-4)
    steps = fit_to_steps(Schedule(lr=1.0, max_iter=1000, lr_steps=(500, 900), gamma=0.1, warmup_init=0.1,
                                  warmup_iters=100), 100)
    assert steps.lr_steps == (50, 90) and steps.warmup_iters == 5 and steps.lr_at(95) == pytest.approx(0.01)


# --------------------------------------------------------------------------- precision


def test_precision_choice_and_fallback(monkeypatch):
    cpu = torch.device("cpu")
    assert S.choose_precision(cpu, amp=False)[0] is None
    monkeypatch.setattr(S, "bf16_supported", lambda device: False)
    dtype, text = S.choose_precision(cpu, amp=True)
    assert dtype is None and "no native bf16" in text
    monkeypatch.setattr(S, "bf16_supported", lambda device: True)
    assert S.choose_precision(cpu, amp=True)[0] is torch.bfloat16
    assert S.channels_last_rule(cpu, None) is False and S.channels_last_rule(cpu, torch.bfloat16) is True


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU has no native bf16 (AMX / AVX512-BF16)")
def test_bf16_training_runs_and_matches_fp32_loss(subset_json, tmp_path, capsys):
    trainer = _trainer(subset_json, tmp_path / "bf16", 2, sets=["train.amp=true"])
    assert trainer.autocast_dtype is torch.bfloat16 and trainer.channels_last
    images, targets = next(iter(trainer.loader))
    images = images.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        bf16 = trainer.step_module(images, targets)["total"].item()
        trainer.step_module.autocast_dtype = None
        fp32 = trainer.step_module(images, targets)["total"].item()
        trainer.step_module.autocast_dtype = torch.bfloat16
    assert math.isfinite(bf16) and abs(bf16 - fp32) <= 0.05 * abs(fp32), (bf16, fp32)
    result = trainer.fit()
    assert result.step == 2 and result.skipped_steps == 0
    assert "precision bf16 autocast" in capsys.readouterr().err


# --------------------------------------------------------------------------- frozen stages


def test_frozen_backbone_gets_no_gradient_and_no_optimizer_state(subset_json, tmp_path):
    trainer = _trainer(subset_json, tmp_path / "frozen", 2, sets=["model.backbone.frozen_stages=-1"])
    backbone = {f"backbone.{k}": v.clone() for k, v in trainer.model.backbone.state_dict().items()}
    head = {k: v.clone() for k, v in trainer.model.state_dict().items() if k.startswith("head.")}
    assert all(not p.requires_grad for p in trainer.model.backbone.parameters())
    assert len(trainer.params) == sum(1 for p in trainer.model.parameters() if p.requires_grad)
    trainer.fit()
    after = trainer.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in backbone.items())  # running stats too
    assert any(not torch.equal(v, after[k]) for k, v in head.items())
    frozen_ids = {id(p) for p in trainer.model.backbone.parameters()}
    assert all(id(p) not in frozen_ids for group in trainer.optimizer.param_groups for p in group["params"])
    state = read_state_file(tmp_path / "frozen" / "last.pt")
    model = build_model(_config(subset_json), pretrained=False)  # keys unchanged: loads unfrozen, strictly
    load_weights(model, state)


def test_lr_multipliers_scale_one_module_and_resume_exactly(subset_json, tmp_path):
    sets = ["train.optimizer=adamw", "train.lr_multipliers.protonet=0.1", "train.warmup_init=1.0e-4",
            "train.autoscale_batch=false"]
    one = _trainer(subset_json, tmp_path / "one", 1, sets=sets)
    groups = one.optimizer.param_groups
    proto = {id(p) for p in one.model.protonet.parameters()}
    assert {id(p) for p in groups[1]["params"]} == proto and not proto & {id(p) for p in groups[0]["params"]}
    # the same first step (same seed, same gradient) with and without the multiplier: AdamW moves
    # each weight by lr * g / (|g| + eps), so the protonet moves exactly 0.1 as far, the rest as far
    before = {k: v.clone() for k, v in one.model.state_dict().items()}
    one.fit()
    plain = _trainer(subset_json, tmp_path / "plain", 1, sets=sets[:1] + sets[2:])  # after: one RNG stream
    plain.fit()
    for key, ratio in (("protonet.project.weight", 0.1), ("protonet.convs.0.weight", 0.1), ("head.box.weight", 1.0)):
        scaled, base = one.model.state_dict()[key] - before[key], plain.model.state_dict()[key] - before[key]
        assert base.abs().max() > 0, key
        torch.testing.assert_close(scaled, ratio * base, rtol=1e-3, atol=6e-8)  # fp32 steps of |w| <= 0.5

    sets.append("model.coefficient_init=zero")
    full = _trainer(subset_json, tmp_path / "full", 4, sets=sets)
    assert torch.count_nonzero(full.model.head.coef.weight) == 0 and full.model.head.coef.weight.numel() > 0
    full.fit()
    groups = full.optimizer.param_groups
    assert groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"])  # through warm-up and schedule
    with pytest.raises(KeyboardInterrupt, match="test interrupt before step 2"):
        _trainer(subset_json, tmp_path / "cut", 4, sets=sets, hooks=[InterruptAt(2)]).fit()
    cut = read_state_file(tmp_path / "cut" / "last.pt")
    _trainer(subset_json, tmp_path / "cut", 4, sets=sets, resume_state=cut).fit()
    _same(read_state_file(tmp_path / "full" / "last.pt")["model"],
          read_state_file(tmp_path / "cut" / "last.pt")["model"])

    with pytest.raises(ConfigError, match="protnet names no trained module of this model .*protonet"):
        _trainer(subset_json, tmp_path / "typo", 1, sets=["train.lr_multipliers.protnet=0.1"])


# --------------------------------------------------------------------------- EMA


def test_ema_weights_are_the_inference_weights_and_resume_is_exact(subset_json, tmp_path):
    sets = ["train.ema_decay=0.9", "train.ema_ramp_steps=0"]
    full = _trainer(subset_json, tmp_path / "full", 4, sets=sets)
    start = {k: v.clone() for k, v in full.model.state_dict().items()}
    full.fit()
    a = read_state_file(tmp_path / "full" / "last.pt")
    assert a["ema"]["updates"] == 4 and "train_model" in a
    _same(a["train_model"], full.model.state_dict())
    # EMA by hand from the raw weights after each step is not observable here; check the
    # average lies between the start and the end for a weight that moved
    key = "head.coef.weight" if "head.coef.weight" in start else next(
        k for k in start if k.startswith("head.") and start[k].is_floating_point())
    raw, ema = a["train_model"][key], a["model"][key]
    assert not torch.equal(raw, ema)
    lo, hi = torch.minimum(start[key], raw), torch.maximum(start[key], raw)
    assert bool(((ema >= lo - 1e-6) & (ema <= hi + 1e-6)).all())

    with pytest.raises(KeyboardInterrupt, match="test interrupt before step 2"):
        _trainer(subset_json, tmp_path / "cut", 4, sets=sets, hooks=[InterruptAt(2)]).fit()
    state = read_state_file(tmp_path / "cut" / "last.pt")
    assert state["step"] == 2 and state["ema"]["updates"] == 2
    _trainer(subset_json, tmp_path / "cut", 4, sets=sets, resume_state=state).fit()
    b = read_state_file(tmp_path / "cut" / "last.pt")
    _same(a["model"], b["model"])
    _same(a["train_model"], b["train_model"])


def test_resume_with_mosaic_and_copy_paste_is_exact(subset_json, tmp_path):
    """Mixing draws other images per sample and closes the mosaic for the last steps (here
    from step 3 of 4): a run interrupted at step 1 and resumed ends with the uninterrupted
    run's weights, and the mixing did change training (so the comparison can fail)."""
    mix = ["train.augment.mosaic=0.7", "train.augment.copy_paste=0.7", "train.augment.mosaic_close=0.25"]
    _trainer(subset_json, tmp_path / "full", 4, sets=mix).fit()
    with pytest.raises(KeyboardInterrupt, match="test interrupt before step 1"):
        _trainer(subset_json, tmp_path / "cut", 4, sets=mix, hooks=[InterruptAt(1)]).fit()
    state = read_state_file(tmp_path / "cut" / "last.pt")
    assert state["step"] == 1
    _trainer(subset_json, tmp_path / "cut", 4, sets=mix, resume_state=state).fit()
    full, resumed = (read_state_file(tmp_path / d / "last.pt")["model"] for d in ("full", "cut"))
    _same(full, resumed)
    _trainer(subset_json, tmp_path / "plain", 4).fit()
    plain = read_state_file(tmp_path / "plain" / "last.pt")["model"]
    assert any(not torch.equal(full[k], plain[k]) for k in full)


# --------------------------------------------------------------------------- budget plan


class TickClock:
    """A clock that advances ``tick`` seconds per call (deterministic for a given run)."""

    def __init__(self, tick):
        self.now, self.tick = 0.0, tick

    def __call__(self):
        self.now += self.tick
        return self.now


def test_budget_plan_is_printed_stored_and_resumed_exactly(subset_json, tmp_path, capsys):
    sets = ["train.schedule=cosine", "train.max_iter=1000", "train.final_lr_ratio=0.05"]
    run = _trainer(subset_json, tmp_path / "plan", sets=sets, max_minutes=1.0, clock=TickClock(2.0))
    result = run.fit()
    err = capsys.readouterr().err
    assert "plan: ~" in err and "steps fit in 1 min" in err
    state = read_state_file(tmp_path / "plan" / "last.pt")
    plan = state["schedule_plan"]
    # one clock call per step, 2 s each: timed over steps 6-15, then 30 s are left for 15 more
    assert plan["kind"] == "cosine" and plan["max_iter"] == result.step == 30 and state["plan_fixed"]
    assert result.reason == "finished"  # the decay ended at the budget: the plan was exact
    last_lr = float(list(open(tmp_path / "plan" / "log.csv"))[-1].split(",")[2])
    assert last_lr == pytest.approx(plan["lr"] * 0.05, rel=1e-4)

    with pytest.raises(KeyboardInterrupt, match="test interrupt before step 20"):
        _trainer(subset_json, tmp_path / "cut", sets=sets, max_minutes=1.0, clock=TickClock(2.0),
                 hooks=[InterruptAt(20)]).fit()
    cut = read_state_file(tmp_path / "cut" / "last.pt")
    assert cut["step"] == 20 and cut["schedule_plan"] == plan
    _trainer(subset_json, tmp_path / "cut", sets=sets, resume_state=cut).fit()  # no budget: the stored plan
    resumed = read_state_file(tmp_path / "cut" / "last.pt")
    assert resumed["step"] == 30
    _same(state["model"], resumed["model"])


# --------------------------------------------------------------------------- checkpoint format


def _as_format_1(state: dict) -> dict:
    """A format-2 training checkpoint rewritten as the format-1 writer (commit cdbf26e) wrote it:
    the fields and config of tests/fixtures/checkpoint_v1_meta.json, our tensors."""
    meta = json.loads((FIXTURES / "checkpoint_v1_meta.json").read_text())
    old = {k: v for k, v in state.items() if k in meta or k in ("model", "optimizer", "rng", "scaler")}
    config = json.loads(json.dumps(state["config"]))
    config.pop("config_version")  # format-1 configs predate it
    loss = config["loss"]
    config["train"]["masks_to_train"] = loss.pop("masks_to_train")
    config["train"]["masks_selection"] = loss.pop("masks_selection")
    config["train"]["augment"] = config["train"]["augment"] != "none"
    for key in ("schedule", "final_lr_ratio", "ema_decay", "ema_ramp_steps", "cache_samples", "eval_every_minutes",
                "empty_images", "lr_multipliers"):
        config["train"].pop(key)
    config["model"]["backbone"].pop("frozen_stages")
    config["model"].pop("coefficient_init")
    assert set(old) == set(meta) - {"_about"} | {"model", "optimizer", "rng", "scaler"}
    assert set(config["train"]) == set(meta["config"]["train"]), "the format-1 config had these keys"
    old["config"] = config
    return old


def test_format_1_checkpoint_loads_and_resumes(subset_json, tmp_path, capsys):
    _trainer(subset_json, tmp_path / "new", 2).fit()
    v1 = _as_format_1(read_state_file(tmp_path / "new" / "last.pt"))
    (tmp_path / "old").mkdir()
    save_atomic(v1, tmp_path / "old" / "last.pt")
    capsys.readouterr()

    from yolact_lite.config import config_from_dict

    config = config_from_dict(v1["config"])
    assert "train.masks_to_train is now loss.masks_to_train" in capsys.readouterr().err
    assert config.loss.masks_to_train == 2
    model = build_model(config, pretrained=False)
    load_weights(model, tmp_path / "old" / "last.pt")  # what the Predictor and export use

    state = read_state_file(tmp_path / "old" / "last.pt")
    options = T.TrainOptions(train_json=str(subset_json), train_images=str(IMAGES), out=str(tmp_path / "old"),
                             max_iter=3, pretrained=False, progress=False, resume=True)
    result = T.Trainer(config, options, resume_state=state).fit()
    assert result.step == 3
    assert read_state_file(tmp_path / "old" / "last.pt")["format_version"] == FORMAT_VERSION

    newer = dict(state, format_version=FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match="newer yolact_lite"):
        load_weights(build_model(config, pretrained=False), newer)


def test_init_weights_from_a_checkpoint_with_other_classes(subset_json, tmp_path, capsys):
    """The fine-tuning workflow from the command line: a 5-class checkpoint starts a run on the
    80-category dataset; the class layers are re-initialised and listed."""
    from yolact_lite.checkpoint.files import model_checkpoint
    from yolact_lite.cli import run_cli
    from yolact_lite.cli.train import main

    source = build_model(load_config("yolact_effl0", TINY + ["model.num_classes=5"]), pretrained=False)
    save_atomic(model_checkpoint(source, {}), tmp_path / "five.pt")
    args = ["--config", "yolact_effl0", "--train-json", str(subset_json), "--train-images", str(IMAGES),
            "--out", str(tmp_path / "run"), "--max-iter", "1", "--no-progress",
            "--init-weights", str(tmp_path / "five.pt")]
    for s in TINY:
        args += ["--set", s]
    with pytest.raises(SystemExit, match="^[0-9]+$") as exc:  # the code is checked below, with stderr
        run_cli(main, args)
    err = capsys.readouterr().err
    assert exc.value.code == 0, err[-2000:]
    assert "re-initialised" in err or "reinitialised" in err, err[-2000:]
    trained = read_state_file(tmp_path / "run" / "last.pt")["model"]
    num = len(json.loads(Path(subset_json).read_text())["categories"])
    assert trained["head.cls.weight"].shape[0] == 3 * (num + 1) != source.state_dict()["head.cls.weight"].shape[0]
    # a backbone tensor that trained for one step at a tiny lr is still close to the source
    key = next(k for k in trained if k.startswith("backbone.") and trained[k].is_floating_point()
               and trained[k].dim() == 4)
    assert torch.allclose(trained[key], source.state_dict()[key], atol=1e-2)


def test_empty_images_train_as_negatives_under_the_focal_loss(subset_json, tmp_path):
    data = json.loads(Path(subset_json).read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == IMAGE_IDS[0]]
    one_empty = tmp_path / "one_empty.json"
    one_empty.write_text(json.dumps(data))
    kept = _trainer(one_empty, tmp_path / "skip", steps=1)
    assert len(kept.dataset) == 1
    trainer = _trainer(one_empty, tmp_path / "use", steps=2,
                       sets=["train.empty_images=true", "loss.classification=focal"])
    assert len(trainer.dataset) == 2
    result = trainer.fit()
    assert result.step == 2 and result.skipped_steps == 0
    with pytest.raises(Exception, match="train.empty_images needs loss.classification=focal"):
        _config(one_empty, "train.empty_images=true")
