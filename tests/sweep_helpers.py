"""Helpers for the sweep tests: run the sweep command in a forked process (imports already paid), find its
workers, kill them, and read the study back."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from lightning_phase.storage import open_storage
from lightning_phase.sweep import commands

TOY = "toy_runner:run_toy"
TOY_BASE = {"model": {"net": {"class_path": "lightning_phase.nets.FullyConnected",
                              "init_args": {"width": 8, "depth": 2}}, "alpha_tilde": 1.0},
            "data": {"dataset": "random", "n_train": 40}}


def write_spec(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump({"base": TOY_BASE, **spec}))
    return path


def _main(argv):
    os._exit(commands.main(argv))


def start(argv: list[str]) -> multiprocessing.Process:
    """`lightning-phase <argv>` in a forked child of the test process."""
    proc = multiprocessing.get_context("fork").Process(target=_main, args=(argv,))
    proc.start()
    return proc


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def trials(storage_url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    st = open_storage(storage_url)
    try:
        return st.get_all_trials(st.get_study_id_from_name(study))
    except KeyError:   # not created yet
        return []


def wait_for(cond, timeout: float, what: str, poll: float = 0.1):
    t0 = time.time()
    while time.time() - t0 < timeout:
        out = cond()
        if out:
            return out
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def per_point(ts) -> dict[int, list]:
    out = defaultdict(list)
    for t in ts:
        if "grid_id" in t.system_attrs:
            out[t.system_attrs["grid_id"]].append(t)
    return out


def check_exactly_once(ts, n_points: int) -> None:
    """Every grid point has exactly one COMPLETE trial; nothing is left RUNNING or WAITING."""
    pts = per_point(ts)
    assert sorted(pts) == list(range(n_points))
    for g, group in pts.items():
        assert sum(t.state == TrialState.COMPLETE for t in group) == 1, (g, [(t.number, t.state) for t in group])
    assert not [t.number for t in ts if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def kill_and_restart(tmp_path: Path, storage: str, study: str = "kill") -> list:
    """The kill/restart check: a 2-worker sweep of 12 points; one worker SIGKILLed mid-trial (the other
    must fail its trial STALE and redo the point), then the whole sweep SIGKILLed (a machine crash); a
    restart finishes the grid. Returns the trials."""
    spec = write_spec(tmp_path / "kill.yaml", grid={"model.net.init_args.width": {"range": [2, 12, 2]},
                                                     "seed_everything": [0, 1]})
    argv = ["sweep", str(spec), "--storage", storage, "--workers", "2", "--study", study, "--runner", TOY,
            "--heartbeat", "0.2", "--grace", "1.5", "--no-progress"]
    os.environ["LP_TOY_SLEEP"] = "0.4"
    try:
        sweep = start(argv)
        n_done = lambda: sum(t.state == TrialState.COMPLETE for t in trials(storage, study))  # noqa: E731
        wait_for(lambda: n_done() >= 2, 60, "2 finished trials")
        running = wait_for(lambda: [t for t in trials(storage, study) if t.state == TrialState.RUNNING
                                    and "lp:worker" in t.system_attrs], 30, "a running trial")
        victim = running[0]
        kill(int(victim.system_attrs["lp:worker"].rsplit(":", 1)[1]))
        # the surviving worker fails the silent trial (STALE) and enqueues its point once more
        wait_for(lambda: next(t for t in trials(storage, study) if t.number == victim.number).state
                 == TrialState.FAIL, 30, "the killed worker's trial to be failed")
        wait_for(lambda: n_done() >= 6, 60, "6 finished trials")
        for pid in children(sweep.pid):   # the machine crashes: the sweep and its last worker die at once
            kill(pid)
        kill(sweep.pid)
        sweep.join()
        before = {t.number: (t.state, t.values) for t in trials(storage, study) if t.state == TrialState.COMPLETE}
        assert 6 <= len(before) < 12
        last_before = max(t.number for t in trials(storage, study))
        restart = start(argv)
        restart.join(120)
        assert restart.exitcode == 0
    finally:
        os.environ.pop("LP_TOY_SLEEP", None)
    ts = trials(storage, study)
    check_exactly_once(ts, 12)
    after = {t.number: (t.state, t.values) for t in ts if t.state == TrialState.COMPLETE}
    assert all(after[n] == v for n, v in before.items())   # nothing finished is lost or redone
    done_points = {t.system_attrs["grid_id"] for t in ts if t.number in before}
    assert not [t for t in ts if t.system_attrs.get("grid_id") in done_points and t.number > last_before]
    killed = next(t for t in ts if t.number == victim.number)
    assert killed.state == TrialState.FAIL and killed.user_attrs["fail_reason"] == "STALE"
    assert sum(u.system_attrs.get("retry_history", [None])[-1] == victim.number for u in ts) == 1  # redone once
    for t in ts:   # every STALE trial was retried exactly once
        if t.user_attrs.get("fail_reason") == "STALE":
            assert sum(u.system_attrs.get("retry_history", [None])[-1] == t.number for u in ts) == 1
    return ts


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_dashboard(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A toy 3 × 3 sweep (width 4, 16, 64 × α̃ 0.1, 1, 10; study ``dash``) served by optuna-dashboard on
    127.0.0.1: yields (base URL, study id) once the server lists the study; stops the server on exit."""
    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "dash.yaml", grid={"model.net.init_args.width": [4, 16, 64],
                                                    "model.alpha_tilde": [0.1, 1.0, 10.0]})
    assert commands.main(["sweep", str(spec), "--storage", st, "--runner", TOY, "--no-progress"]) == 0
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from optuna_dashboard._cli import main; main()", st,
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        t0 = time.time()
        while True:  # until the server answers with the study
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=2) as r:
                    studies = json.loads(r.read())["study_summaries"]
                break
            except OSError:
                if time.time() - t0 > 60 or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        (study_id,) = [s["study_id"] for s in studies if s["study_name"] == "dash"]
        yield base, study_id
    finally:
        proc.terminate()
        proc.wait(timeout=30)
