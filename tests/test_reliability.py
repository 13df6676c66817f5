"""Nothing lost: non-finite runs give null metrics and DIVERGED, summary.json is whole or absent, signals
end a run INTERRUPTED."""

from __future__ import annotations

import json
from pathlib import Path

from lightning_phase.callbacks.stopping import StopReason, StopRules
from lightning_phase.run import fit

TINY = {   # ~0.5 s: random data, P = 20
    "trainer": {"max_steps": 40, "enable_progress_bar": False,
                "logger": {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                           "init_args": {"save_dir": "runs", "name": "t", "version": "v"}}},
    "model": {"net": {"class_path": "lightning_phase.nets.FullyConnected", "init_args": {"width": 8, "depth": 2}},
              "alpha_tilde": 1.0, "loss": "quadratic_hinge",
              "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}},
    "data": {"dataset": "random", "n_train": 20, "n_test": 20, "dim": 5},
}


def _summary() -> dict:
    return json.loads(Path("runs/t/v/summary.json").read_text())   # strict JSON: no NaN literal inside


def test_diverge_rule_fires_on_a_hundredfold_rise_or_a_non_finite_loss():
    rules = StopRules(when_fitted=False)
    assert [rules._decide(v, 5, 0.0, 0.0) for v in (1.0, 50.0, 99.0)] == [None, None, None]
    assert rules._decide(100.5, 5, 0.0, 0.0) is StopReason.DIVERGED
    off = StopRules(when_fitted=False, diverge_factor=None)
    assert [off._decide(v, 5, 0.0, 0.0) for v in (1.0, 1e9)] == [None, None]
    assert off._decide(float("nan"), 5, 0.0, 0.0) is StopReason.DIVERGED


def test_nan_run_has_null_metrics_never_n_delta_zero():
    rec = fit(TINY, ["--model.optimizer.init_args.lr=1e30"])
    s = _summary()
    assert s["stop_reason"] == rec["stop_reason"] == "DIVERGED" and s["status"] == "diverged"
    assert s["n_delta"] is None and s["train_error"] is None and s["test_error"] is None, s
    assert s["steps"] < 40


def test_exploded_but_finite_run_is_diverged():
    """Soft hinge (|ℓ'| ≤ 1, so the weights stay finite) at lr 1e8: α²L rises far above ℓ(0)."""
    fit(TINY, ["--model.loss=soft_hinge", "--model.optimizer.init_args.lr=1e8"])
    s = _summary()
    assert s["stop_reason"] == "DIVERGED" and s["steps"] < 40, s
    assert s["train_loss"] is None or s["train_loss"] > 100   # finite or not, never a result


def test_stable_run_is_not_diverged():
    fit(TINY)
    s = _summary()
    assert s["stop_reason"] != "DIVERGED" and isinstance(s["n_delta"], int) and s["train_loss"] < 0.5


def _fit_child(argv):
    import os

    from lightning_phase.run import main_fit

    os._exit(main_fit(argv))


def test_sigterm_ends_fit_non_zero_with_interrupted(tmp_path):
    import multiprocessing
    import os
    import signal
    import time

    import yaml

    Path("tiny.yaml").write_text(yaml.safe_dump(TINY))
    proc = multiprocessing.get_context("fork").Process(
        target=_fit_child, args=(["--config", "tiny.yaml", "--trainer.max_steps=1000000", "--stop.when_fitted=false",
                                  "--checkpoint.every_n_steps=50"],))
    proc.start()
    t0 = time.time()   # a first checkpoint: the training loop (and Lightning's SIGTERM handler) is running
    while not Path("runs/t/v/checkpoints/last.ckpt").exists() and time.time() - t0 < 120:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(60)
    assert proc.exitcode == 143
    s = _summary()
    assert s["stop_reason"] == "INTERRUPTED" and 0 < s["steps"] < 1000000
    import torch

    ckpt = torch.load("runs/t/v/checkpoints/last.ckpt", weights_only=False)   # saved at the SIGTERM step
    assert ckpt["global_step"] == s["steps"]


def _full_once(path, obj):
    """write_json_atomic on a disk that is full once: the first call (in any process) fails with ENOSPC."""
    import errno
    import os

    from lightning_phase.summary import write_json_atomic as real

    if os.path.exists("disk_full_once"):
        os.unlink("disk_full_once")
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(path, obj)


def test_unwritable_summary_prints_the_record_and_exits_3(monkeypatch, capsys):
    import yaml

    from lightning_phase.callbacks import summary as summary_mod
    from lightning_phase.run import ResultNotWritten, main_fit

    monkeypatch.setattr(summary_mod, "write_json_atomic", _full_once)
    Path("disk_full_once").touch()
    Path("tiny.yaml").write_text(yaml.safe_dump(TINY))
    assert main_fit(["--config", "tiny.yaml"]) == 3
    err = capsys.readouterr().err
    assert '"n_delta"' in err and "No space left" in err
    assert not list(Path("runs").rglob("summary.json*"))   # no summary, no partial temporary file
    Path("disk_full_once").touch()
    try:
        fit(TINY)
        raise AssertionError("no error")
    except ResultNotWritten as exc:
        assert exc.record["n_train"] == 20


def test_sweep_trial_whose_summary_cannot_be_written_keeps_its_record_and_is_redone(monkeypatch, tmp_path):
    import yaml
    from optuna.trial import TrialState
    from sweep_helpers import trials

    from lightning_phase.callbacks import summary as summary_mod
    from lightning_phase.summary import trial_record
    from lightning_phase.sweep import commands

    monkeypatch.setattr(summary_mod, "write_json_atomic", _full_once)
    Path("disk_full_once").touch()
    Path("spec.yaml").write_text(yaml.safe_dump({"base": {k: v for k, v in TINY.items() if k != "trainer"},
                                                 "grid": {"seed_everything": [0]}, "objective": "train_loss"}))
    st = str(tmp_path / "s.journal")
    assert commands.main(["sweep", "spec.yaml", "--storage", st, "--no-progress"]) == 0
    ts = sorted(trials(st, "spec"), key=lambda t: t.number)
    assert [t.state for t in ts] == [TrialState.FAIL, TrialState.COMPLETE]
    assert ts[0].user_attrs["fail_reason"] == "ENVIRONMENT" and trial_record(ts[0].user_attrs)["n_train"] == 20
    assert ts[1].system_attrs["retry_history"] == [0]


def test_resume_from_checkpoint_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    """float64 CPU, stall rule on (its history is callback state): 30 steps straight vs 12 steps with a
    checkpoint, then `fit --ckpt_path` to 30 — same weights bit for bit, same flow time and summary."""
    import torch

    from lightning_phase.run import build

    def logger(version):
        return f'--trainer.logger={{"class_path": "pytorch_lightning.loggers.TensorBoardLogger", "init_args": ' \
               f'{{"save_dir": "runs", "name": "r", "version": "{version}"}}}}'

    common = ["--stop.when_fitted=false", "--stop.stall_window=5", "--stop.stall_rtol=0",
              "--model.optimizer.init_args.lr=0.05"]
    straight = build(TINY, [*common, logger("a"), "--trainer.max_steps=30"])
    straight.trainer.fit(straight.module, datamodule=straight.datamodule)
    first = build(TINY, [*common, logger("b"), "--trainer.max_steps=12", "--checkpoint.every_n_steps=4"])
    first.trainer.fit(first.module, datamodule=first.datamodule)
    ckpt = Path("runs/r/b/checkpoints/last.ckpt")
    assert ckpt.is_file() and torch.load(ckpt, weights_only=False)["global_step"] == 12
    resumed = build(TINY, [*common, logger("c"), "--trainer.max_steps=30", f"--ckpt_path={ckpt}"])
    resumed.trainer.fit(resumed.module, datamodule=resumed.datamodule, ckpt_path=resumed.ckpt_path)
    for p, q in zip(straight.module.parameters(), resumed.module.parameters(), strict=True):
        assert p.dtype == torch.float64 and torch.equal(p, q)
    assert resumed.module.flow_time == straight.module.flow_time
    a = json.loads(Path("runs/r/a/summary.json").read_text())
    c = json.loads(Path("runs/r/c/summary.json").read_text())
    for key in ("steps", "train_loss", "n_delta", "test_error", "flow_time", "stop_reason"):
        assert a[key] == c[key], key
