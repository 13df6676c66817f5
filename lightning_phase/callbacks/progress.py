"""A step-based progress bar: full-batch runs have one step per epoch, so epochs are the wrong unit."""

from __future__ import annotations

import sys
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar
from tqdm.auto import tqdm

from lightning_phase.callbacks.schedule import full_set
from lightning_phase.contracts import PhaseModuleLike, phase_data, phase_module, step_output, trainer_datamodule


class StepProgressBar(ProgressBar):
    """One bar over ``trainer.max_steps`` showing α²L, N_Δ and flow time t, refreshed every ``refresh_rate`` steps.

    At the end of training the postfix shows the true final values (α²L, N_Δ on the whole training set at the
    final weights — what summary.json records; member 0's with members) and the bar reads "measuring" while the
    end-of-run measurements (Hessian, margins, summary) run; it closes at teardown. On a stream that is not a
    terminal (a log file) nothing is redrawn: one line with the final values is printed instead.
    ``final`` holds the final values shown.
    """

    def __init__(self, refresh_rate: int = 25):
        super().__init__()
        self.refresh_rate = max(int(refresh_rate), 1)
        self._enabled = True
        self.bar: tqdm | None = None
        self.final: dict[str, Any] | None = None
        self._line = False  # not a terminal: print one final line instead of a bar

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        self._line = not sys.stderr.isatty()
        if not self._line:
            total = trainer.max_steps if trainer.max_steps > 0 else None
            self.bar = tqdm(total=total, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr,
                            initial=trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.bar is None or trainer.global_step % self.refresh_rate:
            return
        self.bar.n = trainer.global_step
        step = step_output(outputs, "StepProgressBar")
        loss, n_delta = step["loss_value"], step["n_delta"]
        if n_delta.dim() == 1:  # members: member 0, as in summary.json's top level
            loss, n_delta = loss[0], n_delta[0]
        self.bar.set_postfix(loss=f"{float(loss):.3e}", n_delta=int(n_delta),
                             t=f"{member0_time(phase_module(pl_module, 'StepProgressBar')):.3g}", refresh=False)
        self.bar.refresh()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        self.final = final_values(trainer, pl_module)
        shown = {"loss": f"{self.final['loss']:.3e}", "n_delta": self.final["n_delta"],
                 "t": f"{self.final['t']:.3g}"}
        if self.bar is not None:
            self.bar.n = trainer.global_step
            self.bar.set_description("measuring", refresh=False)  # end-of-run measurements follow
            self.bar.set_postfix(shown, refresh=False)
            self.bar.refresh()
        elif self._line:
            print(f"train: {trainer.global_step} steps, " + ", ".join(f"{k}={v}" for k, v in shown.items()),
                  file=sys.stderr, flush=True)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.bar is not None:
            self.bar.set_description("done", refresh=False)
            self.bar.refresh()
            self.bar.close()
            self.bar = None


def member0_time(module: PhaseModuleLike) -> float:
    """Flow time t of the run (member 0's t₀ with members)."""
    return float(module.member_flow_time[0]) if module.members > 1 else float(module.flow_time)


def final_values(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """α²L and N_Δ on the whole training set at the final weights (member 0's with members), and t."""
    module = phase_module(pl_module, "final_values")
    out: dict[str, Any] = {"loss": float("nan"), "n_delta": None, "t": member0_time(module)}
    if trainer_datamodule(trainer) is None:  # fit on loaders: no full training set
        return out
    phase_data(trainer, "final_values")
    ev = module.evaluate(full_set(trainer, pl_module, "x_train"), full_set(trainer, pl_module, "y_train"))
    loss, n_delta = ev["loss"], ev["n_delta"]
    if isinstance(loss, list):
        loss, n_delta = loss[0], n_delta[0]
    out.update(loss=float(loss), n_delta=n_delta)
    return out
