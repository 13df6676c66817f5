"""``members: seed`` sweeps: the seed axis runs as model.members of one trial; the analysis reads it back as
one row per seed, equal to the rows of the same sweep run seed by seed (float64)."""

from __future__ import annotations

import pytest
import yaml
from optuna.trial import TrialState
from sweep_helpers import trials
from test_sweep_real import RANDOM_BASE

from lightning_phase.analysis import load_runs, load_study
from lightning_phase.errors import ConfigError
from lightning_phase.sweep import commands
from lightning_phase.sweep.spec import parse_spec

GRID = {"seed_everything": [3, 4, 5], "model.alpha_tilde": [1.0, 10.0]}
FIXED = {"trainer.max_steps": 60}
COLS = ("value", "train_loss", "test_loss", "n_delta", "train_error", "test_error", "steps", "flow_time", "seed")


def _sweep(tmp_path, name, **extra):
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump({"base": RANDOM_BASE, "grid": GRID, "fixed": FIXED,
                                    "objective": "train_loss", **extra}))
    st = str(tmp_path / f"{name}.journal")
    assert commands.main(["sweep", str(spec), "--storage", st, "--workers", "2", "--no-progress",
                          "--runs-dir", str(tmp_path / "runs")]) == 0
    return st


def test_members_sweep_gives_the_per_seed_rows_of_the_plain_sweep(tmp_path):
    plain = load_study("plain", _sweep(tmp_path, "plain"))
    st = _sweep(tmp_path, "folded", members="seed")
    ts = trials(st, "folded")
    assert len(ts) == 2 and all(t.state == TrialState.COMPLETE for t in ts)   # one trial per α̃
    assert all(t.params["seed_everything"] == 3 and t.user_attrs["n_members"] == 3 for t in ts)
    folded = load_study("folded", st)
    assert len(folded) == len(plain) == 6
    key = ["model.alpha_tilde", "seed_everything"]
    a, b = plain.sort_values(key).reset_index(drop=True), folded.sort_values(key).reset_index(drop=True)
    assert a[key].values.tolist() == b[key].values.tolist()
    for col in COLS:
        for x, y in zip(a[col], b[col], strict=True):
            assert y == (pytest.approx(x, rel=1e-10, abs=1e-12) if isinstance(x, float) else x), col
    assert a["stop_reason"].tolist() == b["stop_reason"].tolist()
    assert len(set(b["train_loss"])) == 6   # the seeds differ
    runs = load_runs(tmp_path / "runs" / "folded")   # run directories: also one row per member
    assert sorted(runs["seed"].tolist()) == [3, 3, 4, 4, 5, 5]


@pytest.mark.parametrize("bad, field", [
    ({"members": "seeds"}, "members"),
    ({"members": "seed", "grid": {"model.alpha_tilde": [1.0]}}, "members"),
    ({"members": "seed", "grid": {"seed_everything": [0, 2]}}, "grid.seed_everything"),
    ({"members": "seed", "fixed": {"model.members": 2}}, "model.members"),
])
def test_members_spec_bad_input_names_the_field(bad, field):
    raw = {"base": RANDOM_BASE, "grid": GRID, **bad}
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_spec(raw)


def test_members_spec_folds_the_seed_axis():
    spec = parse_spec({"base": RANDOM_BASE, "grid": {"model.net.init_args.seed": [7, 8, 9, 10]}, "members": "seed"})
    assert spec.grid == {"model.net.init_args.seed": [7]} and spec.fixed["model.members"] == 4
    assert spec.members == "model.net.init_args.seed" and spec.fingerprint()["members"] == spec.members
    assert "members" not in parse_spec({"base": RANDOM_BASE, "grid": GRID}).fingerprint()
