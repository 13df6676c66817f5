"""PeriodicCheckpoint: ``<run dir>/checkpoints/last.ckpt`` every k steps, every m minutes, and on SIGTERM.

A checkpoint holds the weights, the optimiser state, the flow time t (``PhaseModule.on_save_checkpoint``)
and every callback's state (stop-rule history, schedules), so ``lightning-phase fit --config <config.yaml>
--ckpt_path <run dir>/checkpoints/last.ckpt`` continues the same run: on CPU in float64 it ends
bit-identical to an uninterrupted one. Written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lightning_phase.callbacks.summary import run_dir
from lightning_phase.errors import check_bool, check_positive_float, check_positive_int
from lightning_phase.summary import fsync_dir

CHECKPOINT_FILE = "last.ckpt"


class PeriodicCheckpoint(pl.Callback):
    """every_n_steps: save every k optimiser steps (None: off). every_minutes: save when m minutes of wall
    time passed since the last save (None: off; a safety net for long runs, never a physics budget).
    on_sigterm: save at the step where SIGTERM arrived (the run then ends INTERRUPTED)."""

    def __init__(self, every_n_steps: int | None = None, every_minutes: float | None = None,
                 on_sigterm: bool = True):
        self.every_n_steps = None if every_n_steps is None else check_positive_int("checkpoint.every_n_steps",
                                                                                   every_n_steps)
        self.every_minutes = None if every_minutes is None else check_positive_float("checkpoint.every_minutes",
                                                                                     every_minutes)
        self.on_sigterm = check_bool("checkpoint.on_sigterm", on_sigterm)
        self._t_last = time.monotonic()
        self.path: Path | None = None
        self._saved_step: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t_last = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        due = (self.every_n_steps is not None and step % self.every_n_steps == 0) or \
              (self.every_minutes is not None and time.monotonic() - self._t_last >= 60 * self.every_minutes) or \
              (self.on_sigterm and trainer.received_sigterm)
        if due:
            self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """SIGTERM that arrived after this step's hook: Lightning stops with SIGTERMException at the end of the
        step (the weights are consistent); save that step unless it was saved already."""
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if self.on_sigterm and isinstance(exception, SIGTERMException) and self._saved_step != trainer.global_step:
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> Path | None:
        """Write the checkpoint now (every rank joins; rank 0 writes); returns its path."""
        folder = run_dir(trainer)
        if folder is None:
            return None
        path = Path(folder) / "checkpoints" / CHECKPOINT_FILE
        tmp = path.with_name(f"{CHECKPOINT_FILE}.{os.getpid()}.tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
        self._t_last = time.monotonic()
        self.path, self._saved_step = path, trainer.global_step
        return path

    def summary(self) -> dict[str, Any]:
        return {"checkpoint": None if self.path is None else str(self.path)}
