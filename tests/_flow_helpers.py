"""Shared tiny fixtures for the gradient-flow and kernel-flow tests (plain Trainer, stand-in data)."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from lightning_phase.data import TensorLoader
from lightning_phase.nets import FullyConnected

D = 8  # input dimension of the toy data


class ToyData(pl.LightningDataModule):
    """Gaussian x (float64), y = sign(x₁ + 0.3x₂²); x_train, y_train, x_test, y_test as in PhaseDataModule."""

    def __init__(self, n_train: int = 64, n_test: int = 128, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n_train + n_test, D, generator=g, dtype=torch.float64)
        y = torch.sign(x[:, 0] + 0.3 * x[:, 1] ** 2)
        self.x_train, self.x_test = x[:n_train], x[n_train:]
        self.y_train, self.y_test = y[:n_train], y[n_train:]

    def train_dataloader(self):
        return TensorLoader(self.x_train, self.y_train)  # full batch: the same tensors every epoch


class StopAt(pl.Callback):
    """Stand-in for StopRules: stop once flow time t ≥ T, or (``half_loss``) at t₁ when α²L < ℓ(0)/2."""

    def __init__(self, T: float = math.inf, half_loss: bool = False):
        self.T, self.half_loss, self.t1 = T, half_loss, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.half_loss and float(outputs["loss_value"]) < float(pl_module.loss_fn(torch.zeros(()))) / 2:
            self.t1, trainer.should_stop = pl_module.flow_time, True
        if pl_module.flow_time >= self.T:
            trainer.should_stop = True


def fc(width: int, seed: int = 1) -> FullyConnected:
    """The toy net: L = 2 hidden layers, softplus β = 5 ([FL]), float64."""
    return FullyConnected(width, 2, "softplus", 5.0, input_dim=D, seed=seed).double()


def trainer(*callbacks, max_steps: int = 100_000, **kw) -> pl.Trainer:
    """A quiet float64 CPU trainer: no logger, checkpoints, progress bar, summary or sanity check."""
    opts = dict(max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, precision="64-true", num_sanity_val_steps=0, accelerator="cpu",
                devices=1, callbacks=list(callbacks))
    opts.update(kw)
    return pl.Trainer(**opts)
