"""`lightning-phase results` and the v2 trial record: sorted rows, formats, no overwrite, numeric grid
distributions, one user attribute per summary field, metric names."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from analysis_helpers import synthetic_study
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from sweep_helpers import TOY, write_spec

from lightning_phase.cli import main as cli_main
from lightning_phase.storage import open_storage
from lightning_phase.summary import trial_attrs
from lightning_phase.sweep import commands
from lightning_phase.sweep.grid import grid_distribution


def test_results_table_is_sorted_by_grid_keys_in_every_format(tmp_path, capsys):
    st = synthetic_study(tmp_path / "s.journal", widths=(64, 4, 16), alphas=(10.0, 0.1, 1.0), seeds=(1, 0))
    assert cli_main(["results", "toy", "--storage", st]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = lines[0].split()
    assert head[:6] == ["trial", "state", "alpha_tilde", "width", "seed_everything", "value"]
    keys = [(float(r.split()[2]), int(r.split()[3]), int(r.split()[4])) for r in lines[1:]]
    assert len(keys) == 18 and keys == sorted(keys)
    assert cli_main(["results", "toy", "--storage", st, "--format", "json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [(r["model.alpha_tilde"], r["model.net.init_args.width"], r["seed_everything"]) for r in recs] == keys
    assert isinstance(recs[0]["ntk_rel_change"], float) and recs[0]["state"] == "COMPLETE"
    out = tmp_path / "t.csv"
    assert cli_main(["results", "toy", "--storage", st, "--format", "csv", "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0].startswith("trial,state,value,model.alpha_tilde")


def test_results_refuses_to_overwrite_and_never_creates_storage(tmp_path, capsys):
    st = synthetic_study(tmp_path / "s.journal", widths=(4,), alphas=(1.0,), seeds=(0,))
    out = tmp_path / "t.csv"
    out.write_text("keep")
    assert cli_main(["results", "toy", "--storage", st, "--csv", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightning-phase: error: --csv: got") and "--force" in err and err.count("\n") == 1
    assert out.read_text() == "keep"
    assert cli_main(["results", "toy", "--storage", st, "--csv", str(out), "--force"]) == 0
    assert out.read_text().startswith("trial,")
    assert cli_main(["results", "toy", "--storage", st, "--format", "yaml"]) == 2
    assert "--format: got 'yaml'; expected one of table, csv, json" in capsys.readouterr().err
    missing = tmp_path / "nothing.journal"
    assert cli_main(["results", "toy", "--storage", str(missing)]) == 2
    assert not missing.exists()


@pytest.mark.parametrize("values, dist", [
    ([4, 16, 64, 256], IntDistribution(4, 256, log=True)),
    ([8, 16, 24, 32], IntDistribution(8, 32)),
    ([0.1, 1.0, 10.0, 100.0], FloatDistribution(0.1, 100.0, log=True)),
    ([0.0, 0.5, 1.0], FloatDistribution(0.0, 1.0)),
    ([0, 1, 2], IntDistribution(0, 2)),
    ([1, 2**30], IntDistribution(1, 2**30, log=True)),
    (["relu", "softplus"], CategoricalDistribution(["relu", "softplus"])),
    ([True, False], CategoricalDistribution([True, False])),
])
def test_grid_values_get_numeric_distributions_log_scaled_when_geometric(values, dist):
    assert grid_distribution(values) == dist


def test_sweep_records_numeric_params_flat_attrs_config_hash_and_metric_name(tmp_path):
    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "rec.yaml", grid={"model.net.init_args.width": [2, 4, 8, 16],
                                                   "model.alpha_tilde": [0.1, 1.0, 10.0]},
                      objective="n_params")   # any numeric summary field may be the objective
    assert commands.main(["sweep", str(spec), "--storage", st, "--runner", TOY, "--no-progress"]) == 0
    study = optuna.load_study(study_name="rec", storage=open_storage(st))
    assert study.metric_names == ["n_params"]
    ts = study.get_trials()
    assert len(ts) == 12 and all(t.state.name == "COMPLETE" for t in ts)
    t = ts[0]
    assert t.distributions["model.net.init_args.width"] == IntDistribution(2, 16, log=True)
    assert t.distributions["model.alpha_tilde"] == FloatDistribution(0.1, 10.0, log=True)
    assert "summary" not in t.user_attrs and "config" not in t.user_attrs
    assert t.value == t.user_attrs["n_params"] and isinstance(t.user_attrs["config_hash"], str)
    assert {"width", "n_params", "n_delta", "test_error", "stop_reason", "run_dir"} <= set(t.user_attrs)


def test_trial_attrs_keep_scalars_drop_the_config_and_nan():
    attrs = trial_attrs({"config": {"a": 1}, "versions": {"torch": "2"}, "test_error": 0.1, "t1": None,
                         "ntk_rel_change": math.nan, "stop_reason": "ALL_MARGINS_MET", "config_hash": "ab"})
    assert attrs == {"test_error": 0.1, "t1": None, "ntk_rel_change": None, "stop_reason": "ALL_MARGINS_MET",
                     "config_hash": "ab"}
