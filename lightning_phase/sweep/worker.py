"""A sweep worker: claim a trial, run it in a child process, record it; repeat until no work is left.

Exactly one COMPLETE trial per grid point, with any number of workers on any number of machines, rests
on three atomic storage operations and no lock of our own:
- a new trial's number is unique, and GridSampler gives trial number k < n the grid point k; a retry
  is created with its grid point, so where a retry took number k < n, point k goes to the j-th trial
  numbered ≥ n that is not a retry (a function of trial numbers only, hence race-free);
- a WAITING trial is claimed by the compare-and-set WAITING → RUNNING (``set_trial_state_values``
  returns False to the loser);
- a trial whose worker stopped sending heartbeats (``lp:heartbeat``, every ``heartbeat`` s) for longer
  than ``grace`` s is failed with the compare-and-set RUNNING → FAIL; only the worker that wins it
  enqueues the retry (same grid point, WAITING), so a killed worker's point is redone exactly once.
A result is recorded with RUNNING → COMPLETE/FAIL, which loses against a reaper: a worker that was
declared dead does not add a second result.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from lightning_phase.summary import SUMMARY_FILE, trial_attrs
from lightning_phase.sweep.runner import Outcome, Runner, classify, start_child, stop_child
from lightning_phase.sweep.spec import SweepSpec, override

HEARTBEAT_KEY = "lp:heartbeat"
WORKER_KEY = "lp:worker"
TRIAL_ARGS = "trial_args.yaml"   # base path and overrides of the trial (config.yaml: resolved)
BASE_FILE = "base.yaml"
RETRIED = (Outcome.STALE.value, Outcome.INTERRUPTED.value, Outcome.ENVIRONMENT.value)


def is_final_failure(t: FrozenTrial) -> bool:
    """A FAIL that stands: not one whose grid point is retried (STALE, INTERRUPTED), nor a SURPLUS trial."""
    return t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") not in RETRIED + (Outcome.SURPLUS.value,)


@dataclass
class WorkerOptions:
    """How a worker runs trials: where runs go, how often it proves it is alive, when others are dead."""

    runs_dir: Path
    heartbeat: float = 5.0      # seconds between heartbeats of a running trial
    grace: float = 30.0         # a RUNNING trial without heartbeat for this long is failed and retried
    threads: int = 1            # torch/OpenMP threads per trial (DESIGN.md: one per job)
    poll: float = 0.5           # seconds between looks at the storage when idle
    max_retries: int = 3        # retries of one grid point after STALE/INTERRUPTED


@dataclass
class StudyHandle:
    """One process's view of a study: its own storage connection (never shared across fork)."""

    storage: BaseStorage
    study: optuna.Study
    spec: SweepSpec

    @property
    def study_id(self) -> int:
        return self.storage.get_study_id_from_name(self.study.study_name)

    @property
    def n_grid(self) -> int | None:
        """Number of grid points for a grid sweep; None for a threshold search (driver-enqueued trials)."""
        return None if self.spec.threshold is not None else self.spec.n_points

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)

    def stored_distribution(self, key: str) -> BaseDistribution | None:
        """The distribution an earlier trial of the study stored for parameter ``key`` (None if none did)."""
        for t in self.trials():
            if key in t.distributions:
                return t.distributions[key]
        return None


