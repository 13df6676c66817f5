"""Sweeps: spec checks, exactly-once grid points under SIGKILL and restart, failure reasons, results table,
and the h* bisection. The machinery tests use the toy runner (no training); test_sweep_real.py runs the
real `lightning-phase fit`."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sweep_helpers import TOY, check_exactly_once, kill_and_restart, start, trials, write_spec
from toy_runner import toy_n_params

from lightning_phase.sweep import commands, expand_values, parse_spec
from lightning_phase.sweep.spec import ThresholdSpec
from lightning_phase.sweep.threshold import max_widths, search


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # runs/ of every sweep under the test's own folder


# ---- spec ---------------------------------------------------------------------------------------
def test_value_forms_expand_to_the_documented_lists():
    assert expand_values("w", {"range": [8, 64, 8]}) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert expand_values("a", {"logspace": [-2, 2, 5]}) == [0.01, 0.1, 1.0, 10.0, 100.0]
    assert expand_values("h", {"geomspace": [8, 256, 6]}) == [8, 16, 32, 64, 128, 256]
    assert expand_values("s", [0, 1, 2]) == [0, 1, 2]


def test_grid_points_are_the_product_in_sorted_key_order():
    spec = parse_spec({"base": {"model": {}}, "grid": {"seed_everything": [0, 1], "model.alpha_tilde": [1.0, 2.0]}})
    assert spec.n_points == 4
    assert spec.points()[1] == {"model.alpha_tilde": 1.0, "seed_everything": 1}
    assert spec.overrides({"model.net.init_args.width": 5, "seed_everything": 3, "model.loss": "null",
                           "trainer.logger": False}) == [
        "--model.net.init_args.width=5", "--seed_everything=3", '--model.loss="null"', "--trainer.logger=false"]


@pytest.mark.parametrize("spec, field", [
    ({"grid": {"seed_everything": [0]}, "gird": {}}, "spec key"),
    ({"grid": {}}, "grid"),
    ({"grid": {"model.net.init_args.width": {"range": [8, 64]}}}, "grid.model.net.init_args.width.range"),
    ({"grid": {"model.net.init_args.width": {"range": [64, 8, 8]}}}, "range"),
    ({"grid": {"model.alpha_tilde": {"logspace": [-2, 2, 0]}}}, "logspace"),
    ({"grid": {"model.alpha_tilde": {"linspace": [0, 1, 3]}}}, "grid.model.alpha_tilde"),
    ({"grid": {"seed_everything": [0, 0]}}, "grid.seed_everything"),
    ({"grid": {"seed_everything": [0]}, "objective": "test error"}, "objective"),
    ({"grid": {"seed_everything": [0]}, "direction": "down"}, "direction"),
    ({"threshold": {"seeds": [0], "width_min": 8}}, "threshold.width_max"),
])
def test_bad_sweep_file_fails_at_once_with_one_line(tmp_path, capsys, spec, field):
    path = write_spec(tmp_path / "bad.yaml", **spec)
    cmd = "threshold" if "threshold" in spec else "sweep"
    assert commands.main([cmd, str(path), "--storage", str(tmp_path / "s.journal"), "--runner", TOY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and field in err, err


@pytest.mark.parametrize("storage", ["postgresql://nobody@127.0.0.1:1/none", "/no/such/dir/s.journal",
                                     "redis://localhost", "mysql://nobody@127.0.0.1:1/none"])
def test_unreachable_storage_fails_at_once_with_one_line(tmp_path, capsys, storage):
    path = write_spec(tmp_path / "ok.yaml", grid={"seed_everything": [0]})
    assert commands.main(["sweep", str(path), "--storage", storage, "--runner", TOY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--storage" in err, err


def test_continuing_a_study_with_a_different_grid_is_refused(tmp_path, capsys):
    st = str(tmp_path / "s.journal")
    a = write_spec(tmp_path / "a.yaml", grid={"seed_everything": [0]})
    b = write_spec(tmp_path / "b.yaml", grid={"seed_everything": [0, 1]})
    assert commands.main(["sweep", str(a), "--storage", st, "--study", "x", "--runner", TOY, "--no-progress"]) == 0
    assert commands.main(["sweep", str(b), "--storage", st, "--study", "x", "--runner", TOY, "--no-progress"]) == 2
    assert "grid" in capsys.readouterr().err.splitlines()[-1]


# ---- workers, storage, restarts --------------------------------------------------------------
def test_killed_worker_point_redone_once_and_restart_loses_nothing_journal(tmp_path):
    kill_and_restart(tmp_path, str(tmp_path / "sweeps.journal"))


def test_failed_runs_are_recorded_with_their_reason_and_do_not_block(tmp_path):
    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "fail.yaml", grid={"model.loss": ["soft_hinge", "toy_crash", "toy_diverge",
                                                                    "toy_segv"]}, objective="n_delta_over_p")
    proc = start(["sweep", str(spec), "--storage", st, "--workers", "2", "--runner", TOY, "--no-progress",
                  "--runs-dir", str(tmp_path / "runs")])
    proc.join(60)
    assert proc.exitcode == 0
    ts = {t.params["model.loss"]: t for t in trials(st, "fail")}
    ok = ts["soft_hinge"]
    assert ok.state == TrialState.COMPLETE and ok.value == ok.user_attrs["n_delta"] / 40
    run_dir = Path(ok.user_attrs["run_dir"])
    assert run_dir.parent == tmp_path / "runs" / "fail" and run_dir.name.startswith(f"trial_{ok.number:05d}_")
    assert (run_dir / "summary.json").is_file()
    reasons = {k: (t.state, t.user_attrs.get("fail_reason")) for k, t in ts.items() if k != "soft_hinge"}
    assert reasons == {"toy_crash": (TrialState.FAIL, "CRASHED"), "toy_diverge": (TrialState.FAIL, "DIVERGED"),
                       "toy_segv": (TrialState.FAIL, "KILLED")}
    assert "toy crash requested" in ts["toy_crash"].user_attrs["error"]
    assert "SIGSEGV" in ts["toy_segv"].user_attrs["error"]
    assert len(trials(st, "fail")) == 4   # final failures are not retried


def test_oom_killed_trial_is_an_environment_failure_retried_now_and_on_rerun(tmp_path):
    """A trial process SIGKILLed while its worker lives (the OOM killer; here the toy run kills itself) is
    ENVIRONMENT, not a final KILLED: retried 3 times at once (WorkerOptions.max_retries), then once more on every rerun;
    the command says the point is to redo and exits 1."""
    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "oom.yaml", grid={"model.loss": ["soft_hinge", "toy_kill"]})
    argv = ["sweep", str(spec), "--storage", st, "--runner", TOY, "--no-progress", "--runs-dir", str(tmp_path)]
    assert commands.main(argv) == 1
    killed = [t for t in trials(st, "oom") if t.system_attrs["grid_id"] == 1]
    assert [t.state for t in killed] == [TrialState.FAIL] * 4                  # the first and 3 retries
    assert {t.user_attrs["fail_reason"] for t in killed} == {"ENVIRONMENT"}
    assert "SIGKILL" in killed[0].user_attrs["error"]
    assert [t.system_attrs.get("retry_history") for t in killed] == [None, [0 + killed[0].number],
                                                                    [killed[0].number, killed[1].number],
                                                                    [t.number for t in killed[:3]]]
    assert commands.main(argv) == 1                                             # the rerun redoes it once
    again = [t for t in trials(st, "oom") if t.system_attrs["grid_id"] == 1]
    assert len(again) == 5 and again[-1].system_attrs["retry_history"][-1] == killed[-1].number
    done = [t for t in trials(st, "oom") if t.system_attrs["grid_id"] == 0]
    assert [t.state for t in done] == [TrialState.COMPLETE]                     # the good point ran once


def test_results_lists_every_trial_with_params_summary_and_state(tmp_path, capsys):
    from lightning_phase.cli import main as cli_main

    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "res.yaml", grid={"model.net.init_args.width": [4, 2], "seed_everything": [0]})
    assert commands.main(["sweep", str(spec), "--storage", st, "--runner", TOY, "--no-progress"]) == 0
    capsys.readouterr()
    assert cli_main(["results", "res", "--storage", st, "--csv", str(tmp_path / "r.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["trial", "state", "width", "seed_everything", "value"] and len(out) == 3
    assert [line.split()[2] for line in out[1:]] == ["2", "4"]                # sorted by the grid keys
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [r["model.net.init_args.width"] for r in rows] == ["2", "4"]
    assert {"state", "n_delta", "n_params", "test_error", "stop_reason", "run_dir", "config_hash"} <= set(rows[0])
    assert "config" not in rows[0]
    assert cli_main(["results", "nope", "--storage", st]) == 2


# ---- threshold ----------------------------------------------------------------------------------
@pytest.mark.parametrize("wmin, wmax", [(1, 64), (2, 64), (4, 100), (4, 135), (1, 7)])
def test_bisection_finds_h_star_within_log2_plus_3_widths(wmin, wmax):
    thr = ThresholdSpec(seeds=(0,), width_min=wmin, width_max=wmax)
    for h_star in range(wmin, wmax + 1):
        fitted: dict[int, bool] = {}
        while (s := search(thr, fitted)).next_width is not None:
            fitted[s.next_width] = s.next_width >= h_star
        assert s.h_star == h_star and s.bracket == (h_star - 1, h_star)
        assert len(fitted) <= max_widths(thr) <= math.log2(wmax / wmin) + 3
        assert s.open_below == (h_star == wmin)


def test_bisection_doubles_the_bracket_when_width_max_does_not_fit():
    thr = ThresholdSpec(seeds=(0,), width_min=1, width_max=8, max_doublings=2)
    for h_star, expect in ((20, 20), (40, None)):
        fitted: dict[int, bool] = {}
        while (s := search(thr, fitted)).next_width is not None:
            fitted[s.next_width] = s.next_width >= h_star
        assert s.h_star == expect and s.open_above == (expect is None)


def test_threshold_search_on_toy_runs_is_resumable_and_n_star_grows_with_p(tmp_path, capsys):
    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "thr.yaml", grid={"data.n_train": [40, 80]},
                      threshold={"seeds": [0, 1, 2], "width_min": 1, "width_max": 32})
    argv = ["threshold", str(spec), "--storage", st, "--workers", "2", "--runner", TOY, "--no-progress"]
    assert commands.main(argv) == 0
    res = {r["group"]["data.n_train"]: r for r in _threshold_attr(st, "thr")}
    for p, r in res.items():
        # toy: fitted iff N ≥ P/2·(1 + 0.1u); majority of 3 seeds → the median seed's threshold
        assert toy_n_params(r["h_star"], 2, 10) >= p / 2 * 0.9 and toy_n_params(r["h_star"] - 1, 2, 10) < p / 2 * 1.1
        assert len(r["widths"]) <= math.log2(32 / 1) + 3
        assert len(r["trials"]) == 3 * len(r["widths"])
    assert res[80]["n_star"] > res[40]["n_star"]
    n_before = len(trials(st, "thr"))
    assert commands.main(argv) == 0   # resumed: every answer is already in the study
    assert len(trials(st, "thr")) == n_before
    assert "h*=" in capsys.readouterr().out


def _threshold_attr(storage, study):
    from lightning_phase.storage import open_storage

    st = open_storage(storage)
    return st.get_study_user_attrs(st.get_study_id_from_name(study))["lp_threshold"]


def test_two_sweeps_of_the_same_study_share_the_grid(tmp_path):
    """Two sweep commands at once (two machines): still one COMPLETE trial per point."""
    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "two.yaml", grid={"model.net.init_args.width": {"range": [1, 8, 1]}})
    argv = ["sweep", str(spec), "--storage", st, "--workers", "1", "--runner", TOY, "--no-progress"]
    a, b = start(argv), start(argv)
    a.join(60)
    b.join(60)
    assert a.exitcode == 0 and b.exitcode == 0
    check_exactly_once(trials(st, "two"), 8)


def test_sweep_prints_one_line_per_finished_trial_and_no_bar_off_terminal(tmp_path, capsys):
    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "lines.yaml", grid={"model.net.init_args.width": [2, 16], "seed_everything": [0]})
    assert commands.main(["sweep", str(spec), "--storage", st, "--runner", TOY]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err  # captured stderr is not a terminal: no redrawn bar
    lines = sorted(ln for ln in err.splitlines() if ln.startswith("trial "))
    assert len(lines) == 2
    assert {ln.split("width=")[1].split()[0] for ln in lines} == {"2", "16"}  # each point once
    for line in lines:
        assert "seed_everything=0" in line and "test_error=" in line and "n_delta=" in line
        assert "n_delta_tol=" in line and "fit_state=" in line
        assert line.endswith(" s") and ("ALL_MARGINS_MET" in line or "STEP_BUDGET" in line)


def test_a_point_enqueued_twice_runs_once_and_the_duplicate_is_surplus(tmp_path):
    """Two commands that enqueue the same point at once (grid.py, rule 5): the lower-numbered trial holds
    the point, the other is recorded SURPLUS without running."""
    from lightning_phase.storage import open_storage
    from lightning_phase.sweep.grid import GRID_ID

    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "dup.yaml", grid={"model.net.init_args.width": [2, 4]})
    study = optuna.create_study(storage=open_storage(st), study_name="dup")
    for _ in range(2):
        for k, width in enumerate([2, 4]):
            study.add_trial(optuna.trial.create_trial(
                state=TrialState.WAITING,
                system_attrs={"fixed_params": {"model.net.init_args.width": width}, GRID_ID: k}))
    assert commands.main(["sweep", str(spec), "--storage", st, "--runner", TOY, "--no-progress",
                          "--runs-dir", str(tmp_path / "runs")]) == 0
    ts = trials(st, "dup")
    check_exactly_once(ts, 2)
    assert [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in ts if t.number >= 2] == \
        [(2, TrialState.FAIL, "SURPLUS"), (3, TrialState.FAIL, "SURPLUS")]
    assert not list((tmp_path / "runs" / "dup").glob("trial_00002*"))   # nothing ran


def test_threshold_run_killed_every_time_ends_failed_not_enqueued_for_ever(tmp_path, capsys):
    """Every run SIGKILLed (an OOM at any width): each is retried 3 times, then counts as FAILED (not
    fitted), so the search ends — nothing fits — instead of enqueuing the same run again and again."""
    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "oomthr.yaml", fixed={"model.loss": "toy_kill"},
                      threshold={"seeds": [0], "width_min": 1, "width_max": 2, "max_doublings": 0})
    argv = ["threshold", str(spec), "--storage", st, "--runner", TOY, "--no-progress",
            "--runs-dir", str(tmp_path / "runs")]
    assert commands.main(argv) == 0
    (res,) = _threshold_attr(st, "oomthr")
    assert res["finished"] and res["h_star"] is None and res["widths"] == [1, 2]   # ⌈log2(3)⌉ = 2 widths
    ts = trials(st, "oomthr")
    assert len(ts) == 2 * 4 and {t.user_attrs["fail_reason"] for t in ts} == {"ENVIRONMENT"}
