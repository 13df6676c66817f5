"""Several optimiser steps per ``training_step`` call (``model.steps_per_call: n``), for less per-step overhead.

Lightning's per-batch machinery (hooks, loops, progress, closure wrappers) costs about as much as a small
full-batch step (DESIGN.md: a Trainer step at the quick start's size cost 2.0–2.5× a plain loop). With
manual optimisation, one ``training_step`` call makes up to n steps through the LightningOptimizer (so
``global_step``, precision and DDP behave as usual) and checks the stop rules after each one, so the run
makes the same steps, stops at the same step and ends with the same weights as with n = 1 (to round-off:
the arithmetic is the same). What changes: logging, the progress bar and every callback other than the
stop rules see every n-th step only (the measurement callbacks are refused; see PhaseModule.on_fit_start).
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import pytorch_lightning as pl
from torch import Tensor

from lightning_phase.contracts import StepOutput, trainer_callbacks


class SteppingModule(Protocol):
    """What ``run_steps`` uses of PhaseModule beyond a LightningModule (typed here: module.py imports this
    room, not the reverse)."""

    steps_per_call: int

    def step_outputs(self, batch: tuple[Tensor, Tensor], log: bool = True) -> StepOutput: ...

    def after_optimizer_step(self, optimizer: Any) -> None: ...


def run_steps(module: pl.LightningModule, batch: tuple[Tensor, Tensor]) -> StepOutput:
    """Up to ``module.steps_per_call`` optimiser steps on ``batch``; returns the last step's outputs (with
    ``stop_checked`` so that the stop rules do not check the last step twice)."""
    from lightning_phase.callbacks.stopping import StopRules  # callbacks import the package's parts, not module

    stepping = cast(SteppingModule, module)  # a PhaseModule
    trainer = module.trainer
    opt = module.optimizers()
    if isinstance(opt, list):
        raise ValueError(f"model.steps_per_call: {len(opt)} optimisers; expected one")
    stops = [cb for cb in trainer_callbacks(trainer) if isinstance(cb, StopRules)]
    n = stepping.steps_per_call
    if trainer.max_steps is not None and trainer.max_steps > 0:
        n = min(n, trainer.max_steps - trainer.global_step)
    steps: list[StepOutput] = []  # the last step's outputs
    for i in range(max(n, 1)):
        last = i == n - 1

        def closure(last: bool = last) -> Tensor:
            opt.zero_grad()
            step = stepping.step_outputs(batch, log=last)
            module.manual_backward(step["loss"])
            steps[:] = [step]
            return step["loss"]

        opt.step(closure=closure)
        stepping.after_optimizer_step(opt)
        for stop in stops:
            stop.check(trainer, module, steps[0])
        if trainer.should_stop:
            break
    out = steps[0]
    out["loss"] = out["loss"].detach()
    out["stop_checked"] = True
    return out
