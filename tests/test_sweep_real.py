"""Sweeps that train for real (`lightning-phase fit` in forked trial processes), kept to ~1 s per run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from optuna.trial import TrialState
from sweep_helpers import trials

from lightning_phase.run_name import trial_folder
from lightning_phase.sweep import commands

RANDOM_BASE = {   # fits in ~20-120 steps when over-parametrised; 300-step budget, stall check over 100
    "trainer": {"max_steps": 300},
    "model": {"net": {"class_path": "lightning_phase.nets.FullyConnected", "init_args": {"width": 8, "depth": 2}},
              "alpha_tilde": 10.0, "loss": "quadratic_hinge",
              "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.03}}},
    "data": {"dataset": "random", "n_train": 20, "n_test": 50, "dim": 10},
    "stop": {"when_fitted": True, "stall_window": 100, "stall_rtol": 0.01},
}


def _spec(path, **spec):
    path.write_text(yaml.safe_dump({"base": RANDOM_BASE, **spec}))
    return str(path)


def test_threshold_on_random_data_bisects_and_n_star_grows_with_p(tmp_path, capsys):
    """[JAM] random data, depth 2, P = 20 and 80, 3 seeds: h* by bisection on widths 1…16, at most
    log2(h_max/h_min) + 3 widths per seed per P, and N* = n_params(h*) larger at the larger P."""
    st = str(tmp_path / "s.journal")
    spec = _spec(tmp_path / "jam.yaml", grid={"data.n_train": [20, 80]},
                 threshold={"seeds": [0, 1, 2], "width_min": 1, "width_max": 16}, objective="n_delta_over_p")
    assert commands.main(["threshold", spec, "--storage", st, "--workers", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    ts = trials(st, "jam")
    assert ts and all(t.state == TrialState.COMPLETE for t in ts)
    assert all(t.user_attrs["n_train"] in (20, 80) for t in ts)   # summary.json → user attrs
    by_p: dict[int, set] = {20: set(), 80: set()}
    for t in ts:
        by_p[t.params["data.n_train"]].add(t.params["model.net.init_args.width"])
    for widths in by_p.values():
        assert len(widths) <= math.log2(16 / 1) + 3
    from lightning_phase.storage import open_storage

    storage = open_storage(st)
    res = storage.get_study_user_attrs(storage.get_study_id_from_name("jam"))["lp_threshold"]
    n_star = {r["group"]["data.n_train"]: r["n_star"] for r in res}
    assert None not in n_star.values(), out
    assert n_star[80] > n_star[20], out


def test_real_sweep_records_divergence_and_fit_summaries(tmp_path):
    st = str(tmp_path / "s.journal")
    spec = _spec(tmp_path / "div.yaml", grid={"model.optimizer.init_args.lr": [0.05, 1.0e30]},
                 fixed={"model.net.init_args.width": 16, "trainer.max_steps": 50,
                        "model.optimizer.class_path": "torch.optim.SGD"}, objective="train_loss")
    assert commands.main(["sweep", spec, "--storage", st, "--workers", "2", "--no-progress"]) == 0
    ts = {t.params["model.optimizer.init_args.lr"]: t for t in trials(st, "div")}
    ok, bad = ts[0.05], ts[1.0e30]
    assert ok.state == TrialState.COMPLETE and ok.value == ok.user_attrs["train_loss"]
    assert ok.user_attrs["width"] == 16
    assert bad.state == TrialState.FAIL and bad.user_attrs["fail_reason"] == "DIVERGED", bad.user_attrs


def test_typo_in_a_grid_key_fails_before_any_trial(tmp_path, capsys):
    st = str(tmp_path / "s.journal")
    spec = _spec(tmp_path / "typo.yaml", grid={"model.net.init_args.widht": [4, 8]})
    assert commands.main(["sweep", spec, "--storage", st, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "widht" in err, err
    assert trials(st, "typo") == []


def test_a_runs_own_config_yaml_is_a_sweep_base_and_the_grid_value_is_used(tmp_path):
    from lightning_phase.run import fit

    small = {**RANDOM_BASE, "trainer": {"max_steps": 5}}
    first = fit(small, [f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
                        "--trainer.enable_progress_bar=false"])
    config_yaml = Path(first["run_dir"]) / "config.yaml"
    assert config_yaml.is_file() and first["alpha_tilde"] == 10.0
    st = str(tmp_path / "s.journal")
    spec = tmp_path / "own.yaml"
    spec.write_text(yaml.safe_dump({"base": str(config_yaml), "grid": {"model.alpha_tilde": [3.0, 30.0]},
                                    "objective": "train_loss"}))
    assert commands.main(["sweep", str(spec), "--storage", st, "--no-progress"]) == 0
    ts = trials(st, "own")
    assert sorted(t.user_attrs["alpha_tilde"] for t in ts) == [3.0, 30.0]
    for t in ts:   # the trial's own resolved config.yaml holds its grid value, and re-runs alone
        resolved = yaml.safe_load((trial_folder(tmp_path / "runs" / "own", t.number) / "config.yaml").read_text())
        assert resolved["model"]["init_args"]["alpha_tilde"] == t.params["model.alpha_tilde"]


def test_bad_fixed_value_or_late_grid_value_fails_before_any_trial_and_writes_nothing(tmp_path, capsys):
    st = tmp_path / "s.journal"
    for name, extra in (("fixed", {"fixed": {"model.alpha_tilde": -1}, "grid": {"seed_everything": [0, 1]}}),
                        ("late", {"grid": {"model.net.init_args.width": [4, 0]}})):
        spec = _spec(tmp_path / f"{name}.yaml", **extra)
        before = set(tmp_path.rglob("*"))
        assert commands.main(["sweep", spec, "--storage", str(st), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("alpha_tilde" in err if name == "fixed" else "width" in err), err
        assert set(tmp_path.rglob("*")) == before and not st.exists()


def test_unsafe_study_names_are_refused(tmp_path, capsys):
    spec = _spec(tmp_path / "ok.yaml", grid={"seed_everything": [0]})
    for name in ("../../x", "/abs", ".hidden", "a b"):
        assert commands.main(["sweep", spec, "--storage", str(tmp_path / "s.journal"), "--study", name]) == 2
        assert "--study" in capsys.readouterr().err


def test_retried_trial_resumes_from_its_predecessors_checkpoint_and_ends_as_an_uninterrupted_run(tmp_path):
    """A trial killed by SIGKILL at step 14 (after its step-12 checkpoint) is ENVIRONMENT; its retry runs
    with --ckpt_path=<predecessor>/checkpoints/last.ckpt and ends, float64 on CPU, with exactly the weights,
    flow time and summary of the same run trained straight through."""
    import torch

    from lightning_phase.run import fit

    fixed = {"trainer.max_steps": 30, "checkpoint.every_n_steps": 4, "stop.when_fitted": False,
             "stop.stall_window": 5, "stop.stall_rtol": 0, "model.optimizer.class_path": "torch.optim.SGD",
             "model.optimizer.init_args.lr": 0.05}
    st = str(tmp_path / "s.journal")
    spec = _spec(tmp_path / "resume.yaml", grid={"seed_everything": [3]}, fixed=fixed, objective="train_loss")
    runs = tmp_path / "runs"
    assert commands.main(["sweep", spec, "--storage", st, "--no-progress", "--runs-dir", str(runs),
                          "--runner", "resume_runner:run_fit_killed_once"]) == 0
    first, retry = sorted(trials(st, "resume"), key=lambda t: t.number)
    assert (first.state, first.user_attrs["fail_reason"]) == (TrialState.FAIL, "ENVIRONMENT")
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["retry_history"] == [first.number]
    ckpt = trial_folder(runs / "resume", first.number) / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == 12
    args = yaml.safe_load((trial_folder(runs / "resume", retry.number) / "trial_args.yaml").read_text())
    assert f"--ckpt_path={ckpt}" in args["overrides"]
    from lightning_phase.analysis.events import read_scalars

    logged = read_scalars(trial_folder(runs / "resume", retry.number), ["train/n_delta"])["train/n_delta"][0]
    assert logged.min() > 12    # the retry trained on from step 12, not from step 0

    straight = fit(RANDOM_BASE, [*(f"--{k}={v}" for k, v in fixed.items()), "--seed_everything=3",
                                 f"--trainer.logger.init_args.save_dir={tmp_path / 'straight'}"])
    resumed = json.loads((trial_folder(runs / "resume", retry.number) / "summary.json").read_text())
    assert resumed["steps"] == straight["steps"] == 30
    for key in ("train_loss", "n_delta", "test_error", "train_error", "flow_time", "stop_reason"):
        assert resumed[key] == straight[key], key
    assert retry.value == straight["train_loss"]
    w_resumed = torch.load(trial_folder(runs / "resume", retry.number) / "checkpoints" / "last.ckpt",
                           weights_only=False)
    w_straight = torch.load(next((tmp_path / "straight").rglob("last.ckpt")), weights_only=False)
    assert w_resumed["global_step"] == w_straight["global_step"]
    for name, p in w_straight["state_dict"].items():
        assert p.dtype != torch.float32 and torch.equal(p, w_resumed["state_dict"][name]), name
