"""Start a sweep: create or check the study, fork the workers, show progress, report the outcome."""

from __future__ import annotations

import json
import multiprocessing
import signal
import socket
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Literal, cast

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from lightning_phase.errors import ConfigError
from lightning_phase.summary import trial_record
from lightning_phase.sweep import grid
from lightning_phase.sweep.runner import Outcome, Runner
from lightning_phase.sweep.spec import SweepSpec
from lightning_phase.sweep.worker import (
    WORKER_KEY,
    StudyHandle,
    WorkerOptions,
    fail_and_retry,
    sampler_for,
    worker_main,
)

SPEC_ATTR = "lp_spec"


def ensure_study(storage: BaseStorage, spec: SweepSpec, max_retries: int = WorkerOptions.max_retries) -> StudyHandle:
    """Create the study (named ``spec.name``) or continue it; a study made from another spec is refused.
    A grid study gets a WAITING trial for every point that lacks one, and its failed points to redo
    (:func:`grid.enqueue_missing`)."""
    mine = json.loads(json.dumps(spec.fingerprint()))
    try:
        storage.get_study_id_from_name(spec.name)
        existing = True
    except KeyError:
        existing = False
    direction = cast(Literal["minimize", "maximize"], spec.direction)  # one of the two: checked by the spec
    study = optuna.create_study(storage=storage, study_name=spec.name, direction=direction,
                                sampler=sampler_for(spec), load_if_exists=True)
    stored = study.user_attrs.get(SPEC_ATTR)
    if existing and stored is not None and stored != mine:
        diff = sorted(k for k in mine if mine.get(k) != stored.get(k))
        raise ConfigError("--study", spec.name, "a new study name, or the spec this study was made from "
                          f"(stored {', '.join(diff)} differ)")
    if stored is None:
        study.set_user_attr(SPEC_ATTR, mine)
        study.set_user_attr("lp_kind", "threshold" if spec.threshold is not None else "grid")
    if study.metric_names != [spec.objective]:
        with warnings.catch_warnings():            # "experimental" since Optuna 3.2; the names are stable
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([spec.objective])   # optuna-dashboard shows "test_error", not "Objective 0"
    if spec.threshold is None:
        grid.enqueue_missing(study, spec.points(), max_retries)
    return StudyHandle(storage, study, spec)


def start_workers(k: int, storage_url: str | None, spec: SweepSpec, opts: WorkerOptions, runner: Runner,
                  stop=None) -> list:
    """Fork k workers (everything already imported, so they start in milliseconds)."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=worker_main, args=(storage_url, spec, spec.name, opts, runner, stop), daemon=False)
             for _ in range(k)]
    for p in procs:
        p.start()
    return procs


def watch(h: StudyHandle, procs: list, counts: Callable[[], Counter], total: int, show: bool,
          done: Callable[[], bool] | None = None, poll: float = 1.0) -> bool:
    """Progress until the workers exit (or ``done()``): one line per finished trial (its point, objective,
    N_Δ, stop reason, time) and, on a terminal, a bar of grid points below them (never redrawn into a log
    file). Ctrl-C/SIGTERM stops the workers, which mark their running trial INTERRUPTED and enqueue it again.
    Returns False if interrupted."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="trial", disable=not (show and sys.stderr.isatty()), dynamic_ncols=True,
               file=sys.stderr)
    seen: set[int] = set()
    old = signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))
    old_int = signal.getsignal(signal.SIGINT)
    try:
        while any(p.is_alive() for p in procs) and not (done is not None and done()):
            _report_finished(h, seen, bar, show)
            _update(bar, counts())
            time.sleep(poll)
        _report_finished(h, seen, bar, show)
        _update(bar, counts())
        return True
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # a second Ctrl-C must not leave workers behind
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM → KeyboardInterrupt in the worker → its trial INTERRUPTED
        for p in procs:
            p.join(timeout=15)
            if p.is_alive():   # did not stop: killed (its trial process dies with it, PR_SET_PDEATHSIG)
                p.kill()       # and its running trial recorded INTERRUPTED here, and enqueued again
                p.join()
                interrupt_trials_of(h, p.pid)
        return False
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)