def sampler_for(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """GridSampler over the spec's grid (threshold trials carry fixed params; any sampler will do)."""
    if spec.threshold is not None:
        return optuna.samplers.RandomSampler(seed=0)
    return optuna.samplers.GridSampler(spec.grid, seed=0)


# ---- the three atomic steps ---------------------------------------------------------------------
def claim(h: StudyHandle) -> int | None:
    """A trial id now RUNNING for this worker: a WAITING one (a retry, or a threshold run), else a new
    grid trial while fewer than n trials exist; None when there is nothing to claim."""
    sid = h.study_id
    for t in h.trials((TrialState.WAITING,)):
        if h.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
            return t._trial_id
    if h.n_grid is not None and _points_without_trial(h):
        return h.storage.create_new_trial(sid)
    return None


def _grid_size(h: StudyHandle) -> int:
    """n, the number of grid points (the grid rules below apply to grid studies only)."""
    if h.n_grid is None:
        raise ValueError(f"study {h.spec.name}: not a grid study (no grid points)")
    return h.n_grid


def _stolen(h: StudyHandle, ts: list[FrozenTrial]) -> list[int]:
    """Grid points k < n whose trial number k was taken by a retry, sorted."""
    n = _grid_size(h)
    return sorted(t.number for t in ts if t.number < n and "failed_trial" in t.system_attrs)


def _points_without_trial(h: StudyHandle) -> bool:
    ts, n = h.trials(), _grid_size(h)
    if len(ts) < n:
        return True
    extra = sum(t.number >= n and "failed_trial" not in t.system_attrs for t in ts)
    return extra < len(_stolen(h, ts))


def grid_id_of(h: StudyHandle, t: FrozenTrial) -> int | None:
    """The grid point of a trial: its stored grid_id, else the one its number gives (GridSampler's rule,
    then :func:`extra_grid_id`), so a trial killed before it stored its point still has one."""
    if "grid_id" in t.system_attrs:
        return t.system_attrs["grid_id"]
    return t.number if t.number < _grid_size(h) else extra_grid_id(h, t.number)


def extra_grid_id(h: StudyHandle, number: int) -> int | None:
    """The grid point of new trial ``number`` ≥ n: the j-th point whose number a retry took, j = number of
    non-retry trials numbered in [n, number); None (surplus) when there is no such point."""
    ts = h.trials()
    stolen = _stolen(h, ts)
    j = sum(_grid_size(h) <= t.number < number and "failed_trial" not in t.system_attrs for t in ts)
    return stolen[j] if j < len(stolen) else None


def heartbeat(h: StudyHandle, trial_id: int) -> None:
    try:
        h.storage.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())
    except UpdateFinishedTrialError:
        pass  # reaped meanwhile; the result will be refused at the end


def reap_stale(h: StudyHandle, grace: float, max_retries: int) -> list[int]:
    """Fail every RUNNING trial silent for > grace s and enqueue its retry; returns the failed numbers."""
    reaped = []
    now = time.time()
    for t in h.trials((TrialState.RUNNING,)):
        last = t.system_attrs.get(HEARTBEAT_KEY) or (t.datetime_start.timestamp() if t.datetime_start else now)
        reason = f"no heartbeat for {now - last:.0f} s (worker {t.system_attrs.get(WORKER_KEY)})"
        if now - last > grace and fail_and_retry(h, t, Outcome.STALE, reason, max_retries):
            reaped.append(t.number)
    return reaped


def fail_and_retry(h: StudyHandle, t: FrozenTrial, outcome: Outcome, reason: str, max_retries: int) -> bool:
    """RUNNING → FAIL (compare-and-set); the winner enqueues one WAITING copy of the trial's point."""
    try:
        h.storage.set_trial_user_attr(t._trial_id, "fail_reason", outcome.value)
        h.storage.set_trial_user_attr(t._trial_id, "error", reason)
        h.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False  # someone else finished or failed it first
    history = list(t.system_attrs.get("retry_history", [])) + [t.number]
    if len(history) > max_retries:
        return True
    keep = {k: v for k, v in t.system_attrs.items() if k in ("grid_id", "search_space", "fixed_params")}
    if h.n_grid is not None and "grid_id" not in keep:   # killed before it stored its point
        g = grid_id_of(h, t)
        if g is None:
            return True
        keep.update(grid_id=g, search_space=h.spec.grid)
    h.study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=t.params, distributions=t.distributions,
        system_attrs={**keep, "failed_trial": history[0], "retry_history": history}))
    return True


