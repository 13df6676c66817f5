"""The fit progress bar ends on the run's true final values; off a terminal it prints one line, no redraws."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_phase.callbacks import StepProgressBar
from lightning_phase.run import _execute, build

QUICK = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
SMALL = ["--data.n_train=100", "--data.n_test=100", "--model.net.init_args.width=16", "--trainer.max_steps=300"]


@pytest.mark.parametrize("members", [1, 2])
def test_bar_final_values_equal_the_summary_and_no_bar_is_redrawn_off_terminal(members, capsys):
    run = build(QUICK, [*SMALL, f"--model.members={members}"])
    bar = next(c for c in run.trainer.callbacks if isinstance(c, StepProgressBar))
    assert run.trainer.callbacks.index(bar) == 0  # its on_train_end runs before the end-of-run measurements
    record = _execute(run, "fit")
    assert bar.final["n_delta"] == record["n_delta"]
    assert bar.final["loss"] == record["train_loss"]
    assert bar.final["t"] == record["flow_time"]
    err = capsys.readouterr().err
    assert "\r" not in err  # pytest's captured stderr is not a terminal: no redrawn bar
    lines = [ln for ln in err.splitlines() if ln.startswith("train:")]
    assert lines == [f"train: {run.trainer.global_step} steps, loss={record['train_loss']:.3e}, "
                     f"n_delta={record['n_delta']}, t={record['flow_time']:.3g}"]