def interrupt_trials_of(h: StudyHandle, pid: int, max_retries: int = WorkerOptions.max_retries) -> None:
    """Record INTERRUPTED (and enqueue again) the RUNNING trials of the dead worker ``pid`` of this machine."""
    me = f"{socket.gethostname()}:{pid}"
    for t in h.trials((TrialState.RUNNING,)):
        if t.system_attrs.get(WORKER_KEY) == me:
            fail_and_retry(h, t._trial_id, Outcome.INTERRUPTED, "sweep interrupted (its worker was killed)",
                           max_retries)


def trial_line(t: FrozenTrial, objective: str) -> str:
    """One line for a finished trial: number, grid point, objective value, fit_state, N_Δ (strict and within
    ``stop.delta_tol``), stop reason, time."""
    point = " ".join(f"{k.rsplit('.', 1)[-1]}={v:g}" if isinstance(v, (int, float)) else f"{k.rsplit('.', 1)[-1]}={v}"
                     for k, v in sorted(t.params.items()))
    summary = trial_record(t.user_attrs)
    seconds = (t.user_attrs.get("timing") or {}).get("child_s")
    if t.state == TrialState.COMPLETE and t.values:
        value = f"{objective}={t.values[0]:.4g}"
    else:
        value = f"{t.state.name} ({t.user_attrs.get('fail_reason', '?')})"
    parts = [f"trial {t.number}", point, value]
    if summary.get("fit_state"):   # the decision (max Δ ≤ δ), beside strict and tolerant N_Δ
        parts.append(f"fit_state={summary['fit_state']}")
    for key in ("n_delta", "n_delta_tol"):
        if summary.get(key) is not None:
            parts.append(f"{key}={summary[key]}")
    if summary.get("stop_reason"):
        parts.append(str(summary["stop_reason"]))
    if isinstance(seconds, (int, float)):
        parts.append(f"{seconds:.1f} s")
    return "  ".join(p for p in parts if p)


def _report_finished(h: StudyHandle, seen: set[int], bar, show: bool) -> None:
    """Print (above the bar) one line per trial that finished since the last call."""
    if not show:
        return
    for t in h.trials((TrialState.COMPLETE, TrialState.FAIL)):
        if t.number not in seen and t.user_attrs.get("fail_reason") != Outcome.SURPLUS.value:
            seen.add(t.number)
            bar.write(trial_line(t, h.spec.objective), file=sys.stderr)


def _update(bar, c: Counter) -> None:
    bar.n = c["done"] + c["failed"]
    bar.set_postfix_str(f"done={c['done']} running={c['running']} failed={c['failed']}", refresh=False)
    bar.refresh()


def report_timing(h: StudyHandle, import_s: float, wall_s: float, k: int, out=None) -> dict:
    """Per-trial cost of the sweep machinery against the training time, from the trials' ``timing``."""
    rows = [t.user_attrs["timing"] for t in h.trials((TrialState.COMPLETE,)) if "timing" in t.user_attrs]
    rows = [r for r in rows if isinstance(r.get("train_s"), (int, float))]
    if not rows:
        return {}
    med = {key: statistics.median(r[key] for r in rows) for key in ("claim_s", "child_s", "train_s", "record_s")}
    med["run_setup_s"] = med["child_s"] - med["train_s"]
    overhead = med["claim_s"] + med["record_s"] + med["run_setup_s"] + import_s * k / max(len(rows), 1)
    print(f"timing: {len(rows)} trials in {wall_s:.1f} s on {k} workers; median per trial: train "
          f"{med['train_s']:.3f} s | trial process outside training {med['run_setup_s']:.3f} s | "
          f"storage (claim+record) {med['claim_s'] + med['record_s']:.3f} s | start-up + imports {import_s:.1f} s once "
          f"| overhead/train {_ratio(overhead, med['train_s'])}", file=out or sys.stderr)
    return {**med, "import_s": import_s, "wall_s": wall_s, "overhead_over_train": overhead / max(med["train_s"], 1e-9)}


def _ratio(a: float, b: float) -> str:
    """a/b to 2 decimals, or "n/a" when b is under a millisecond (a runner that trains nothing)."""
    return f"{a / b:.2f}" if b >= 1e-3 else "n/a"
