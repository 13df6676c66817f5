"""A step-based progress bar: full-batch runs have one step per epoch, so epochs are the wrong unit."""

from __future__ import annotations

import sys
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar
from tqdm.auto import tqdm


class StepProgressBar(ProgressBar):
    """One bar over ``trainer.max_steps`` showing α²L, N_Δ and flow time t, refreshed every ``refresh_rate`` steps."""

    def __init__(self, refresh_rate: int = 25):
        super().__init__()
        self.refresh_rate = max(int(refresh_rate), 1)
        self._enabled = True
        self.bar: tqdm | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero:
            total = trainer.max_steps if trainer.max_steps > 0 else None
            self.bar = tqdm(total=total, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr,
                            initial=trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.bar is None or trainer.global_step % self.refresh_rate:
            return
        self.bar.n = trainer.global_step
        if isinstance(outputs, dict) and "n_delta" in outputs:
            self.bar.set_postfix(loss=f"{float(outputs['loss_value']):.3e}", n_delta=int(outputs["n_delta"]),
                                 t=f"{getattr(pl_module, 'flow_time', 0.0):.3g}", refresh=False)
        self.bar.refresh()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.bar.n = trainer.global_step
            self.bar.refresh()
            self.bar.close()
            self.bar = None
