"""A sweep worker: pop a WAITING trial, run it in a child process, record it; repeat until no work is left.

Optuna's protocol throughout: trials are enqueued WAITING (:func:`grid.enqueue_missing`, the threshold
driver) and claimed with Optuna's pop (compare-and-set WAITING → RUNNING: one winner); while a trial runs,
Optuna's heartbeat thread records it (:class:`lightning_phase.storage.Heartbeat`); before each claim,
``optuna.storages.fail_stale_trials`` fails the trials of dead workers (STALE) and Optuna's retry callback
(:func:`grid.retry`) enqueues their points again. Which trial counts for a grid point: :mod:`.grid`.
A result is recorded with RUNNING → COMPLETE/FAIL, which loses against a reaper: a worker that was
declared dead does not add a second result.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, fail_stale_trials
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.trial import FrozenTrial, TrialState

from lightning_phase.run_name import trial_folder, trial_name
from lightning_phase.storage import Heartbeat
from lightning_phase.summary import SUMMARY_FILE, trial_attrs
from lightning_phase.sweep import grid
from lightning_phase.sweep.runner import Outcome, Runner, classify, start_child, stop_child
from lightning_phase.sweep.spec import SweepSpec, override

WORKER_KEY = "lp:worker"
TRIAL_ARGS = "trial_args.yaml"   # base path and overrides of the trial (config.yaml: resolved)
BASE_FILE = "base.yaml"


@dataclass
class WorkerOptions:
    """How a worker runs trials: where runs go, how often it proves it is alive, when others are dead."""

    runs_dir: Path
    heartbeat: float = 5.0      # seconds between heartbeats of a running trial
    grace: float = 30.0         # a RUNNING trial without heartbeat for this long is failed and retried
    threads: int = 1            # torch/OpenMP threads per trial (DESIGN.md: one per job)
    poll: float = 0.5           # seconds between looks at the storage when idle
    max_retries: int = 3        # retries of one point after STALE/INTERRUPTED/ENVIRONMENT within a command


def heartbeat(opts: WorkerOptions) -> Heartbeat:
    """The storage heartbeat of a worker: stale trials are marked STALE, failed, and retried."""
    def mark(t: FrozenTrial, silent_s: float) -> dict[str, Any]:
        return {"fail_reason": Outcome.STALE.value,
                "error": f"no heartbeat for {silent_s:.0f} s (worker {t.system_attrs.get(WORKER_KEY)})"}
    return Heartbeat(opts.heartbeat, opts.grace, on_stale=grid.retry(opts.max_retries), mark=mark)


@dataclass
class StudyHandle:
    """One process's view of a study: its own storage connection (never shared across fork)."""

    storage: BaseStorage
    study: optuna.Study
    spec: SweepSpec

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)


