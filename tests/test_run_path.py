"""Run-path leftovers of issue 10: a nested ``--key=null`` override, and ``fit --ckpt_path`` continuing in
the checkpoint's own run dir."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import tiny_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_phase.cli import main
from lightning_phase.run import build, null_overrides


def test_nested_null_override_becomes_a_config_fragment():
    assert null_overrides(["--model.net.init_args.seed=null", "--stop.max_time=null", "--a.b.c", "~", "--x.y.z=3"]) \
        == ["--config", "model:\n  net:\n    init_args:\n      seed: null\n", "--stop.max_time=null",
            "--config", "a:\n  b:\n    c: null\n", "--x.y.z=3"]


def test_null_for_a_nested_class_argument_overrides_an_earlier_value():
    """jsonargparse passes ``--model.net.init_args.seed=null`` on as the string 'None' ("got 'None';
    expected an int or null"); it now sets the net's seed to null, after an earlier override set it."""
    base = tiny_config(max_steps=1)
    base["trainer"]["logger"] = False
    run = build(base, ["--model.net.init_args.seed=3", "--model.net.init_args.seed=null"])
    assert run.config["model"]["init_args"]["net"]["init_args"]["seed"] is None
    assert run.config["model"]["init_args"]["net"]["init_args"]["width"] == 8  # the rest of the net is kept
    run = build(base, ["--model.net.seed=null", "--model.net.init_args.seed=4"])
    assert run.config["model"]["init_args"]["net"]["init_args"]["seed"] == 4  # order is kept


def test_bad_key_with_null_is_named_as_written(capsys):
    Path("c.yaml").write_text(yaml.safe_dump(tiny_config(max_steps=1)))
    assert main(["fit", "--config", "c.yaml", "--model.net.init_args.sed=null"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.net.init_args.sed: got an unknown key" in err
    assert not Path("runs").exists()


def _steps(run_dir: Path, tag: str) -> list[int]:
    ev = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return [e.step for e in ev.Scalars(tag)]


def test_resumed_fit_continues_in_the_checkpoints_run_dir(capsys):
    """fit 4 steps (checkpoint every 2), then ``fit --ckpt_path <run>/checkpoints/last.ckpt`` to 6 steps:
    no second run folder; the same folder's summary.json is overwritten (steps 6), its TensorBoard scalars
    go on from step 4, its checkpoint is the step-6 one."""
    Path("c.yaml").write_text(yaml.safe_dump(tiny_config(max_steps=4)))
    assert main(["fit", "--config", "c.yaml"]) == 0
    (run,) = Path("runs/tiny").iterdir()
    first = json.loads((run / "summary.json").read_text())
    assert first["steps"] == 4 and _steps(run, "train/loss")[-1] == 3
    ckpt = run / "checkpoints" / "last.ckpt"
    assert main(["fit", "--config", "c.yaml", "--trainer.max_steps=6", f"--ckpt_path={ckpt}"]) == 0
    assert list(Path("runs/tiny").iterdir()) == [run]
    second = json.loads((run / "summary.json").read_text())
    assert second["steps"] == 6 and second["run_dir"] == first["run_dir"]
    assert second["flow_time"] == 6 * 0.5  # SGD lr 0.5: the clock went on from t = 2
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # TensorBoard reads both files of the folder
    steps = _steps(run, "train/loss")
    assert steps == sorted(steps) and steps[-1] == 5 and 4 in steps
    import torch

    assert torch.load(ckpt, weights_only=False)["global_step"] == 6
