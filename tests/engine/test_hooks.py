"""Each training hook on its own, driven by a loop whose step does nothing (no model, no data)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import signal
import textwrap

import pytest

from yolact_lite.engine import hooks as H
from yolact_lite.engine.ema import ema_decay_at
from yolact_lite.engine.loop import HookBase, TrainLoop
from yolact_lite.engine.state import RunState
from yolact_lite.engine.step import StepResult


class FakeLoop(TrainLoop):
    """``finite``: which steps (1-based) have a finite loss; ``on_step``: called inside a step."""

    def __init__(self, finite=lambda step: True, on_step=None):
        super().__init__()
        self.finite, self.on_step = finite, on_step

    def run_step(self) -> None:
        step = self.iter + 1
        if self.on_step is not None:
            self.on_step(step)
        ok = self.finite(step)
        self.state.last_step = StepResult(terms={"total": 1.0 if ok else float("nan")}, finite=ok)
        self.state.last_row = {"step": step, "lr": 0.1, "total": self.state.last_step.terms["total"]}


class FakeClock:
    def __init__(self, step_s: float):
        self.now, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        return self.now


class AdvanceClock(HookBase):
    """Each step takes ``clock.step_s`` seconds of the fake clock."""

    def __init__(self, clock: FakeClock):
        self.clock = clock

    def after_step(self) -> None:
        self.clock.now += self.clock.step_s


def _run(loop: FakeLoop, hooks, start=0, end=10):
    loop.register_hooks(hooks)
    loop.train(start, end)
    return loop


def test_loop_calls_hooks_in_order_and_after_train_on_errors():
    calls = []

    class Rec(HookBase):
        def before_train(self):
            calls.append("bt")

        def before_step(self):
            calls.append(f"bs{self.trainer.iter}")

        def after_step(self):
            calls.append(f"as{self.trainer.iter}")

        def after_train(self):
            calls.append(("at", type(self.trainer.exception).__name__))

    _run(FakeLoop(), [Rec()], 0, 2)
    assert calls == ["bt", "bs0", "as1", "bs1", "as2", ("at", "NoneType")]

    def boom(step):
        if step == 2:
            raise ValueError("boom")

    calls.clear()
    loop = FakeLoop(on_step=boom)
    with pytest.raises(ValueError, match="boom"):
        _run(loop, [Rec()], 0, 5)
    assert calls[-1] == ("at", "ValueError") and loop.in_step and loop.iter == 1


def test_eval_cadence_and_final_evaluation():
    seen = []
    _run(FakeLoop(), [H.EvalHook(lambda step: (seen.append(step), ({}, None))[1], every=3)], 0, 10)
    assert seen == [3, 6, 9, 10]  # the cadence, then once after the last step
    seen.clear()
    _run(FakeLoop(), [H.EvalHook(lambda step: (seen.append(step), ({}, None))[1], every=5)], 0, 10)
    assert seen == [5, 10]  # step 10 is the last: evaluated once, by after_train
    seen.clear()
    _run(FakeLoop(), [H.EvalHook(lambda step: (seen.append(step), ({}, None))[1], every=0)], 4, 7)
    assert seen == [7]


def test_eval_by_wall_time_and_budget_excludes_evaluation():
    clock = FakeClock(step_s=10.0)
    seen = []

    def evaluate(step):
        seen.append(step)
        clock.now += 100.0  # evaluation takes long; the budget does not count it
        return {}, None

    loop = _run(FakeLoop(), [AdvanceClock(clock), H.EvalHook(evaluate, every=0, clock=clock, every_minutes=1.0),
                             H.TimeBudgetHook(200.0, lambda n: None, planned=True, clock=clock)], 0, 1000)
    assert seen[:3] == [6, 12, 18]  # every 60 s of steps (evaluations excluded from that too)
    assert loop.iter == 20 and loop.stop_reason == "time_budget"  # 20 steps x 10 s = the 200 s budget
    assert loop.state.eval_seconds == 100.0 * len(seen)


def test_best_checkpoint_keeps_the_best_mask_ap_only():
    aps = {2: 1.0, 4: 3.0, 6: 2.0, 8: 5.0, 10: None}
    saved = []
    loop = _run(FakeLoop(), [H.EvalHook(lambda step: ({"mask": {"AP": aps[step]}}, aps[step]), every=2),
                             H.BestCheckpointHook(lambda step, m: saved.append(step))], 0, 10)
    assert saved == [2, 4, 8] and loop.state.best_mask_ap == 5.0 and loop.state.best_step == 8
    assert loop.state.latest_eval[0] == 10
    # resumed with a best of 4.0 already: only a better one is saved
    saved.clear()
    resumed = FakeLoop()
    resumed.state.best_mask_ap, resumed.state.best_step = 4.0, 3
    _run(resumed, [H.EvalHook(lambda step: ({}, aps[step]), every=2),
                   H.BestCheckpointHook(lambda step, m: saved.append(step))], 0, 10)
    assert saved == [8]


def test_time_budget_plans_from_the_median_step_and_stops_with_an_injected_clock():
    clock = FakeClock(step_s=2.0)
    plans = []

    def on_plan(n):
        plans.append(n)
        loop.max_iter = n

    class Stall(HookBase):  # one slow step inside the calibration window: the median ignores it
        def after_step(self):
            if self.trainer.iter == 5:
                clock.now += 30.0

    loop = FakeLoop()
    budget = H.TimeBudgetHook(100.0, on_plan, clock=clock, warmup=2, calib_steps=5)
    _run(loop, [AdvanceClock(clock), Stall(), budget], 0, 10_000)
    # after 7 steps the clock says 14 + 30 = 44 s: 56 s left at the median 2 s per step -> 28 more
    assert plans == [35] and loop.iter == 35 and loop.stop_reason is None

    # a reserve (final save) and a resumed run with a fixed plan: no new plan, the budget stops it
    clock = FakeClock(step_s=2.0)
    loop = FakeLoop()
    loop.state.reserve_s = 10.0
    _run(loop, [AdvanceClock(clock), H.TimeBudgetHook(60.0, plans.append, planned=True, clock=clock)], 100, 10_000)
    assert plans == [35] and loop.stop_reason == "time_budget" and loop.iter == 125  # 50 s of steps


def test_time_budget_shorter_than_calibration_stops_after_one_step():
    clock = FakeClock(step_s=30.0)
    loop = _run(FakeLoop(), [AdvanceClock(clock), H.TimeBudgetHook(6.0, lambda n: None, clock=clock)], 0, 50)
    assert loop.iter == 1 and loop.stop_reason == "time_budget"


def test_nonfinite_guard_counts_consecutive_skips_only():
    notes = []
    finite = lambda step: step not in (2, 3, 5, 6, 7)  # noqa: E731
    loop = FakeLoop(finite=finite)
    with pytest.raises(H.NonFiniteLossError, match="3 consecutive iterations.*at step 7"):
        _run(loop, [H.NonFiniteGuard(3, notes.append)], 0, 20)
    assert loop.iter == 7 and sum("non-finite loss" in n for n in notes) == 5
    _run(FakeLoop(finite=finite), [H.NonFiniteGuard(4, notes.append)], 0, 20)  # never 4 in a row


class AliveLoop(FakeLoop):
    """Steps whose ``prototypes_alive`` count comes from ``alive(step)``."""

    def __init__(self, alive):
        super().__init__()
        self.alive = alive

    def run_step(self) -> None:
        super().run_step()
        self.state.last_step.terms["prototypes_alive"] = float(self.alive(self.iter + 1))


def test_dead_prototypes_warns_once_after_patience_steps():
    notes = []
    # dead from step 4 on: the warning comes at step 4 + 5 - 1 = 8, once
    _run(AliveLoop(lambda step: 3 if step < 4 else 0), [H.DeadPrototypesWarning(8, notes.append, patience=5)], 0, 30)
    assert len(notes) == 1 and "step 8: all 8 prototypes" in notes[0] and "masks will come out empty" in notes[0]

    notes.clear()  # dead spells shorter than the patience, or a run without the count: no warning
    _run(AliveLoop(lambda step: 0 if step % 5 else 1), [H.DeadPrototypesWarning(8, notes.append, patience=5)], 0, 30)
    _run(FakeLoop(), [H.DeadPrototypesWarning(8, notes.append, patience=1)], 0, 10)
    assert notes == []


def test_checkpoint_periodic_final_and_on_interrupt():
    saved = []
    _run(FakeLoop(), [H.CheckpointHook(saved.append, every=4, note=print)], 0, 10)
    assert saved == [4, 8, 10]

    class Interrupt(HookBase):
        def before_step(self):
            if self.trainer.iter == 5:
                raise KeyboardInterrupt("test interrupt at step 5")

    saved.clear()
    notes = []
    with pytest.raises(KeyboardInterrupt, match="test interrupt at step 5"):
        _run(FakeLoop(), [Interrupt(), H.CheckpointHook(saved.append, every=4, note=notes.append)], 0, 10)
    assert saved == [4, 5] and "interrupted at step 5" in notes[-1]

    # an error inside a step (the model is half-updated): nothing is saved
    def fail(step):
        if step == 3:
            raise RuntimeError("DataLoader worker (pid 1) exited unexpectedly")

    saved.clear()
    with pytest.raises(RuntimeError, match=r"DataLoader worker \(pid 1\) exited unexpectedly"):
        _run(FakeLoop(on_step=fail), [H.CheckpointHook(saved.append, every=0, note=print)], 0, 10)
    assert saved == []


def test_a_failing_final_evaluation_still_saves_last_pt():
    """The final evaluation raises (any error, e.g. from pycocotools): every later hook's
    after_train still runs, last.pt holds the finished steps, and the error reaches the caller."""
    saved, notes, seen = [], [], []

    def evaluate(step):
        if step == 10:
            raise TypeError("Argument 'bb' has incorrect type")
        return {}, None

    class Later(HookBase):
        def after_train(self):
            seen.append((type(self.trainer.exception).__name__, self.trainer.failed_after_train))

    loop = FakeLoop()
    with pytest.raises(TypeError, match="'bb'"):
        _run(loop, [H.EvalHook(evaluate, every=4), H.BestCheckpointHook(lambda step, m: saved.append(("best", step))),
                    H.CheckpointHook(saved.append, every=4, note=notes.append), Later()], 0, 10)
    assert saved == [4, 8, 10] and seen == [("TypeError", True)]
    assert "stopped by an error at step 10: saved last.pt" in notes[-1]

    # an error of the loop itself is what the hooks see, not a later hook's
    class FailsToo(HookBase):
        def after_train(self):
            raise OSError("also failed")

    def fail(step):
        if step == 3:
            raise ValueError("in the step")

    loop, seen[:] = FakeLoop(on_step=fail), []
    with pytest.raises(OSError, match="also failed"):
        _run(loop, [FailsToo(), Later()], 0, 10)
    assert seen == [("ValueError", False)]


def test_stop_signal_stops_at_the_next_boundary():
    saved, notes = [], []
    before = signal.getsignal(signal.SIGINT)  # a background job may start with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def signal_at_3(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    loop = FakeLoop(on_step=signal_at_3)
    with pytest.raises(KeyboardInterrupt, match="^$"):  # bare, as Ctrl-C's own
        _run(loop, [H.StopSignalHook(notes.append), H.CheckpointHook(saved.append, every=0, note=notes.append)], 0, 9)
    assert loop.iter == 3 and saved == [3] and "stopping after the current iteration" in notes[0]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    signal.signal(signal.SIGINT, before)


def test_ema_decay_ramp():
    assert ema_decay_at(1, 0.999, 0) == 0.999
    assert ema_decay_at(1, 0.999, 2000) == pytest.approx(0.999 * (1 - 2.718281828 ** (-1 / 2000)))
    assert ema_decay_at(10**6, 0.999, 2000) == pytest.approx(0.999)


def _state_uses(cls):
    """``(fields read, fields written)`` through ``self.state.<field>`` in a hook class's source."""
    def on_state(node) -> bool:
        return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "state" and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self")

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    reads, writes = set(), set()
    for node in ast.walk(tree):
        if on_state(node):
            (writes if isinstance(node.ctx, ast.Store) else reads).add(node.attr)
        if isinstance(node, ast.AugAssign) and on_state(node.target):  # x += ... reads x too
            reads.add(node.target.attr)
    return reads, writes