# ---- one trial ----------------------------------------------------------------------------------
def trial_params(h: StudyHandle, trial: optuna.Trial, frozen: FrozenTrial) -> dict[str, Any]:
    """The trial's point: grid values via GridSampler, or the fixed params of an enqueued trial. Numeric
    grid keys are suggested as numbers (see :func:`suggest`), so Optuna's tools sort and scale them."""
    thr = h.spec.threshold
    if thr is None:
        return {k: suggest(h, trial, k, h.spec.grid[k]) for k in sorted(h.spec.grid)}
    fixed = frozen.system_attrs.get("fixed_params") or {}
    params = {k: suggest(h, trial, k, h.spec.grid[k]) for k in sorted(h.spec.grid) if k in fixed}
    params[thr.seed_key] = suggest(h, trial, thr.seed_key, list(thr.seeds))
    params[thr.width_key] = suggest(h, trial, thr.width_key, [1, 2 ** 30])   # widths are bisection's choice
    if thr.budget_key in fixed and thr.budget_max is not None:   # a rerun of an UNDECIDED run, budget doubled
        params[thr.budget_key] = suggest(h, trial, thr.budget_key, [1, thr.budget_max])
    if thr.data_seed_key is not None and thr.data_seed_key in fixed:   # each seed its own data set
        params[thr.data_seed_key] = suggest(h, trial, thr.data_seed_key, list(thr.seeds))
    return params


def grid_distribution(values: list[Any]) -> BaseDistribution:
    """The Optuna distribution of a grid key's values: IntDistribution for integers, FloatDistribution for
    numbers, log-scaled where the values are geometric (all > 0 and, for three values or more, more evenly
    spaced in log than in linear; two values: a ratio ≥ 10); CategoricalDistribution otherwise (strings,
    bools, None, mixed)."""
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(nums) != len(values) or not nums or any(v != v or abs(v) == float("inf") for v in nums):
        return CategoricalDistribution(values)
    lo, hi = min(nums), max(nums)
    distinct = sorted(set(nums))
    log = lo > 0 and (_more_even_in_log(distinct) if len(distinct) >= 3 else hi >= 10 * lo)
    if all(isinstance(v, int) for v in nums):
        return IntDistribution(int(lo), int(hi), log=log)
    return FloatDistribution(float(lo), float(hi), log=log)


def _more_even_in_log(v: list[float]) -> bool:
    def spread(gaps):
        m = sum(gaps) / len(gaps)
        return (sum((g - m) ** 2 for g in gaps) / len(gaps)) ** 0.5 / m
    lin = [b - a for a, b in zip(v, v[1:], strict=False)]
    lg = [math.log(b / a) for a, b in zip(v, v[1:], strict=False)]
    return spread(lg) <= spread(lin)


def suggest(h: StudyHandle, trial: optuna.Trial, key: str, values: list[Any]) -> Any:
    """``trial``'s value of grid key ``key`` under :func:`grid_distribution` — or, in a study whose earlier
    trials stored the key as a category (written before numeric distributions), as a category still:
    Optuna refuses two kinds of distribution for one parameter of a study."""
    dist = grid_distribution(values)
    earlier = h.stored_distribution(key)
    if earlier is not None and type(earlier) is not type(dist):
        dist = earlier if isinstance(earlier, CategoricalDistribution) else CategoricalDistribution(values)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log)
    assert isinstance(dist, FloatDistribution)  # categorical and int handled above
    return trial.suggest_float(key, dist.low, dist.high, log=dist.log)


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
    st.set_trial_system_attr(trial_id, WORKER_KEY, f"{socket.gethostname()}:{os.getpid()}")
    heartbeat(h, trial_id)
    frozen = st.get_trial(trial_id)
    if h.n_grid is not None and "grid_id" not in frozen.system_attrs:
        g = grid_id_of(h, frozen)
        if g is None:
            _record(h, trial_id, Outcome.SURPLUS, "grid exhausted before this trial was created; nothing ran")
            return Outcome.SURPLUS
        st.set_trial_system_attr(trial_id, "search_space", h.spec.grid)
        st.set_trial_system_attr(trial_id, "grid_id", g)
    trial = optuna.trial.Trial(h.study, trial_id)   # GridSampler reads the point from grid_id
    frozen = st.get_trial(trial_id)
    params = trial_params(h, trial, frozen)
    version = f"trial_{frozen.number:05d}"
    run_dir = opts.runs_dir / h.spec.name / version
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SUMMARY_FILE).unlink(missing_ok=True)
    overrides = trial_overrides(h.spec, params, opts.runs_dir, version)
    history = frozen.system_attrs.get("retry_history") or []
    if history:   # a retry resumes from its predecessor's last checkpoint, if it left one
        ckpt = opts.runs_dir / h.spec.name / f"trial_{history[-1]:05d}" / "checkpoints" / "last.ckpt"
        if ckpt.is_file():
            overrides.append(f"--ckpt_path={ckpt}")
    base = base_path(h.spec, opts.runs_dir)
    (run_dir / TRIAL_ARGS).write_text(yaml.safe_dump({"base": str(base), "overrides": overrides}, sort_keys=False))
    st.set_trial_user_attr(trial_id, "run_dir", str(run_dir))
    t_fork = time.time()
    proc = start_child(runner, base, overrides, run_dir, opts.threads)
    record: dict[str, Any] = {}
    pipe_open = True
    try:
        while proc.is_alive() or pipe_open:
            if pipe_open and proc.result.poll(opts.heartbeat):   # read while it runs: a big record must
                try:                                             # not block the child
                    record = proc.result.recv()
                except (EOFError, OSError):
                    pipe_open = False
            elif not pipe_open:
                proc.join(timeout=opts.heartbeat)
            if proc.is_alive():
                heartbeat(h, trial_id)
        proc.join()
        proc.result.close()
    except KeyboardInterrupt:
        stop_child(proc)
        fail_and_retry(h, st.get_trial(trial_id), Outcome.INTERRUPTED, "sweep interrupted", opts.max_retries)
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
            fail_and_retry(h, st.get_trial(trial_id), outcome, reason, opts.max_retries)
        else:
            _record(h, trial_id, outcome, reason, value)
    except UpdateFinishedTrialError:
        pass  # declared dead meanwhile (heartbeats lost): its retry holds the result
    return outcome