def sampler_for(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """Every trial is enqueued with its params fixed (a grid point, a threshold run): any sampler will do."""
    return optuna.samplers.RandomSampler(seed=0)


def trial_params(h: StudyHandle, trial: optuna.Trial, frozen: FrozenTrial) -> dict[str, Any]:
    """The trial's point (its enqueued ``fixed_params``), each value suggested under
    :func:`grid.grid_distribution` of the values its key can take, so that Optuna's tools sort and scale
    numeric keys."""
    values = dict(h.spec.grid)
    thr = h.spec.threshold
    if thr is not None:
        values.update({thr.seed_key: list(thr.seeds), thr.width_key: [1, 2 ** 30]})   # widths: bisection's
        values[thr.budget_key] = [1, thr.budget_max or 1]        # a rerun of an UNDECIDED run, budget doubled
        if thr.data_seed_key is not None:                         # each seed its own data set
            values[thr.data_seed_key] = list(thr.seeds)
    fixed = frozen.system_attrs.get("fixed_params") or {}
    return {k: grid.suggest(trial, k, values[k]) for k in sorted(fixed)}


def trial_overrides(spec: SweepSpec, params: dict[str, Any], runs_dir: Path, version: str) -> list[str]:
    """The overrides of a trial on top of the base: ``fixed``, its grid point, then its logger, whose run
    directory (TensorBoard logs, config.yaml, summary.json) is runs_dir/<study>/<version>."""
    logger = {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
              "init_args": {"save_dir": str(runs_dir), "name": spec.name, "version": version,
                            "default_hp_metric": False}}
    return [*spec.overrides(params), override("trainer.logger", logger),
            "--trainer.enable_progress_bar=false"]


def base_path(spec: SweepSpec, runs_dir: Path) -> Path:
    """Where the sweep's base config is written for its trials: runs_dir/<study>/base.yaml."""
    return runs_dir / spec.name / BASE_FILE


def write_base(spec: SweepSpec, runs_dir: Path) -> Path:
    """Write the base config for the trials (atomically: two commands of one study may write it at once)."""
    path = base_path(spec, runs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{BASE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(spec.base, sort_keys=False))
    os.replace(tmp, path)
    return path


def run_one(h: StudyHandle, opts: WorkerOptions, runner: Runner, trial_id: int, t_claim: float) -> Outcome:
    """Run a claimed trial in a child process and record its outcome (summary.json → user attrs)."""
    st = h.storage
    frozen = st.get_trial(trial_id)
    if not grid.is_live(h.trials(), frozen):
        _record(h, trial_id, Outcome.SURPLUS, "another trial holds this grid point; nothing ran")
        return Outcome.SURPLUS
    st.set_trial_system_attr(trial_id, WORKER_KEY, f"{socket.gethostname()}:{os.getpid()}")
    params = trial_params(h, optuna.trial.Trial(h.study, trial_id), frozen)
    version = trial_name(frozen.number, params)
    run_dir = opts.runs_dir / h.spec.name / version
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SUMMARY_FILE).unlink(missing_ok=True)
    overrides = trial_overrides(h.spec, params, opts.runs_dir, version)
    history = frozen.system_attrs.get("retry_history") or []
    if history:   # a retry resumes from its predecessor's last checkpoint, if it left one
        before = trial_folder(opts.runs_dir / h.spec.name, history[-1])
        ckpt = before / "checkpoints" / "last.ckpt" if before is not None else None
        if ckpt is not None and ckpt.is_file():
            overrides.append(f"--ckpt_path={ckpt}")
    base = base_path(h.spec, opts.runs_dir)
    (run_dir / TRIAL_ARGS).write_text(yaml.safe_dump({"base": str(base), "overrides": overrides}, sort_keys=False))
    st.set_trial_user_attr(trial_id, "run_dir", str(run_dir))
    t_fork = time.time()
    proc = start_child(runner, base, overrides, run_dir, opts.threads)
    try:
        with get_heartbeat_thread(trial_id, st):   # Optuna's heartbeat thread, started after the fork
            record = _wait(proc, opts.poll)
    except KeyboardInterrupt:
        stop_child(proc)   # the trial is recorded INTERRUPTED by work()
        raise
    t_child = time.time() - t_fork
    outcome, summary, value, reason = classify(proc.exitcode, run_dir, h.spec.objective)
    summary = summary or record   # summary.json unwritable (disk full): the record came through the pipe
    train = summary.get("wall_seconds") if isinstance(summary.get("wall_seconds"), (int, float)) else None
    t0 = time.time()
    try:
        for key, field_value in trial_attrs(summary).items():   # each scalar its own attribute; no config
            st.set_trial_user_attr(trial_id, key, field_value)
        timing = {"claim_s": t_fork - t_claim, "child_s": t_child, "train_s": train}
        timing["record_s"] = time.time() - t0
        st.set_trial_user_attr(trial_id, "timing", timing)
        if outcome is Outcome.ENVIRONMENT:   # not the run's fault: its point is redone
            fail_and_retry(h, trial_id, outcome, reason, opts.max_retries)
        else:
            _record(h, trial_id, outcome, reason, value)
    except UpdateFinishedTrialError:
        pass  # declared dead meanwhile (heartbeats lost): its retry holds the result
    return outcome


def _wait(proc, poll: float) -> dict[str, Any]:
    """Wait for the child, reading its pipe while it runs (a big record must not block it)."""
    record: dict[str, Any] = {}
    pipe_open = True
    while proc.is_alive() or pipe_open:
        if pipe_open and proc.result.poll(poll):
            try:
                record = proc.result.recv()
            except (EOFError, OSError):
                pipe_open = False
        elif not pipe_open:
            proc.join(timeout=poll)
    proc.join()
    proc.result.close()
    return record


def _record(h: StudyHandle, trial_id: int, outcome: Outcome, reason: str, value: float | None = None) -> None:
    st = h.storage
    if outcome is Outcome.OK:
        st.set_trial_state_values(trial_id, TrialState.COMPLETE, None if value is None else [value])
        return
    st.set_trial_user_attr(trial_id, "fail_reason", outcome.value)
    st.set_trial_user_attr(trial_id, "error", reason)
    st.set_trial_state_values(trial_id, TrialState.FAIL)


def fail_and_retry(h: StudyHandle, trial_id: int, outcome: Outcome, reason: str, max_retries: int) -> None:
    """FAIL the trial (compare-and-set: a reaper may have won) and, if this call won, retry its point."""
    try:
        _record(h, trial_id, outcome, reason)
    except UpdateFinishedTrialError:
        return
    grid.retry(max_retries)(h.study, h.storage.get_trial(trial_id))


# ---- the loop -----------------------------------------------------------------------------------
def work(h: StudyHandle, opts: WorkerOptions, runner: Runner, stop=None) -> int:
    """Run trials until none is WAITING or RUNNING (or, with ``stop`` (an Event), until it is set and
    nothing is waiting). Waits while other workers' trials run, to redo them if those workers die."""
    n = 0
    while True:
        with warnings.catch_warnings():   # fail_stale_trials is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(h.study)
        t_claim = time.time()
        tid = h.study._pop_waiting_trial_id()   # Optuna's pop: WAITING → RUNNING, one winner
        if tid is not None:
            try:
                run_one(h, opts, runner, tid, t_claim)
            except KeyboardInterrupt:   # unless recorded already: INTERRUPTED, and its point enqueued again
                fail_and_retry(h, tid, Outcome.INTERRUPTED, "sweep interrupted", opts.max_retries)
                raise
            except UpdateFinishedTrialError:
                raise
            except Exception as exc:   # a bug or a storage hiccup: fail this trial, keep the worker
                traceback.print_exc()
                try:
                    _record(h, tid, Outcome.CRASHED, f"worker error: {type(exc).__name__}: {exc}"[:300])
                except Exception:
                    time.sleep(opts.poll)
            n += 1
            continue
        if stop.is_set() if stop is not None else not h.trials((TrialState.WAITING, TrialState.RUNNING)):
            return n
        time.sleep(opts.poll)


def raise_keyboard_interrupt(signum, frame):
    """SIGINT/SIGTERM → one KeyboardInterrupt; later ones are ignored, so that recording the trial
    INTERRUPTED is not itself interrupted (Ctrl-C reaches the worker, then the command's SIGTERM)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def worker_main(storage_url: str | None, spec: SweepSpec, study_name: str, opts: WorkerOptions,
                runner: Runner, stop=None) -> None:
    """Entry point of a forked worker process: its own storage connection, SIGTERM = Ctrl-C."""
    from lightning_phase.storage import open_storage

    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, raise_keyboard_interrupt)
    try:
        storage = open_storage(storage_url, heartbeat(opts))
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler_for(spec))
        work(StudyHandle(storage, study, spec), opts, runner, stop)
    except KeyboardInterrupt:
        os._exit(130)
    os._exit(0)
