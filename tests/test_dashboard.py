"""optuna-dashboard reads a sweep's journal: numeric, log-scaled grid axes, one attribute per summary field,
the objective's name. Starts its HTTP server on 127.0.0.1 and reads the trials back through its JSON API.
Needs the optional extra ``dashboard`` (pip install -e ".[dashboard]"); skipped without it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from sweep_helpers import TOY, write_spec

from lightning_phase.sweep import commands

pytest.importorskip("optuna_dashboard")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_dashboard_serves_numeric_log_axes_flat_attrs_and_metric_name(tmp_path):
    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "dash.yaml", grid={"model.net.init_args.width": [4, 16, 64],
                                                    "model.alpha_tilde": [0.1, 1.0, 10.0]})
    assert commands.main(["sweep", str(spec), "--storage", st, "--runner", TOY, "--no-progress"]) == 0
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from optuna_dashboard._cli import main; main()", st,
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        t0 = time.time()
        while True:
            try:
                studies = _get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                if time.time() - t0 > 60 or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        (study,) = [s for s in studies if s["study_name"] == "dash"]
        detail = _get(f"{base}/api/studies/{study['study_id']}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
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
