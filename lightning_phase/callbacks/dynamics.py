"""DynamicsLogger: logs the integrator's ``dynamics/*`` scalars on a log-spaced schedule of steps."""

from __future__ import annotations

import math

import pytorch_lightning as pl

from lightning_phase.errors import check_positive_int


def log_spaced(step: int, per_decade: int) -> bool:
    """True for step 1..10 and whenever ⌊per_decade·log₁₀ step⌋ increases (≈ per_decade points a decade)."""
    if step <= 10:
        return step >= 1
    return math.floor(per_decade * math.log10(step)) > math.floor(per_decade * math.log10(step - 1))


class DynamicsLogger(pl.Callback):
    """Logs ``optimizer.stats()`` (GradientFlow: dynamics/dt, time, steps, rejections, d_grad, d_out).

    When: steps 1–10, then ``per_decade`` log-spaced steps per decade, and at the end of fit. Written
    straight to the loggers (``trainer.loggers``), so it costs nothing on other steps and is not
    filtered by ``Trainer(log_every_n_steps)``. Optimisers without ``stats()`` are skipped.
    """

    def __init__(self, per_decade: int = 20):
        self.per_decade = check_positive_int("callbacks.DynamicsLogger.per_decade", per_decade)

    @staticmethod
    def _stats(trainer: pl.Trainer) -> dict[str, float] | None:
        if not trainer.optimizers:
            return None
        stats = getattr(trainer.optimizers[0], "stats", None)
        return stats() if callable(stats) else None

    def _log(self, trainer: pl.Trainer) -> None:
        stats = self._stats(trainer)
        if stats is not None and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(stats, step=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if log_spaced(trainer.global_step, self.per_decade):
            self._log(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._log(trainer)
