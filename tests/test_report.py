"""`lightning-phase report` on a synthetic study: every file, the fitted numbers, the figures' axes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from analysis_helpers import STAR, synthetic_study

from lightning_phase.analysis import figures, load_study
from lightning_phase.analysis.report import build_report, main_report
from lightning_phase.analysis.science import analyse


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    return synthetic_study(root / "s.journal", runs_dir=root / "runs"), root


@pytest.fixture(scope="module")
def report(study):
    """One `lightning-phase report` of the synthetic study (drawing is the slow part: done once)."""
    storage, root = study
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main_report(["toy", "--storage", storage, "--out", str(root / "rep"), "--bootstrap", "200"])
    return code, root / "rep", buf.getvalue()


def test_report_writes_every_file_and_recovers_the_known_numbers(report):
    code, out, printed = report
    assert code == 0
    names = ("phase_diagram", "kernel_change", "weights_change", "test_error_vs_width", "t1_vs_alpha_tilde",
             "fluctuations", "n_delta_vs_load")
    for name in names:
        assert (out / f"{name}.png").stat().st_size > 1000 and (out / f"{name}.svg").is_file(), name
    fits = json.loads((out / "fits.json").read_text())
    stars = fits["crossover"]["alpha_tilde_star"]
    assert set(stars) == {"4", "16", "64", "256"} and all(abs(math.log(v / STAR)) < 0.1 for v in stars.values())
    exp = fits["crossover"]["exponent"]
    # 3 seeds per point: the seed bootstrap is narrow (it cannot see the interpolation bias); check the value
    assert exp["exponent"] == pytest.approx(-0.5, abs=0.03) and exp["published"] == -0.5
    assert exp["interval"][0] <= exp["exponent"] <= exp["interval"][1] and exp["method"] == "bootstrap-seeds"
    for h, fit in fits["kernel_change"]["lazy_slope"].items():
        assert fit["interval"][0] <= -1 <= fit["interval"][1], h
        assert fit["x_range"][0] >= 10 * stars[h] * (1 - 1e-9)    # the stated range: α̃ ≥ 10·α̃*(h)
    for fit in fits["kernel_change"]["feature_slope"].values():
        assert fit["exponent"] == pytest.approx(-4 / 3, abs=0.1)
    fl = fits["fluctuations"]["exponent"]
    assert fl["interval"][0] <= -1 <= fl["interval"][1] and fits["fluctuations"]["alpha_tilde"] == pytest.approx(1e4)
    assert fits["jamming"]["10"]["bracket"] == [4, 16]
    md = (out / "report.md").read_text()
    assert "phase_diagram.png" in md and "α* ∝ h^-1/2" in md and "| kernel_change lazy slope vs α̃ | 64 |" in md
    assert str(out / "phase_diagram.png") in printed


def test_report_refuses_to_overwrite_and_never_creates_storage(study, tmp_path, capsys):
    storage, _ = study
    out = tmp_path / "rep"
    out.mkdir()
    (out / "report.md").write_text("mine")
    assert main_report(["toy", "--storage", storage, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lightning-phase: error: --out: got") and "--force" in err and "\n" not in err
    assert (out / "report.md").read_text() == "mine"
    missing = tmp_path / "none.journal"
    assert main_report(["toy", "--storage", str(missing), "--out", str(tmp_path / "r2")]) == 2
    assert not missing.exists() and not (tmp_path / "r2").exists()
    assert main_report(["toy", "--storage", storage, "--out", str(tmp_path / "r3"), "--bootstrap", "5"]) == 2
    assert "--bootstrap: got 5" in capsys.readouterr().err


def test_figures_have_the_stated_axes_scales_and_labels(study):
    storage, _ = study
    an = analyse(load_study("toy", storage), n_boot=100)
    fig = figures.phase_diagram(an.cells, an.crossover, an.jamming)
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert "width h" in ax.get_xlabel() and "α̃" in ax.get_ylabel() and ax.get_title()
    assert "test error" in fig.axes[1].get_ylabel()                       # the colour bar
    lines = {ln.get_label() for ln in ax.get_lines()} | {c.get_label() for c in ax.containers}
    assert any("crossover" in s for s in lines) and any("jamming" in s for s in lines)
    fig = figures.change_vs_alpha(an.curves["ntk_rel_change"], an.side_fits["ntk_rel_change"], "mean", "ΔΘ", "K")
    left, right = fig.axes
    assert all(a.get_xscale() == a.get_yscale() == "log" for a in (left, right))
    assert "α̃" in left.get_xlabel() and "article" in right.get_xlabel()
    assert any("lazy: slope -1.0" in t.get_text() for t in left.get_legend().get_texts())
    fig = figures.test_error_vs_width(an.cells, [0.1, 1e4], an.fluct)
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "linear"
    assert any("ensemble" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert figures._power_of_ten(1000.0) == "10³" and figures._power_of_ten(0.1) == "10⁻¹"
    assert figures._power_of_ten(300.0) == ""


def test_report_of_a_study_without_kernel_measurements_still_draws_the_map(tmp_path):
    from analysis_helpers import synthetic_study as make

    storage = make(tmp_path / "s.journal", widths=(4, 8), alphas=(1.0, 10.0), seeds=(0,))
    df = load_study("toy", storage).drop(columns=["ntk_rel_change", "weights_change", "t1"])
    fits = build_report(df, tmp_path / "rep", n_boot=100)
    assert "phase_diagram" in fits["figures"] and "crossover" not in fits and "fluctuations" not in fits
    assert np.isfinite(fits["test_error"]["4"]["1"])


def test_threshold_study_report_fits_n_star_linear_in_p(tmp_path):
    import pandas as pd

    from lightning_phase.analysis.science import threshold_fits

    results = [{"group": {"data.n_train": p}, "h_star": h, "n_star": 3 * p + 1, "bracket": [h - 1, h],
                "finished": True} for p, h in ((20, 5), (80, 9), (160, 13), (320, 18))]
    fits = threshold_fits(results, n_boot=300)
    assert fits["n_star_exponent"]["exponent"] == pytest.approx(1.0, abs=0.02)
    assert fits["n_star_exponent"]["published"] == 1.0 and len(fits["groups"]) == 4
    df = pd.DataFrame({"width": [4, 8], "alpha_tilde": [1.0, 1.0], "n_delta": [3, 0], "n_train": [20, 20],
                       "n_params": [60, 150], "depth": [2, 2], "test_error": [0.3, 0.2]})
    df.attrs["threshold"] = results
    out = build_report(df, tmp_path / "rep", n_boot=100)
    assert "threshold" in out["figures"] and (tmp_path / "rep" / "threshold.svg").is_file()
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| N* vs P | all | +0.99 [+0.99, +1.00] over 20–320" in md and "## Jamming threshold" in md
