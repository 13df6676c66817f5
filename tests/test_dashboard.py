"""optuna-dashboard reads a sweep's journal: numeric, log-scaled grid axes, one attribute per summary field,
the objective's name. Starts its HTTP server on 127.0.0.1 and reads the trials back through its JSON API.
Needs the optional extra ``dashboard`` (pip install -e ".[dashboard]"); skipped without it."""

from __future__ import annotations

import json
import urllib.request

import pytest
from sweep_helpers import served_dashboard

pytest.importorskip("optuna_dashboard")


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_dashboard_serves_numeric_log_axes_flat_attrs_and_metric_name(tmp_path):
    with served_dashboard(tmp_path) as (base, study_id):
        detail = _get(f"{base}/api/studies/{study_id}")
    assert detail["objective_names"] == ["test_error"]
    space = {p["name"]: p["distribution"] for p in detail["union_search_space"]}
    assert space["model.net.init_args.width"] == {"type": "IntDistribution", "low": 4, "high": 64, "step": 1,
                                                  "log": True}
    assert space["model.alpha_tilde"]["type"] == "FloatDistribution" and space["model.alpha_tilde"]["log"]
    trials = detail["trials"]
    assert len(trials) == 9 and {t["state"] for t in trials} == {"Complete"}
    attrs = {a["key"]: a["value"] for a in trials[0]["user_attrs"]}
    assert {"test_error", "n_params", "width", "config_hash", "run_dir"} <= set(attrs) and "summary" not in attrs
    sortable = {a["key"]: a["sortable"] for a in detail["union_user_attrs"]}
    assert sortable["test_error"] and sortable["n_params"]          # numbers: sortable columns in the table
    widths = sorted({int(p["param_external_value"]) for t in trials for p in t["params"]
                     if p["name"] == "model.net.init_args.width"})
    assert widths == [4, 16, 64]
