"""A real browser over a finished run's TensorBoard: headless Chromium renders the page and it shows the run
and its tags (not a blank page). Skipped where Chromium is absent (.ci/run installs Debian's ``chromium``)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lightning_phase.run import fit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
QUICK = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "--virtual-time-budget=20000"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / ('profile_' + name)}", *args],
                          capture_output=True, text=True, timeout=120)


def test_tensorboard_renders_the_run_and_its_tags_in_chromium(tmp_path):
    record = fit(QUICK, ["--trainer.max_steps=30", "--trainer.enable_progress_bar=false", "--data.n_train=100",
                         "--model.net.init_args.width=16"])
    run = Path(record["run_dir"]).name
    assert run == "a~1_h16_L2_P100_s0"  # TensorBoard's run selector shows the coordinates
    port = _free_port()
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
