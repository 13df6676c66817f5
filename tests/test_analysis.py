"""analysis/: fits, crossover, fluctuations and tables, on synthetic data with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from lightning_phase.analysis import (
    aggregate,
    crossing,
    crossover_exponent,
    crossover_line,
    ensemble_error,
    fit_power_law,
    fluctuations,
    load_runs,
    load_study,
    output_variance,
    single_error,
    trial_attrs,
)
from lightning_phase.errors import ConfigError


def _power_data(rng, n_points, n_seeds, b=-1.0, noise=0.2, lo=1e1, hi=1e4):
    x = np.repeat(np.geomspace(lo, hi, n_points), n_seeds)
    return x, 3.0 * x**b * np.exp(noise * rng.standard_normal(x.size))


# ---- power-law fits -----------------------------------------------------------------------------
def test_power_law_fit_recovers_exponent_and_interval_shrinks_with_more_data():
    rng = np.random.default_rng(1)
    small = fit_power_law(*_power_data(rng, 6, 3), n_boot=1000)
    large = fit_power_law(*_power_data(rng, 24, 12), n_boot=1000)
    for fit in (small, large):
        assert fit.covers(-1.0) and fit.method == "bootstrap"
        assert fit.interval[0] < fit.exponent < fit.interval[1]
    assert large.interval[1] - large.interval[0] < 0.5 * (small.interval[1] - small.interval[0])
    assert abs(large.exponent + 1) < 0.05 and large.prefactor == pytest.approx(3.0, rel=0.2)
    assert large.x_range == pytest.approx((1e1, 1e4)) and large.n_points == 24 and large.n_rows == 288


def test_power_law_interval_covers_the_truth_at_about_its_level():
    rng = np.random.default_rng(2)
    hits = [fit_power_law(*_power_data(rng, 8, 4, b=-4 / 3), n_boot=400, seed=i).covers(-4 / 3)
            for i in range(60)]
    assert 0.85 <= np.mean(hits) <= 1.0    # 95 % intervals; a biased or too-narrow bootstrap fails this


def test_power_law_fit_range_selects_one_side_of_a_crossover():
    x = np.geomspace(1e-2, 1e4, 31)
    y = np.where(x > 10, x**-1.0, 10**0.7 * x ** -1.7)            # feature side steeper, lazy side −1
    lazy, feature = fit_power_law(x, y, x_range=(1e2, 1e4)), fit_power_law(x, y, x_range=(1e-2, 1))
    assert lazy.exponent == pytest.approx(-1.0, abs=1e-9) and lazy.x_range == pytest.approx((1e2, 1e4))
    assert feature.exponent == pytest.approx(-1.7, abs=1e-9)
    assert fit_power_law([1, 2], [1, -1]) is None             # one usable point: no fit


def test_three_points_without_seeds_use_the_t_interval():
    fit = fit_power_law([16, 64, 256], [1.0, 0.52, 0.24])
    assert fit.method == "ols-t" and fit.covers(-0.5) and fit.interval[1] - fit.interval[0] > 0.1


def test_aggregate_gives_mean_sem_and_a_bootstrap_interval_per_point():
    df = pd.DataFrame({"width": [4, 4, 4, 8, 8], "seed": [0, 1, 2, 0, 1], "err": [0.1, 0.2, 0.6, 0.3, None]})
    agg = aggregate(df, ["width"], "err")
    a4, a8 = agg.iloc[0], agg.iloc[1]
    assert a4["n"] == 3 and a4["mean"] == pytest.approx(0.3)
    assert a4["sem"] == pytest.approx(np.std([0.1, 0.2, 0.6], ddof=1) / math.sqrt(3))
    assert 0.1 <= a4["lo"] < 0.3 < a4["hi"] <= 0.6
    assert a8["n"] == 1 and a8["mean"] == 0.3 and math.isnan(a8["sem"]) and a8["lo"] == a8["hi"] == 0.3


# ---- crossover ---------------------------------------------------------------------------------
def test_crossing_interpolates_in_log_log_and_brackets_it():
    a = np.geomspace(0.1, 1000, 9)
    cr = crossing(a, (a / 7.0) ** -1.0)                       # exactly log-linear: α̃* = 7 recovered exactly
    assert cr.crossed and cr.value == pytest.approx(7.0, rel=1e-12)
    assert cr.bracket[0] < 7 < cr.bracket[1] and cr.bracket == pytest.approx((a[3], a[4]))
    assert crossing(a, (a / 7.0) ** -1.0, c=0.1).value == pytest.approx(70.0, rel=1e-12)


def test_a_curve_that_never_crosses_has_an_open_bracket():
    a = np.geomspace(0.1, 1000, 5)
    above, below = crossing(a, 5 + 0 * a), crossing(a, 0.05 / a)
    assert not above.crossed and math.isnan(above.value) and above.bracket == (1000.0, math.inf)
    assert not below.crossed and below.bracket == (0.0, 0.1)


def _crossover_df(rng, widths=(16, 64, 256), seeds=(0, 1, 2, 3), star=lambda h: 7.0, noise=0.1):
    rows = []
    for h in widths:
        for s in seeds:
            for a in np.geomspace(0.1, 1000, 9):
                rows.append({"width": h, "seed": s, "alpha_tilde": a,
                             "ntk_rel_change": (a / star(h)) ** -1.2 * math.exp(noise * rng.standard_normal())})
    return pd.DataFrame(rows)


def test_crossover_exponent_is_minus_one_half_when_alpha_tilde_star_is_constant():
    df = _crossover_df(np.random.default_rng(3))
    line = crossover_line(df)
    assert list(line["width"]) == [16, 64, 256] and line["crossed"].all() and (line["n_seeds"] == 4).all()
    assert np.allclose(line["alpha_tilde_star"], 7.0, rtol=0.25)
    assert np.allclose(line["alpha_star"], line["alpha_tilde_star"] / np.sqrt(line["width"]))
    fit = crossover_exponent(line, df, n_boot=300)
    assert fit.method == "bootstrap-seeds" and fit.covers(-0.5) and abs(fit.exponent + 0.5) < 0.1
    df_h = _crossover_df(np.random.default_rng(4), star=lambda h: 0.2 * h)
    wrong = crossover_exponent(crossover_line(df_h), df_h, n_boot=300)
    assert not wrong.covers(-0.5) and wrong.exponent == pytest.approx(0.5, abs=0.1)   # α̃* ∝ h: α* ∝ h^+1/2


# ---- fluctuations and ensembles ---------------------------------------------------------------
def test_output_variance_and_ensemble_error_match_hand_computed_values():
    F = np.array([[1.0, -2.0, 0.5, 3.0], [3.0, -1.0, -1.5, 1.0], [2.0, 0.0, -0.5, 2.0]])   # (S=3, P=4)
    y = np.array([1.0, -1.0, 1.0, 1.0])
    # per point Var (ddof 1): [1, 1, 1, 1] → mean 1
    assert output_variance(F) == pytest.approx(1.0)
    # single nets: errors 0/4, 1/4 (−1.5 on point 2), 2/4 (0 counts as wrong; −0.5 on point 2) → 0.25
    assert single_error(F, y) == pytest.approx((0 + 1 + 2) / 12)
    # ensemble mean F̄ = [2, −1, −0.5, 2] → one mistake (point 2)
    assert ensemble_error(F, y) == pytest.approx(0.25)
    assert ensemble_error(F, y, k=1) == pytest.approx(single_error(F, y))
    assert math.isnan(output_variance(F[:1]))
    with pytest.raises(ConfigError, match="^k: got 4"):
        ensemble_error(F, y, k=4)


def test_fluctuations_read_outputs_npz_per_grid_point(tmp_path):
    rng = np.random.default_rng(5)
    y = np.sign(rng.standard_normal(50))
    rows = []
    for h in (16, 64):
        for s in range(4):
            d = tmp_path / f"h{h}_s{s}"
            d.mkdir()
            F = y + rng.standard_normal(50) / math.sqrt(h)
            np.savez(d / "outputs.npz", test_F=F, test_y=y, train_F=F[:5], train_y=y[:5])
            rows.append({"width": h, "alpha_tilde": 1.0, "seed": s, "run_dir": str(d), "F": F})
    fl = fluctuations(pd.DataFrame(rows))
    for h, g in pd.DataFrame(rows).groupby("width"):
        F = np.stack(list(g["F"]))
        r = fl[fl["width"] == h].iloc[0]
        assert r["n_seeds"] == 4 and r["variance"] == pytest.approx(F.var(axis=0, ddof=1).mean(), rel=1e-12)
        assert r["ensemble_error"] == pytest.approx(float(np.mean(y * F.mean(0) <= 0)))


# ---- tables ------------------------------------------------------------------------------------
def _summary(width, alpha_tilde, seed):
    return {"schema_version": 1, "status": "completed", "config": {"model": {"alpha_tilde": alpha_tilde}},
            "config_hash": "abc", "width": width, "alpha_tilde": alpha_tilde, "seed": seed,
            "test_error": 0.1 + 0.01 * width, "ntk_rel_change": 1.0 / alpha_tilde, "stop_reason": "ALL_MARGINS_MET",
            "versions": {"torch": "x"}, "t1": None}


def _toy_study(path: Path, v2: bool) -> str:
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="toy", storage=storage)
    grid = {"model.alpha_tilde": [0.1, 10.0, 1.0], "model.net.init_args.width": [64, 4, 16]}
    study.set_user_attr("lp_spec", {"grid": grid, "objective": "test_error"})
    n = 0
    for h in grid["model.net.init_args.width"]:
        for a in grid["model.alpha_tilde"]:
            s = _summary(h, a, 0)
            if v2:
                dists = {"model.alpha_tilde": FloatDistribution(0.1, 10.0, log=True),
                         "model.net.init_args.width": IntDistribution(4, 64, log=True)}
                attrs = {**trial_attrs(s), "run_dir": f"runs/toy/trial_{n:05d}"}
            else:
                dists = {k: CategoricalDistribution(v) for k, v in grid.items()}
                attrs = {"summary": s, "run_dir": f"runs/toy/trial_{n:05d}"}
            study.add_trial(create_trial(state=TrialState.COMPLETE, value=s["test_error"],
                                         params={"model.alpha_tilde": a, "model.net.init_args.width": h},
                                         distributions=dists, user_attrs=attrs))
            n += 1
    return str(path)


@pytest.mark.parametrize("v2", [False, True], ids=["v1-summary-blob", "v2-one-attr-per-field"])
def test_load_study_has_numeric_grid_columns_flat_summary_fields_sorted_by_grid(tmp_path, v2):
    df = load_study("toy", storage=_toy_study(tmp_path / "s.journal", v2))
    assert len(df) == 9 and df.attrs["grid_keys"] == ["model.alpha_tilde", "model.net.init_args.width"]
    for col in ("model.alpha_tilde", "model.net.init_args.width", "width", "alpha_tilde", "test_error",
                "ntk_rel_change", "value"):
        assert pd.api.types.is_numeric_dtype(df[col]), col
    assert "config" not in df.columns and "versions" not in df.columns
    assert df["stop_reason"].iloc[0] == "ALL_MARGINS_MET"
    keys = list(zip(df["model.alpha_tilde"], df["model.net.init_args.width"], strict=True))
    assert keys == sorted(keys) and keys[0] == (0.1, 4)
    assert list(df.columns[:3]) == ["trial", "state", "value"] and df["config_hash"].iloc[0] == "abc"
    assert df["t1"].isna().all() and set(df["state"]) == {"COMPLETE"}


def test_load_study_never_creates_storage_and_names_the_field(tmp_path):
    missing = tmp_path / "nothing.journal"
    with pytest.raises(ConfigError, match="^--storage: got"):
        load_study("toy", storage=str(missing))
    assert not missing.exists()
    with pytest.raises(ConfigError, match="^study: got 'other'.*there: toy"):
        load_study("other", storage=_toy_study(tmp_path / "s.journal", True))


def test_load_runs_reads_every_summary_below_a_folder(tmp_path):
    for i, (h, a) in enumerate([(16, 1.0), (4, 10.0), (4, 1.0)]):
        d = tmp_path / "runs" / f"version_{i}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(_summary(h, a, 0)))
    (tmp_path / "runs" / "torn").mkdir()
    (tmp_path / "runs" / "torn" / "summary.json").write_text("{")
    df = load_runs(tmp_path / "runs")
    assert list(zip(df["width"], df["alpha_tilde"], strict=True)) == [(4, 1.0), (4, 10.0), (16, 1.0)]
    assert df["run_dir"].str.endswith("version_2").iloc[0] and pd.api.types.is_numeric_dtype(df["width"])
    with pytest.raises(ConfigError, match="^path: got"):
        load_runs(tmp_path / "empty")


def test_variance_exponent_bootstraps_over_seeds_and_covers_one_over_h():
    from lightning_phase.analysis.fluctuations import variance_exponent

    rng = np.random.default_rng(7)
    stacks = {h: rng.standard_normal((6, 300)) / math.sqrt(h) for h in (8, 32, 128, 512)}   # Var = 1/h
    fit = variance_exponent(stacks, n_boot=500)
    assert fit.method == "bootstrap-seeds" and fit.covers(-1.0) and abs(fit.exponent + 1) < 0.1
    assert fit.interval[1] - fit.interval[0] < 0.5 and fit.n_rows == 24
    few = variance_exponent({h: F[:2] for h, F in stacks.items()}, n_boot=500)   # 2 seeds: one variance each
    assert few.method == "bootstrap" and np.isfinite(few.interval).all() and few.interval[0] < few.interval[1]
    assert variance_exponent({8: stacks[8]}) is None
