"""outputs.npz: the final outputs F of a run on its train, test and kernel sets, beside summary.json."""

import numpy as np
import torch


def test_outputs_npz_equals_the_modules_outputs_at_the_end(tiny_run):
    """The shared tiny run (tests/conftest.py: built and fitted through run.build_run, float64, 4 steps)."""
    module, data = tiny_run.module, tiny_run.datamodule
    with np.load(tiny_run.run_dir / "outputs.npz") as z:
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
    summary = tiny_run.summary
    err = float(np.mean(out["test_y"] * out["test_F"] <= 0))
    assert summary["test_error"] == err and "outputs_error" not in summary
