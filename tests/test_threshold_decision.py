"""`threshold` on the runs' decision: SAT majority, UNDECIDED reruns with a doubled budget, never UNDECIDED
counted as UNSAT, data seeds, the N* = aP fit and --json (toy runner: milliseconds per trial)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sweep_helpers import TOY, TOY_BASE, trials, write_spec
from toy_runner import toy_n_params

from lightning_phase.analysis.jamming_line import fit_affine, fit_through_origin, jamming_line
from lightning_phase.errors import ConfigError
from lightning_phase.sweep import commands
from lightning_phase.sweep.spec import parse_spec
from lightning_phase.sweep.threshold import SAT, UNDECIDED, UNSAT, width_verdict


def test_width_verdict_never_counts_undecided_as_unsat():
    assert width_verdict([SAT, SAT, UNDECIDED]) == SAT
    assert width_verdict([SAT, UNDECIDED, UNDECIDED]) == UNDECIDED
    assert width_verdict([SAT, UNSAT, UNDECIDED]) == UNDECIDED  # one more SAT would make a majority
    assert width_verdict([UNSAT, UNSAT, UNDECIDED]) == UNSAT
    assert width_verdict([UNDECIDED] * 3) == UNDECIDED
    assert width_verdict(["FAILED", SAT, SAT]) == SAT and width_verdict(["FAILED", "FAILED", SAT]) == UNSAT


def _threshold(tmp_path, name, base=None, **threshold):
    st = str(tmp_path / "s.journal")
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(json.dumps({"base": base or TOY_BASE, "grid": {"data.n_train": [40]},
                                "threshold": {"seeds": [0, 1, 2], "width_min": 1, "width_max": 32, **threshold}}))
    out = tmp_path / f"{name}.json"
    argv = ["threshold", str(spec), "--storage", st, "--workers", "2", "--runner", TOY, "--no-progress",
            "--json", str(out)]
    code = commands.main(argv)
    return code, json.loads(out.read_text()), trials(st, name)


def _plain_h_star(tmp_path):
    _, res, _ = _threshold(tmp_path, "plain")
    return {r["group"]["data.n_train"]: r["h_star"] for r in res["groups"]}


def test_undecided_runs_are_rerun_with_doubled_budget_until_sat(tmp_path):
    plain = _plain_h_star(tmp_path)
    base = {**TOY_BASE, "model": {**TOY_BASE["model"], "loss": "toy_slow"}, "trainer": {"max_steps": 100}}
    code, res, ts = _threshold(tmp_path, "slow", base=base, budget_max=400)
    assert code == 0
    assert {r["group"]["data.n_train"]: r["h_star"] for r in res["groups"]} == plain
    budgets = {t.params.get("trainer.max_steps", 100) for t in ts}
    assert budgets == {100, 200, 400}  # UNDECIDED at 100 and 200, SAT at 400
    for r in res["groups"]:
        assert not r["undecided"] and not r["bracket_undecided"]


def test_undecided_at_the_cap_is_reported_not_counted_as_unsat(tmp_path):
    base = {**TOY_BASE, "model": {**TOY_BASE["model"], "loss": "toy_slow"}, "trainer": {"max_steps": 100}}
    code, res, ts = _threshold(tmp_path, "capped", base=base, budget_max=200, max_doublings=0)
    for r in res["groups"]:
        assert r["h_star"] is None and r["open_above"]  # nothing was shown SAT within the cap
        verdicts = [v["verdict"] for v in r["verdicts"].values()]
        # widths that fit are UNDECIDED (budget ran out), never UNSAT; too-narrow ones are UNSAT
        p = r["group"]["data.n_train"]
        for w, v in r["verdicts"].items():
            if toy_n_params(int(w), 2, 10) >= p / 2 * 1.1:
                assert v["verdict"] == UNDECIDED and v["UNSAT"] == 0
        assert UNDECIDED in verdicts
    assert max(t.params.get("trainer.max_steps", 100) for t in ts) == 200


def test_unconverged_unfitted_widths_are_flagged_in_the_bracket(tmp_path, capsys):
    plain = _plain_h_star(tmp_path)
    base = {**TOY_BASE, "model": {**TOY_BASE["model"], "loss": "toy_undecided"}}
    code, res, _ = _threshold(tmp_path, "undec", base=base)
    assert code == 0
    for r in res["groups"]:
        assert r["h_star"] == plain[r["group"]["data.n_train"]]
        assert r["bracket_undecided"] and r["bracket"][0] in r["undecided"]
    assert "h* may be lower" in capsys.readouterr().out


def test_seeds_can_draw_their_own_data_sets(tmp_path):
    _, _, ts = _threshold(tmp_path, "data", data_seed_key="data.data_seed")
    assert ts and all(t.params["data.data_seed"] == t.params["seed_everything"] for t in ts)


def test_json_holds_groups_and_a_line_n_star_proportional_to_p(tmp_path):
    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "line.yaml", grid={"data.n_train": [40, 80, 160]},
                      threshold={"seeds": [0, 1, 2], "width_min": 1, "width_max": 32})
    out = tmp_path / "line.json"
    assert commands.main(["threshold", str(spec), "--storage", st, "--workers", "2", "--runner", TOY,
                          "--no-progress", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert len(res["groups"]) == 3 and len(res["jamming_line"]) == 1
    line = res["jamming_line"][0]
    # toy: N* ≈ P/2 up to the ±10% seed spread and the integer width
    assert 0.4 < line["slope_interval"][0] <= line["slope"] <= line["slope_interval"][1] < 0.7
    assert 1.4 < line["r_star"] < 2.3 and line["affine"] is not None


def test_line_fits_recover_exact_lines():
    p = np.array([100.0, 200.0, 400.0])
    a, (lo, hi) = fit_through_origin(p, 0.4 * p)
    assert a == pytest.approx(0.4) and hi - lo == pytest.approx(0, abs=1e-12)
    aff = fit_affine(p, 0.5 * p + 3)
    assert aff["a"] == pytest.approx(0.5) and aff["b"] == pytest.approx(3)
    rng = np.random.default_rng(0)
    noisy = 0.5 * p + rng.normal(0, 5, 3)
    a, (lo, hi) = fit_through_origin(p, noisy)
    assert lo < a < hi and lo < 0.5 < hi
    groups = [{"group": {"data.n_train": int(pp), "model.net.init_args.depth": d}, "n_star": n * d / 2, "n_lo": None}
              for d in (2, 3) for pp, n in zip(p, 0.5 * p, strict=True)]
    fits = {f["family"]["model.net.init_args.depth"]: f for f in jamming_line(groups)}
    assert fits[2]["slope"] == pytest.approx(0.5) and fits[3]["r_star"] == pytest.approx(1 / 0.75)


def test_budget_cap_below_the_base_budget_is_refused():
    raw = {"base": {**TOY_BASE, "trainer": {"max_steps": 500}},
           "threshold": {"seeds": [0], "width_min": 1, "width_max": 8, "budget_max": 100}}
    with pytest.raises(ConfigError, match="threshold.budget_max"):
        parse_spec(raw)
