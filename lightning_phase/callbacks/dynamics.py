"""DynamicsLogger: the integrator's ``dynamics/*`` scalars (GradientFlow) on the shared log-spaced schedule."""

from __future__ import annotations

import pytorch_lightning as pl

from lightning_phase.callbacks.schedule import LogSpacedSchedule, ScheduledCallback


class DynamicsLogger(ScheduledCallback):
    """Logs ``optimizer.stats()``: dynamics/dt, dynamics/time (t = Σ accepted dt), dynamics/steps,
    dynamics/rejections, dynamics/d_grad, dynamics/d_out (of the last accepted step).

    When: ``schedule`` (default 20 points per decade of steps), and at the end of the fit; written straight
    to the loggers, so other steps cost nothing and ``Trainer(log_every_n_steps)`` does not filter it.
    Optimisers without ``stats()`` (SGD, Adam) log nothing. Summary: ``rejections`` and the final ``dt``.
    """

    def __init__(self, schedule: LogSpacedSchedule | None = None):
        super().__init__(schedule if schedule is not None else LogSpacedSchedule(points_per_decade=20))

    @property
    def state_key(self) -> str:
        return self._generate_state_key(points_per_decade=self.schedule.points_per_decade)

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> dict[str, float]:
        stats = getattr(trainer.optimizers[0], "stats", None) if trainer.optimizers else None
        return stats() if callable(stats) else {}

    def summary(self) -> dict[str, float]:
        if not self.last:
            return {}
        return {"rejections": int(self.last["dynamics/rejections"]), "dt": self.last["dynamics/dt"]}
