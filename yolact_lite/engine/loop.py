"""The training loop and its hook protocol (the shape of detectron2's ``TrainerBase``).

A loop runs iterations ``start .. max_iter - 1`` of :meth:`TrainLoop.run_step`; hooks are
called around it.  Everything else (checkpoints, evaluation, the lr schedule, logging, time
budget, signals, EMA) is a hook in :mod:`yolact_lite.engine.hooks`.
"""

from __future__ import annotations

from typing import ClassVar, List, Optional, Sequence, Tuple

from .state import RunState

__all__ = ["HookBase", "TrainLoop"]


class HookBase:
    """Called by :class:`TrainLoop` at its four boundaries; ``self.trainer`` is the loop.

    A hook touches the shared :class:`~.state.RunState` only through ``self.state`` and names
    the fields it reads and writes in ``reads`` / ``writes`` (tests hold it to them); its
    actions (save, evaluate, note...) come in as callables, so it runs without a trainer."""

    trainer: "TrainLoop"
    reads: ClassVar[Tuple[str, ...]] = ()
    writes: ClassVar[Tuple[str, ...]] = ()

    @property
    def state(self) -> RunState:
        return self.trainer.state

    def before_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        """Always called, also when the loop stops with an exception (``trainer.exception``)."""


class TrainLoop:
    """``iter``: iterations finished so far; ``stop_reason``: set by a hook to end the loop
    at the next boundary; ``in_step``: True while the model and optimiser are changing;
    ``state``: what the step and the hooks share (:class:`~.state.RunState`)."""

    def __init__(self) -> None:
        self.hooks: List[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.stop_reason: Optional[str] = None
        self.in_step = False
        self.exception: Optional[BaseException] = None
        self.failed_after_train = False  # the exception came from a hook after the last step
        self.state = RunState()

    def register_hooks(self, hooks: Sequence[Optional[HookBase]]) -> None:
        for hook in hooks:
            if hook is not None:
                hook.trainer = self
                self.hooks.append(hook)

    def train(self, start_iter: int, max_iter: int) -> None:
        self.iter = self.start_iter = int(start_iter)
        self.max_iter = int(max_iter)
        try:
            self._call("before_train")
            while self.iter < self.max_iter and self.stop_reason is None:
                self._call("before_step")
                self.in_step = True
                self.run_step()
                self.iter += 1
                self.in_step = False
                self._call("after_step")
        except BaseException as exc:
            self.exception = exc
            raise
        finally:
            self._after_train()

    def _call(self, stage: str) -> None:
        for hook in self.hooks:
            getattr(hook, stage)()

    def _after_train(self) -> None:
        """Every hook's ``after_train``, also after one of them fails: when the loop itself
        ended cleanly, that failure becomes ``exception`` (with ``failed_after_train``) for
        the hooks after it, so a failing final evaluation still lets ``last.pt`` be saved;
        the first failure is raised at the end."""
        failure: Optional[BaseException] = None
        for hook in self.hooks:
            try:
                hook.after_train()
            except BaseException as exc:
                if self.exception is None:
                    self.exception, self.failed_after_train = exc, True
                failure = failure or exc
        if failure is not None:
            raise failure

    def run_step(self) -> None:
        raise NotImplementedError
