"""outputs.npz: every run saves its final outputs F on train, test and kernel sets, float64, beside summary.json."""

from __future__ import annotations

import json

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from test_callbacks import TinyData

from lightning_phase import PhaseModule
from lightning_phase.callbacks import RunSummary
from lightning_phase.nets import FullyConnected


def test_outputs_npz_equals_the_modules_outputs_at_the_end(tmp_path):
    data = TinyData(n_train=30, n_kernel=7)
    net = FullyConnected(8, 2, "softplus", 3.0, input_dim=data.input_dim, seed=0)
    module = PhaseModule(net, alpha_tilde=2.0, loss="soft_hinge", optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision="64-true", max_steps=5,
                         logger=TensorBoardLogger(tmp_path, name="tb"), callbacks=[RunSummary()],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    run = tmp_path / "tb" / "version_0"
    with np.load(run / "outputs.npz") as z:
        out = {k: z[k] for k in z.files}
    assert sorted(out) == ["kernel_F", "kernel_y", "test_F", "test_y", "train_F", "train_y"]
    with torch.no_grad():
        for split in ("train", "test", "kernel"):
            x, y = getattr(data, f"x_{split}").double(), getattr(data, f"y_{split}").double()
            F = module(x)
            assert out[f"{split}_F"].dtype == np.float64 and out[f"{split}_F"].shape == (len(x),)
            np.testing.assert_array_equal(out[f"{split}_F"], F.numpy())
            np.testing.assert_array_equal(out[f"{split}_y"], y.numpy())
    assert np.abs(out["train_F"]).max() > 0          # trained: F ≠ 0 (F ≡ 0 at w₀)
    summary = json.loads((run / "summary.json").read_text())
    err = float(np.mean(out["test_y"] * out["test_F"] <= 0))
    assert summary["test_error"] == err and "outputs_error" not in summary
