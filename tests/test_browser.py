"""A real browser over a finished run's TensorBoard and over a sweep's optuna-dashboard: headless Chromium renders
the pages and they show the run and its tags, the study and its trials (not a blank page). Skipped where
Chromium is absent (.ci/run installs Debian's ``chromium``); the dashboard test also without optuna-dashboard."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sweep_helpers import free_port, served_dashboard

from lightning_phase.run import fit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
QUICK = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "--virtual-time-budget=20000"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")


def _chromium(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / ('profile_' + name)}", *args],
                          capture_output=True, text=True, timeout=120)


def test_tensorboard_renders_the_run_and_its_tags_in_chromium(tmp_path):
    record = fit(QUICK, ["--trainer.max_steps=30", "--trainer.enable_progress_bar=false", "--data.n_train=100",
                         "--model.net.init_args.width=16"])
    run = Path(record["run_dir"]).name
    assert run == "a~1_h16_L2_P100_s0"  # TensorBoard's run selector shows the coordinates
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", "runs", "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):  # until the server lists the run
            try:
                if run.encode() in urllib.request.urlopen(f"{url}/data/runs", timeout=2).read():
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("TensorBoard did not start")
        dom = _chromium(tmp_path, "dom", "--dump-dom", f"{url}/#timeseries").stdout
        shot = tmp_path / "scalars.png"
        _chromium(tmp_path, "shot", f"--screenshot={shot}", f"{url}/#timeseries")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert f"quickstart/{run}" in dom  # the run list rendered, named by its coordinates
    assert "final/n_delta" in dom and "final/test_error" in dom  # the cards of the run's tags rendered
    assert shot.exists() and shot.stat().st_size > 20_000  # a page with content, not a blank one


def _text(dom: str) -> str:
    """The page's visible text: scripts and styles dropped, tags replaced by spaces, whitespace collapsed."""
    dom = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_optuna_dashboard_renders_the_study_and_its_trials_in_chromium(tmp_path):
    pytest.importorskip("optuna_dashboard")
    with served_dashboard(tmp_path) as (url, study_id):
        trials_page = _text(_chromium(tmp_path, "trials", "--dump-dom", f"{url}/dashboard/studies/{study_id}/trials")
                            .stdout)
        history_page = _text(_chromium(tmp_path, "history", "--dump-dom", f"{url}/dashboard/studies/{study_id}")
                             .stdout)
        shot = tmp_path / "dashboard.png"
        _chromium(tmp_path, "shot", f"--screenshot={shot}", f"{url}/dashboard/studies/{study_id}")
    assert f"dash (id={study_id})" in trials_page and "9 Trials" in trials_page   # the study, all its trials
    assert all(f"Trial {k} Complete" in trials_page for k in range(9))
    # the selected trial's detail: its grid point and the summary fields as user attributes
    for text in ("model.alpha_tilde", "model.net.init_args.width", "test_error", "n_delta", "stop_reason",
                 "ALL_MARGINS_MET", "run_dir"):
        assert text in trials_page, text
    assert "History" in history_page and "Hyperparameter Importance" in history_page   # the plots rendered
    assert "Best Trial" in history_page
    assert shot.exists() and shot.stat().st_size > 20_000  # a page with content, not a blank one