HOOKS = [getattr(H, name) for name in H.__all__ if isinstance(getattr(H, name), type)
         and issubclass(getattr(H, name), HookBase)]


@pytest.mark.parametrize("hook", HOOKS, ids=lambda h: h.__name__)
def test_hooks_declare_the_run_state_they_use(hook):
    """A hook reads and writes only the RunState fields it declares, and declares only real ones."""
    fields = {f.name for f in dataclasses.fields(RunState)}
    assert set(hook.reads) | set(hook.writes) <= fields
    reads, writes = _state_uses(hook)
    assert writes <= set(hook.writes), f"{hook.__name__} writes undeclared {writes - set(hook.writes)}"
    assert reads - writes <= set(hook.reads) | set(hook.writes), hook.__name__
    assert set(hook.reads) <= reads and set(hook.writes) <= writes  # no stale declaration


def test_no_hook_reads_loose_trainer_attributes():
    """The shared values live in RunState: no hook looks them up on the trainer."""
    loose = ("last_step", "last_row", "latest_eval", "eval_seconds", "reserve_s", "model", "best_hook")
    for hook in HOOKS:
        source = inspect.getsource(hook)
        assert not [a for a in loose if f"trainer.{a}" in source or f"t.{a}" in source], hook.__name__


def test_progress_hook_writes_the_step_count_and_loss_to_a_log(capsys):
    """Not on a terminal (a log file, a pipe, pytest): whole lines, the last one at the end."""
    _run(FakeLoop(), [H.ProgressHook()], start=2, end=7)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("train: 7/7 it (") and lines[-1].endswith("T 1.000 lr 1.00e-01")
    _run(FakeLoop(), [H.ProgressHook(budget_minutes=15)], end=3)
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("train (15 min budget): 3/3 it")
