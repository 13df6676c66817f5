"""When to measure: one log-spaced schedule shared by every measurement callback, and their common base."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_phase.contracts import trainer_datamodule
from lightning_phase.errors import ConfigError, check_positive_int


@dataclass(frozen=True)
class LogSpacedSchedule:
    """Steps s (= optimiser steps done) at which to measure: s = 0, then s = ⌈10^{j/n}⌉ for j = 0, 1, …,
    n = ``points_per_decade`` — every step while 10^{1/n} spacing is below one step, then n per decade.
    Callbacks also measure at the last step of the fit (``on_train_end``) whatever the schedule says.

    Pure: ``schedule(s)`` depends on s alone, so a resumed run measures the steps an unbroken one would.
    """

    points_per_decade: int = 10

    def __post_init__(self):
        check_positive_int("schedule.points_per_decade", self.points_per_decade)

    def __call__(self, step: int) -> bool:
        if step <= 1:
            return step >= 0
        n = self.points_per_decade
        return math.floor(n * math.log10(step)) > math.floor(n * math.log10(step - 1))

    def steps(self, max_step: int) -> list[int]:
        """All scheduled steps in [0, max_step]."""
        return [s for s in range(max_step + 1) if self(s)]


def log_metrics(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
    """Write scalars to every logger of the trainer at ``step`` (rank 0 only: loggers are rank-zero)."""
    metrics = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def tensorboard(trainer: pl.Trainer):
    """The SummaryWriter of the trainer's TensorBoardLogger, or None (histograms and figures are skipped)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class ScheduledCallback(pl.Callback):
    """Base: calls ``measure(trainer, pl_module, step)`` at step 0, at the scheduled steps and at the end of
    the fit, on global rank 0 only; logs what it returns. Subclasses keep the physics in ``observables``."""

    def __init__(self, schedule: LogSpacedSchedule | None = None):
        self.schedule = schedule if schedule is not None else LogSpacedSchedule()
        self.last_step: int | None = None
        self.last: dict[str, float] = {}

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> dict[str, float]:
        raise NotImplementedError

    def on_fit_end_measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        """Hook for end-of-fit extras (tail fits, figures); runs after the last measurement, rank 0 only."""

    def _maybe_measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, force: bool = False) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step == self.last_step or not (force or self.schedule(step)):
            return
        self.last = self.measure(trainer, pl_module, step)
        self.last_step = step
        log_metrics(trainer, self.last, step)

    def on_train_start(self, trainer, pl_module) -> None:
        self._maybe_measure(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._maybe_measure(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._maybe_measure(trainer, pl_module, force=True)
        if trainer.is_global_zero:
            self.on_fit_end_measure(trainer, pl_module, trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "last": dict(self.last)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_step, self.last = state_dict["last_step"], dict(state_dict["last"])


def full_set(trainer: pl.Trainer, pl_module: pl.LightningModule, name: str, n: int | None = None):
    """``trainer.datamodule.<name>[:n]`` moved to the module's device and its parameters' dtype (x, ±1 labels;
    integer class labels keep their dtype). ConfigError if the data module has no such tensor."""
    dm = trainer_datamodule(trainer)
    t = getattr(dm, name, None)  # one of the PhaseDataLike tensors (x_train, y_test, x_kernel, ...)
    if t is None:
        raise ConfigError("data", type(dm).__name__, f"a data module with a tensor `{name}`")
    dtype = next(pl_module.parameters()).dtype if t.is_floating_point() else t.dtype  # class labels: int64
    t = t if n is None else t[:n]  # the datamodule's own object when whole: PhaseModule caches f₀ by identity
    return t.to(device=pl_module.device, dtype=dtype)