def _record(h: StudyHandle, trial_id: int, outcome: Outcome, reason: str, value: float | None = None) -> None:
    st = h.storage
    if outcome is Outcome.OK:
        st.set_trial_state_values(trial_id, TrialState.COMPLETE, None if value is None else [value])
        return
    st.set_trial_user_attr(trial_id, "fail_reason", outcome.value)
    st.set_trial_user_attr(trial_id, "error", reason)
    st.set_trial_state_values(trial_id, TrialState.FAIL)


# ---- the loop -----------------------------------------------------------------------------------
def grid_finished(h: StudyHandle) -> bool:
    """No trial WAITING or RUNNING and every grid trial created."""
    if h.trials((TrialState.WAITING, TrialState.RUNNING)):
        return False
    return h.n_grid is None or not _points_without_trial(h)


def work(h: StudyHandle, opts: WorkerOptions, runner: Runner, stop=None) -> int:
    """Run trials until the grid is finished (or, with ``stop`` (an Event), until it is set and nothing
    is waiting). Waits while other workers' trials run, to redo them if those workers die."""
    n = 0
    while True:
        reap_stale(h, opts.grace, opts.max_retries)
        t_claim = time.time()
        tid = claim(h)
        if tid is not None:
            try:
                run_one(h, opts, runner, tid, t_claim)
            except (KeyboardInterrupt, UpdateFinishedTrialError):
                raise
            except Exception as exc:   # a bug or a storage hiccup: fail this trial, keep the worker
                traceback.print_exc()
                try:
                    _record(h, tid, Outcome.CRASHED, f"worker error: {type(exc).__name__}: {exc}"[:300])
                except Exception:
                    time.sleep(opts.poll)
            n += 1
            continue
        if (stop.is_set() if stop is not None else grid_finished(h)):
            return n
        time.sleep(opts.poll)


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def worker_main(storage_url: str | None, spec: SweepSpec, study_name: str, opts: WorkerOptions,
                runner: Runner, stop=None) -> None:
    """Entry point of a forked worker process: its own storage connection, SIGTERM = Ctrl-C."""
    from lightning_phase.storage import open_storage

    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    storage = open_storage(storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler_for(spec))
    try:
        work(StudyHandle(storage, study, spec), opts, runner, stop)
    except KeyboardInterrupt:
        os._exit(130)
    os._exit(0)
