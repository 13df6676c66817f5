"""When to measure: one log-spaced schedule shared by every measurement callback, and their common base."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor

from lightning_phase.contracts import phase_module, trainer_datamodule
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
    """Write scalars to every logger of the trainer at ``step``, on rank 0 only (a logger need not be
    rank-zero itself; tests/test_callback_contract.py checks that no callback logs elsewhere)."""
    if not trainer.is_global_zero:
        return
    metrics = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def tensorboard(trainer: pl.Trainer):
    """The SummaryWriter of the trainer's TensorBoardLogger, or None (histograms and figures are skipped);
    None off rank 0."""
    if not trainer.is_global_zero:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


MEMBER_TAGS_MAX = 16  # per-member TensorBoard tags member_<k>/... only up to this many members (as train/*)


def n_members(pl_module: pl.LightningModule) -> int:
    """K of a module trained as K members (``model.members``), 1 for one net."""
    return phase_module(pl_module, "n_members").members


def member_metrics(values: dict[str, Tensor]) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Per-member values {tag: (K,)} → (the logged scalars, one {tag: value} per member).

    Logged: each tag as the mean over the members with a finite value (as ``train/*``), and for
    K ≤ ``MEMBER_TAGS_MAX`` ``member_<k>/<tag>``. One device→host copy for all tags."""
    tags = list(values)
    rows = torch.stack([values[t].detach().to(torch.float64) for t in tags]).cpu().tolist() if tags else []
    k_all = len(rows[0]) if rows else 0
    per_member = [{t: row[k] for t, row in zip(tags, rows, strict=True)} for k in range(k_all)]
    logged: dict[str, float] = {}
    for t, row in zip(tags, rows, strict=True):
        finite = [v for v in row if math.isfinite(v)]
        logged[t] = sum(finite) / len(finite) if finite else math.nan
        if k_all <= MEMBER_TAGS_MAX:
            logged.update({f"member_{k}/{t}": v for k, v in enumerate(row)})
    return logged, per_member


class ScheduledCallback(pl.Callback):
    """Base: calls ``measure(trainer, pl_module, step)`` at step 0, at the scheduled steps and at the end of
    the fit, on global rank 0 only; logs what it returns. Subclasses keep the physics in ``observables``.

    Members (``model.members`` K > 1): a subclass that can measure them defines ``measure_members`` →
    {tag: (K,) tensor}; logged are the member means under the plain tags and ``member_<k>/<tag>`` (K ≤ 16),
    and ``last_members`` keeps each member's values (``member_summaries`` → summary.json's ``members[k]``).
    Without ``measure_members`` the callback refuses members (``supports_members`` False)."""

    def __init__(self, schedule: LogSpacedSchedule | None = None):
        self.schedule = schedule if schedule is not None else LogSpacedSchedule()
        self.last_step: int | None = None
        self.last: dict[str, float] = {}
        self.last_members: list[dict[str, float]] = []

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> dict[str, float]:
        raise NotImplementedError

    def measure_members(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> dict[str, Tensor]:
        """{tag: (K,)} for a module with K members; tags as ``measure``'s."""
        raise NotImplementedError

    @classmethod
    def supports_members(cls) -> bool:
        return cls.measure_members is not ScheduledCallback.measure_members

    def summary_of(self, last: dict[str, float], k: int | None = None) -> dict[str, Any]:
        """The summary fields from one set of measured values (``last``; member k's with members)."""
        return {}

    def summary(self) -> dict[str, Any]:
        return self.summary_of(self.last)

    def member_summaries(self) -> list[dict[str, Any]] | None:
        """Member k's summary fields (``summary_of`` its own values), or None for one net."""
        if not self.last_members:
            return None
        return [self.summary_of(m, k) for k, m in enumerate(self.last_members)]

    def on_fit_end_measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        """Hook for end-of-fit extras (tail fits, figures); runs after the last measurement, rank 0 only."""

    def _maybe_measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, force: bool = False) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step == self.last_step or not (force or self.schedule(step)):
            return
        if n_members(pl_module) > 1:
            self.last, self.last_members = member_metrics(self.measure_members(trainer, pl_module, step))
        else:
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
        return {"last_step": self.last_step, "last": dict(self.last), "last_members": list(self.last_members)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_step, self.last = state_dict["last_step"], dict(state_dict["last"])
        self.last_members = [dict(m) for m in state_dict.get("last_members", [])]


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
