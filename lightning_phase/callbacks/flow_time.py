"""TensorBoard curves against the flow time t, beside the usual ones against the step.

With GradientFlow the steps are far from uniform in t (dt adapts over decades), and a feature-regime run that
fits 3000× sooner in t can take more steps: the physics is in t. TensorBoard's horizontal axis is the step,
the relative time or the wall time; this callback writes its scalars with **walltime = t**, so that
TensorBoard's RELATIVE axis reads t (displayed as a duration: "1 s" is one unit of t, "1 min" is t = 60).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from lightning_phase.callbacks.progress import final_values, member0_time
from lightning_phase.callbacks.schedule import tensorboard
from lightning_phase.contracts import phase_module, step_output

TAGS = ("flow_time/train/loss", "flow_time/train/n_delta")


class FlowTimeScalars(pl.Callback):
    """Write α²L and N_Δ on the training batch as ``flow_time/train/loss`` and ``flow_time/train/n_delta``
    with walltime = t (the flow time at which they were evaluated) and step = the number of steps done at
    that point: at t = 0 (before the first step), every ``trainer.log_every_n_steps`` steps, and at the
    end (whole training set, final weights: the values of summary.json). Members: member 0. Rank 0, and only
    with a TensorBoardLogger (else nothing)."""

    def __init__(self) -> None:
        self._t_before = 0.0

    def _write(self, trainer: pl.Trainer, values: dict[str, Any], step: int, t: float) -> None:
        writer = tensorboard(trainer)
        if writer is None or not trainer.is_global_zero:
            return
        for tag, key in zip(TAGS, ("loss", "n_delta"), strict=True):
            if values.get(key) is not None:
                writer.add_scalar(tag, float(values[key]), global_step=step, walltime=float(t))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == 0:
            self._write(trainer, final_values(trainer, pl_module), 0, 0.0)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._t_before = _t(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        every = max(int(trainer.log_every_n_steps), 1)  # type: ignore[attr-defined]  # set by LoggerConnector
        if trainer.global_step % every:
            return
        step_out = step_output(outputs, "FlowTimeScalars")
        if phase_module(pl_module, "FlowTimeScalars").steps_per_call > 1:
            return  # the outputs' own step and t are not tracked inside a call; the end point is still written
        # SGD/Adam evaluate before their update (at the previous step's t); GradientFlow at the new point.
        opt = trainer.optimizers[0] if trainer.optimizers else None
        new_point = bool(getattr(opt, "evaluates_at_new_point", False))
        loss, n_delta = step_out["loss_value"], step_out["n_delta"]
        if n_delta.dim() == 1:
            loss, n_delta = loss[0], n_delta[0]
        step = trainer.global_step if new_point else trainer.global_step - 1
        t = _t(pl_module) if new_point else self._t_before
        self._write(trainer, {"loss": float(loss), "n_delta": int(n_delta)}, step, t)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        values = final_values(trainer, pl_module)
        self._write(trainer, values, trainer.global_step, values["t"])


def _t(pl_module: pl.LightningModule) -> float:
    return member0_time(phase_module(pl_module, "FlowTimeScalars"))
