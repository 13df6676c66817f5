"""Ctrl-C and SIGTERM on `sweep` stop every worker: no process of the sweep outlives the command, no trial
starts after it said it stopped, the running trials are INTERRUPTED and redone by the restart."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from sweep_helpers import TOY, check_exactly_once, trials, wait_for, write_spec

from lightning_phase.sweep import commands


def _main_in_own_group(argv):
    os.setsid()   # a terminal's Ctrl-C goes to the whole foreground process group: give the sweep its own
    os._exit(commands.main(argv))


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*") if Path(f"/proc/{p}/task").is_dir() else []:
            try:
                kids = [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                continue
            for k in kids:
                if k not in out:
                    out.add(k)
                    todo.append(k)
    return out


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("how", ["sigterm", "ctrl_c"])
def test_stopping_a_sweep_leaves_no_process_and_redoes_its_running_trials(tmp_path, how):
    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "stop.yaml", grid={"model.net.init_args.width": [2, 4, 6, 8, 10, 12]})
    argv = ["sweep", str(spec), "--storage", st, "--workers", "2", "--runner", TOY, "--no-progress",
            "--runs-dir", str(tmp_path / "runs"), "--heartbeat", "0.2", "--grace", "30"]
    os.environ["LP_TOY_SLEEP"] = "60"   # the trials are still running when the signal comes
    try:
        sweep = multiprocessing.get_context("fork").Process(target=_main_in_own_group, args=(argv,))
        sweep.start()
    finally:
        os.environ.pop("LP_TOY_SLEEP")
    def busy():
        ts = [t for t in trials(st, "stop") if t.state == TrialState.RUNNING and "run_dir" in t.user_attrs]
        procs = descendants(sweep.pid)
        return (ts, procs) if len(ts) == 2 and len(procs) >= 4 else None

    running_trials, procs = wait_for(busy, 60, "2 workers, each running a trial in its trial process")
    if how == "sigterm":
        os.kill(sweep.pid, signal.SIGTERM)
    else:
        os.killpg(sweep.pid, signal.SIGINT)
    t_signal = time.time()
    sweep.join(200)
    took = f"the command stopped {time.time() - t_signal:.1f} s after the signal"
    assert sweep.exitcode == 1, took                              # unfinished: run it again
    assert not [p for p in procs if running(p)], "orphans after the command returned"
    stopped = {t.number: (t.state, t.user_attrs.get("fail_reason")) for t in trials(st, "stop")}
    for t in running_trials:
        assert stopped[t.number] == (TrialState.FAIL, "INTERRUPTED"), took
    assert not [n for n, (state, _) in stopped.items() if state == TrialState.RUNNING]
    time.sleep(1.5)                                               # nothing runs on after the command said so
    assert {t.number: (t.state, t.user_attrs.get("fail_reason")) for t in trials(st, "stop")} == stopped
    assert commands.main(argv) == 0                               # the restart redoes them
    ts = trials(st, "stop")
    check_exactly_once(ts, 6)
    for t in running_trials:   # each interrupted trial was redone by exactly one retry, which completed
        redo = [u for u in ts if (u.system_attrs.get("retry_history") or [None])[-1] == t.number]
        assert [u.state for u in redo] == [TrialState.COMPLETE]


def test_a_worker_killed_at_the_stop_has_its_running_trial_recorded_interrupted_by_the_command(tmp_path):
    """The command's fallback for a worker that did not stop in time (it is SIGKILLed): its RUNNING trial
    is recorded INTERRUPTED and enqueued again; another worker's trial is left alone."""
    import socket

    import optuna

    from lightning_phase.storage import open_storage
    from lightning_phase.sweep.launch import interrupt_trials_of
    from lightning_phase.sweep.spec import parse_spec
    from lightning_phase.sweep.worker import WORKER_KEY, StudyHandle

    storage = open_storage(str(tmp_path / "s.journal"))
    study = optuna.create_study(storage=storage, study_name="k")
    for _ in range(2):
        study.enqueue_trial({})
    mine, other = study._pop_waiting_trial_id(), study._pop_waiting_trial_id()
    storage.set_trial_system_attr(mine, WORKER_KEY, f"{socket.gethostname()}:4242")
    storage.set_trial_system_attr(other, WORKER_KEY, f"{socket.gethostname()}:4343")
    h = StudyHandle(storage, study, parse_spec({"base": {}, "grid": {"seed_everything": [0]}}))
    interrupt_trials_of(h, 4242)
    ts = study.get_trials()
    assert (ts[0].state, ts[0].user_attrs["fail_reason"]) == (TrialState.FAIL, "INTERRUPTED")
    assert ts[1].state == TrialState.RUNNING
    assert ts[2].state == TrialState.WAITING and ts[2].system_attrs["retry_history"] == [0]
