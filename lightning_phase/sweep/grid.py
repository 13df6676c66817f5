"""The exactly-once rule of a grid sweep: every grid point ends with exactly one COMPLETE trial (or a
final failure), with any number of sweep commands, workers and machines on one storage, through kills,
restarts and retries — and no lock of our own.

The rule. Every trial of a grid study carries its point, system attr ``grid_id`` = k (the index of the
point in :meth:`SweepSpec.points`), from the moment it is created WAITING; a retry also carries Optuna's
``retry_history`` (its predecessors' numbers, the last one the trial it redoes). A trial's *slot* is
(k, the trial it redoes or None). A trial is *live* iff no trial with a lower number has its slot and
the trial it redoes (if any) is live; a claimed trial that is not live is recorded SURPLUS and runs
nothing.

The argument.
1. Optuna gives trial numbers in creation order, unique within a study (journal: the order of the
   creating lines in the log; RDB: the study row is locked FOR UPDATE while a trial is created), and no
   trial is ever deleted. A worker reads the trials after its own trial exists, so it sees every trial
   with a lower number: whether its trial is live is decided the same way by every reader, forever.
2. So each slot has at most one live trial, and exactly one once a trial with that slot exists whose
   predecessor is live.
3. A trial is redone only after it is FAIL with a retried reason (STALE, INTERRUPTED, ENVIRONMENT), and
   a trial is FAIL once: Optuna's compare-and-set RUNNING → FAIL has one winner. COMPLETE ends a point.
4. Hence the live trials of point k form one chain: the live fresh trial, its live retry, that one's
   live retry, ... (by 2, at most one live successor per trial; by 3, only after a FAIL). At most one
   trial in the chain is COMPLETE, and nothing follows it.
5. Nothing is lost: at the start of every command :func:`enqueue_missing` enqueues a fresh trial for
   each point without a live one and a retry for each chain that ends in a FAIL to redo (:func:`redo_now`:
   an ENVIRONMENT failure, retried on every rerun; a STALE or INTERRUPTED one with retries left, whose
   worker was killed between its FAIL and its retry). Two commands doing so at once create duplicates;
   by 2 only one is live.
Retries within a command come from Optuna's ``RetryHeartbeatStaleTrialCallback`` (:func:`retry`), called
by the winner of the FAIL (``fail_stale_trials`` for STALE, the trial's worker for INTERRUPTED and
ENVIRONMENT), at most ``max_retries`` per point.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections import Counter
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from lightning_phase.sweep.runner import Outcome

GRID_ID = "grid_id"
RETRIED = (Outcome.STALE.value, Outcome.INTERRUPTED.value, Outcome.ENVIRONMENT.value)
KEEP = (GRID_ID, "fixed_params", "failed_trial", "retry_history")   # what a retry inherits


def slot(t: FrozenTrial) -> tuple[Any, int | None]:
    history = t.system_attrs.get("retry_history") or [None]
    return t.system_attrs.get(GRID_ID), history[-1]


def live(trials: list[FrozenTrial]) -> dict[tuple[Any, int | None], FrozenTrial]:
    """slot → its live trial (module doc), over the trials that have a grid point."""
    out: dict[tuple[Any, int | None], FrozenTrial] = {}
    numbers: set[int] = set()
    for t in sorted(trials, key=lambda t: t.number):   # a predecessor has a lower number than its retry
        s = slot(t)
        if s[0] is not None and s not in out and (s[1] is None or s[1] in numbers):
            out[s] = t
            numbers.add(t.number)
    return out


def is_live(trials: list[FrozenTrial], t: FrozenTrial) -> bool:
    """False for a surplus grid trial (rules 1–2); trials without a grid point (threshold runs) are live."""
    return t.system_attrs.get(GRID_ID) is None or getattr(live(trials).get(slot(t)), "number", None) == t.number


def redo_now(t: FrozenTrial, max_retries: int) -> bool:
    """Whether a command starting now redoes the chain ending in ``t`` (rule 5)."""
    reason = t.user_attrs.get("fail_reason") if t.state == TrialState.FAIL else None
    retries_left = len(t.system_attrs.get("retry_history") or []) < max_retries
    return reason == Outcome.ENVIRONMENT.value or (reason in RETRIED and retries_left)


def is_final_failure(t: FrozenTrial) -> bool:
    """A FAIL that stands: not one whose point is redone (STALE, INTERRUPTED, ENVIRONMENT), nor SURPLUS."""
    return t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") not in RETRIED + (Outcome.SURPLUS.value,)


def retry(max_retries: int | None):
    """Optuna's retry callback (``failed_trial``, ``retry_history``, at most ``max_retries`` retries),
    given a clean copy of the failed trial: the retry inherits its point, not its heartbeat, worker or
    results."""
    with warnings.catch_warnings():   # "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = RetryHeartbeatStaleTrialCallback(max_retry=max_retries)

    def redo(study: optuna.Study, trial: FrozenTrial) -> None:
        clean = copy.deepcopy(trial)   # the callback appends to the retry_history list it is given
        clean.user_attrs = {}
        clean.system_attrs = {k: v for k, v in clean.system_attrs.items() if k in KEEP}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback(study, clean)
    return redo


def chains(trials: list[FrozenTrial]) -> dict[int, FrozenTrial]:
    """grid point → the last trial of its chain of live trials (rule 4)."""
    by_slot = live(trials)
    out = {}
    for (k, predecessor), t in by_slot.items():
        if predecessor is None:
            while (k, t.number) in by_slot:
                t = by_slot[(k, t.number)]
            out[k] = t
    return out


def enqueue_missing(study: optuna.Study, points: list[dict[str, Any]], max_retries: int) -> int:
    """Rule 5: a WAITING trial for each point without a live trial, a retry for each chain that ends in a
    retried FAIL; returns how many were enqueued."""
    trials = study.get_trials(deepcopy=False)
    ends = chains(trials)
    n = 0
    redo = retry(None)   # the limit is redo_now's
    for k, point in enumerate(points):
        end = ends.get(k)
        if end is None:
            study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING,
                                                      system_attrs={"fixed_params": point, GRID_ID: k}))
            n += 1
        elif redo_now(end, max_retries):
            redo(study, end)
            n += 1
    return n


def point_status(trials: list[FrozenTrial], n_points: int, max_retries: int) -> tuple[Counter, Counter]:
    """Grid points by the end of their chain: done (COMPLETE), running (RUNNING/WAITING), failed (a final
    failure, or a retried one without retries left), rerun (redone by the next command), todo; and the
    fail reasons of the failed ones."""
    c = Counter({"done": 0, "running": 0, "failed": 0, "rerun": 0})
    reasons: Counter = Counter()
    for end in chains(trials).values():
        if end.state == TrialState.COMPLETE:
            c["done"] += 1
        elif end.state in (TrialState.RUNNING, TrialState.WAITING):
            c["running"] += 1
        elif redo_now(end, max_retries):
            c["rerun"] += 1
        else:
            c["failed"] += 1
            reasons[end.user_attrs.get("fail_reason", "UNKNOWN")] += 1
    c["todo"] = n_points - sum(c.values())
    return c, reasons


# ---- a point's values as Optuna params ------------------------------------------------------------------
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


def suggest(trial: optuna.Trial, key: str, values: list[Any]) -> Any:
    """``trial``'s value of ``key`` (fixed by its enqueued point) under :func:`grid_distribution`, so that
    Optuna's tools sort and scale numeric keys."""
    dist = grid_distribution(values)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log)
    assert isinstance(dist, FloatDistribution)  # grid_distribution gives one of the three
    return trial.suggest_float(key, dist.low, dist.high, log=dist.log)
