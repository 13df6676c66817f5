"""TimeScale: t₁, the first flow time at which α²L falls below half its start, and ‖F‖ vs t ([FL])."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from lightning_phase.callbacks.schedule import LogSpacedSchedule, log_metrics
from lightning_phase.observables import output_norm, t1


class TimeScale(pl.Callback):
    """Reads each step's α²L (``outputs["loss_value"]``) and F (``outputs["outputs"]``) from
    ``PhaseModule.training_step`` and the flow time t (``pl_module.flow_time``, Σ dt) before the step.
    Logs ``time/t1`` once, when α²L first falls below half its value at step 0 (``observables.t1``), and at
    the scheduled steps ``time/flow_time`` and ``time/output_norm`` (‖F‖, RMS over the training batch) —
    both at the state the training step saw (step s − 1 after s optimiser steps). Cheap: runs every step.

    Summary: t1 (None if never reached), loss0 (α²L at start); the run summary records flow_time itself.
    """

    def __init__(self, schedule: LogSpacedSchedule | None = None):
        self.schedule = schedule if schedule is not None else LogSpacedSchedule()
        self.t0: float | None = None
        self.loss0: float | None = None
        self.t1: float | None = None
        self.flow_time: float | None = None
        self._t_before = 0.0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(points_per_decade=self.schedule.points_per_decade)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t_before = float(pl_module.flow_time)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not isinstance(outputs, dict) or "loss_value" not in outputs:
            return
        loss, t = float(outputs["loss_value"]), self._t_before
        step = trainer.global_step - 1  # the state the training step evaluated
        if self.loss0 is None:
            self.t0, self.loss0 = t, loss
        if self.t1 is None:
            self.t1 = t1([self.t0, t], [self.loss0, loss])
            if self.t1 is not None:
                log_metrics(trainer, {"time/t1": self.t1}, step)
        self.flow_time = float(pl_module.flow_time)
        if self.schedule(step) and "outputs" in outputs:
            norm = float(output_norm(outputs["outputs"]))
            log_metrics(trainer, {"time/flow_time": t, "time/output_norm": norm}, step)

    def summary(self) -> dict[str, float | None]:
        return {"t1": self.t1, "loss0": self.loss0}

    def state_dict(self) -> dict[str, Any]:
        return {"t0": self.t0, "loss0": self.loss0, "t1": self.t1, "flow_time": self.flow_time}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.t0, self.loss0, self.t1 = state_dict["t0"], state_dict["loss0"], state_dict["t1"]
        self.flow_time = state_dict["flow_time"]
