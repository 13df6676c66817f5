"""`lightning-phase crossover`: bisection in log α̃ per width, to the stated tolerance, resumable."""

from __future__ import annotations

import math

import optuna
import pytest
import yaml
from crossover_runner import star
from sweep_helpers import TOY_BASE

from lightning_phase.cli import main as cli_main
from lightning_phase.storage import open_storage
from lightning_phase.sweep.crossover import CrossoverSpec, next_alpha

RUNNER = "crossover_runner:run_kernel"


def test_bisection_brackets_the_crossing_to_the_tolerance():
    spec = CrossoverSpec(widths=(8,), alpha_min=0.1, alpha_max=1e4, tolerance=0.05)
    done: dict[float, float] = {}
    while (a := next_alpha(spec, done)[0]) is not None:
        done[a] = (a / 6.0) ** (-1.0 if a >= 6 else -4 / 3)
    res = next_alpha(spec, done)[1]
    lo, hi = res["bracket"]
    assert res["crossed"] and lo < 6 < hi and math.log10(hi / lo) <= 0.05
    assert res["alpha_tilde_star"] == pytest.approx(6.0, rel=0.03)
    assert len(done) <= 2 + math.ceil(math.log2(5 / 0.05)) + 1          # endpoints + bisection steps


def test_crossover_command_finds_alpha_star_per_width_and_resumes(tmp_path, capsys):
    spec = tmp_path / "cross.yaml"
    spec.write_text(yaml.safe_dump({"base": TOY_BASE, "crossover": {
        "widths": [8, 64, 2000], "alpha_min": 0.1, "alpha_max": 1.0e4, "tolerance": 0.1}}))
    st = str(tmp_path / "s.journal")
    argv = ["crossover", str(spec), "--storage", st, "--workers", "2", "--runner", RUNNER,
            "--runs-dir", str(tmp_path / "runs")]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "h=2000: not bracketed in [0.1, 10000] (bracket [10000.0, inf])" in out
    stars = {int(line.split(":")[0][2:]): float(line.split("α̃*=")[1].split()[0])
             for line in out.splitlines() if "α̃*=" in line}
    assert set(stars) == {8, 64} and all(v == pytest.approx(star(8), rel=0.15) for v in stars.values())
    study = optuna.load_study(study_name="cross", storage=open_storage(st))
    n = len(study.trials)
    assert study.user_attrs["lp_crossover"]["8"]["crossed"] and study.trials[0].user_attrs["ntk_rel_change"] > 0
    assert cli_main(argv) == 0                                     # resumed: nothing left to run
    assert capsys.readouterr().out == out
    assert len(optuna.load_study(study_name="cross", storage=open_storage(st)).trials) == n


def test_bad_crossover_spec_is_one_line(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"base": TOY_BASE, "crossover": {"widths": [8], "alpha_min": 10.0,
                                                                     "alpha_max": 1.0}}))
    assert cli_main(["crossover", str(spec), "--storage", str(tmp_path / "s.journal")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightning-phase: error: crossover.alpha_max: got 1.0") and err.count("\n") == 1
