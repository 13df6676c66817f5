"""DDP on CPU: 2 processes with gloo follow the single-process full-batch trajectory exactly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _runs import run_dir_in

QUICK = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")


def _fit(name: str, *args: str) -> dict:
    exe = Path(sys.executable).with_name("lightning-phase")
    if not exe.exists():
        pytest.skip("the lightning-phase console script is not installed (pip install -e .)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(exe), "fit", "--config", QUICK, "--trainer.enable_progress_bar=false",
                          f"--trainer.logger.init_args.name={name}", *args],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((run_dir_in(f"runs/{name}") / "summary.json").read_text())


def _scalars(name: str, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir_in(f"runs/{name}"))).Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


def test_two_process_ddp_follows_the_single_process_run_and_sums_n_delta():
    ddp = _fit("ddp", "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu")
    one = _fit("single")
    # Equal shards (P = 500): the all-reduced mean gradient is the full-batch gradient, step for step.
    assert ddp["stop_reason"] == one["stop_reason"] == "ALL_MARGINS_MET"  # the stop decision is global
    assert ddp["steps"] == one["steps"]
    assert ddp["train_loss"] == pytest.approx(one["train_loss"], rel=1e-9)
    assert ddp["test_error"] == one["test_error"] and ddp["n_delta"] == one["n_delta"] == 0
    n_ddp, n_one = _scalars("ddp", "train/n_delta"), _scalars("single", "train/n_delta")
    assert n_ddp and n_ddp == n_one  # N_Δ summed over the two shards, not rank 0's half
    assert max(n_one.values()) > 100
