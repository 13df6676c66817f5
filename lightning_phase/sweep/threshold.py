"""The jamming threshold h*: for each group (P, depth, dataset, ... = a point of the spec's grid) the
smallest width at which a strict majority of seeds is SAT [JAM], found by bisection on integers.

What a run is comes from the run itself, its summary's ``fit_state`` (SAT / UNSAT / UNDECIDED,
observables/jamming.py), never from the sweep. A run that ends UNDECIDED (its budget ran out before the
decision) is run again with the budget doubled (``threshold.budget_key``, up to ``budget_max``); one still
UNDECIDED at the cap is reported as such and is never counted as UNSAT: a width is SAT with a strict
majority of SAT seeds, UNSAT when a SAT majority is impossible even if every UNDECIDED seed were SAT, and
UNDECIDED otherwise. The bisection treats an UNDECIDED width as not fitted (so h* is the smallest width
shown SAT) and the result says so: ``bracket_undecided`` when the bracket's lower end is UNDECIDED (h* could
be lower), ``undecided`` lists every such width.

The search is a pure function of the results so far (:func:`search`), replayed from the study on every
look: the driver keeps no state of its own, so a restarted search continues where it stopped and every
run behind an h* stays in the study. The driver enqueues the seeds of the next width of each group as
WAITING trials; the workers (the same as a grid sweep's) run them.

Bracket: width_min − 1 is taken as unfitted and width_max + 1 as fitted; bisection on the integers in
between tries ⌈log2(width_max − width_min + 2)⌉ widths (≤ log2(width_max/width_min) + 3 for width_min ≤ 4);
if even width_max does not fit, the bracket doubles upward (at most ``max_doublings`` times). A linear
scan would need up to width_max − width_min + 1 widths.
Fitting is assumed monotone in h; a run that diverged or crashed counts as not fitted (FAILED).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState

from lightning_phase.summary import trial_record
from lightning_phase.sweep.grid import RETRIED, is_final_failure
from lightning_phase.sweep.spec import SweepSpec, ThresholdSpec
from lightning_phase.sweep.worker import StudyHandle

THRESHOLD_ATTR = "lp_threshold"


@dataclass
class Search:
    """Where one group's search stands: the next width to run (None when finished) and the answer."""

    next_width: int | None
    bracket: tuple[int, int]               # (largest unfitted width, smallest fitted width)
    h_star: int | None = None
    open_below: bool = False               # width_min already fits: h* ≤ width_min
    open_above: bool = False               # nothing up to the last doubling fits
    path: list[int] = field(default_factory=list)   # widths in the order the bisection visits them


def search(thr: ThresholdSpec, fitted: dict[int, bool]) -> Search:
    """Replay bracketing + bisection over the known ``fitted`` widths; name the next width to run."""
    top = thr.width_max
    lo, hi = thr.width_min - 1, top + 1    # assumed: width_min − 1 unfitted, beyond width_max fitted
    path: list[int] = []
    for _ in range(thr.max_doublings + 1):
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if mid not in fitted:
                return Search(mid, (lo, hi), path=path)
            path.append(mid)
            lo, hi = (lo, mid) if fitted[mid] else (mid, hi)
        if hi <= top:                     # hi was tried and fits; lo was tried (or is width_min − 1)
            return Search(None, (lo, hi), h_star=hi, open_below=hi == thr.width_min, path=path)
        lo, top = top, 2 * top            # nothing up to top fits: double the bracket upward
        hi = top + 1
    return Search(None, (lo, lo), open_above=True, path=path)


def max_widths(thr: ThresholdSpec) -> int:
    """Widths one search tries at most without doubling: ⌈log2(width_max − width_min + 2)⌉, the
    information bound for an integer answer among width_min … width_max or "none fits"."""
    return math.ceil(math.log2(thr.width_max - thr.width_min + 2))


def groups(spec: SweepSpec) -> list[dict[str, Any]]:
    return spec.points() if spec.grid else [{}]


def _threshold(spec: SweepSpec) -> ThresholdSpec:
    """The ``threshold:`` section of a threshold study's spec."""
    if spec.threshold is None:
        raise ValueError(f"study {spec.name}: not a threshold study (no threshold: section)")
    return spec.threshold


def _key(group: dict[str, Any]) -> str:
    return json.dumps(group, sort_keys=True)


def base_budget(spec: SweepSpec) -> Any:
    """The budget (``threshold.budget_key``) of a run without a rerun: from ``fixed``, else from ``base``."""
    key = _threshold(spec).budget_key
    if key in spec.fixed:
        return spec.fixed[key]
    node: Any = spec.base
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def collect(h: StudyHandle) -> dict[tuple[str, int, int], list]:
    """(group key, width, seed) → [(budget, trial), ...] of that run, retried (STALE/INTERRUPTED) FAILs left out;
    budget = the run's ``budget_key`` (the base's unless it is a rerun)."""
    thr = _threshold(h.spec)
    budget0 = base_budget(h.spec)
    out: dict[tuple[str, int, int], list] = {}
    for t in h.trials():
        params = dict(t.system_attrs.get("fixed_params") or {})
        if thr.width_key not in params or thr.seed_key not in params:
            continue
        if t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") in RETRIED:
            continue
        w, s = params.pop(thr.width_key), params.pop(thr.seed_key)
        if thr.data_seed_key is not None:
            params.pop(thr.data_seed_key, None)
        budget = params.pop(thr.budget_key, budget0) if thr.budget_max is not None else budget0
        out.setdefault((_key(params), w, s), []).append((budget, t))
    return out


SAT, UNSAT, UNDECIDED, FAILED = "SAT", "UNSAT", "UNDECIDED", "FAILED"


def outcome(trial) -> str:
    """SAT / UNSAT / UNDECIDED from the run's summary ``fit_state``; FAILED for a trial that did not complete
    or diverged. A summary without ``fit_state`` (older runs): SAT if N_Δ = 0, else UNDECIDED."""
    summary = trial_record(trial.user_attrs)
    if trial.state != TrialState.COMPLETE or summary.get("stop_reason") == "DIVERGED":
        return FAILED
    state = summary.get("fit_state")
    if state in (SAT, UNSAT, UNDECIDED):
        return state
    return SAT if summary.get("n_delta") == 0 else UNDECIDED


def run_outcome(thr: ThresholdSpec, runs: list) -> tuple[str | None, Any]:
    """(outcome, budget) of one (width, seed) run from its trials [(budget, trial)]: the finished trial with
    the largest budget decides; None while that one is still running, or when an UNDECIDED run gets a rerun
    with the doubled budget (returned as the budget to enqueue)."""
    done = sorted(((b, t) for b, t in runs if t.state.is_finished()), key=lambda bt: bt[0] or 0)
    pending = [b for b, t in runs if not t.state.is_finished()]
    if not done:
        return None, None
    budget, trial = done[-1]
    if pending and max(b or 0 for b in pending) > (budget or 0):
        return None, None
    state = outcome(trial)
    if state == UNDECIDED and thr.budget_max is not None and isinstance(budget, int) \
            and 2 * budget <= thr.budget_max:
        return None, 2 * budget
    return state, budget


def width_verdict(states: list[str]) -> str:
    """SAT with a strict majority of SAT seeds; UNSAT when a SAT majority is impossible even if every
    UNDECIDED seed were SAT; else UNDECIDED (never counted as UNSAT)."""
    n, n_sat, n_undecided = len(states), states.count(SAT), states.count(UNDECIDED)
    if 2 * n_sat > n:
        return SAT
    return UNDECIDED if 2 * (n_sat + n_undecided) > n else UNSAT


def step(h: StudyHandle) -> tuple[bool, list[dict[str, Any]]]:
    """One look: enqueue the next width's missing runs of every group; (all finished?, per-group results)."""
    thr = _threshold(h.spec)
    runs = collect(h)
    finished, results = True, []
    for group in groups(h.spec):
        gk = _key(group)
        fitted: dict[int, bool] = {}
        verdicts: dict[int, dict[str, Any]] = {}
        for w in sorted({w for (k, w, _) in runs if k == gk}):
            states = []
            for seed in thr.seeds:
                state, budget = run_outcome(thr, runs.get((gk, w, seed), []))
                if state is None and budget is not None and not any(b == budget for b, _ in runs[(gk, w, seed)]):
                    h.study.enqueue_trial({**_params(group, thr, w, seed), thr.budget_key: budget},
                                          skip_if_exists=False)
                states.append(state)
            if all(st is not None for st in states):
                v = width_verdict([st for st in states if st is not None])  # all set (checked above)
                fitted[w] = v == SAT
                verdicts[w] = {"verdict": v, **{k: states.count(k) for k in (SAT, UNSAT, UNDECIDED, FAILED)}}
            else:
                finished = False
        s = search(thr, fitted)
        if s.next_width is not None:
            finished = False
            for seed in thr.seeds:
                if (gk, s.next_width, seed) not in runs:
                    h.study.enqueue_trial(_params(group, thr, s.next_width, seed), skip_if_exists=False)
        results.append(_result(group, s, verdicts, runs, gk, thr))
    return finished, results


def _params(group: dict[str, Any], thr: ThresholdSpec, width: int, seed: int) -> dict[str, Any]:
    """A run's trial params: the group, the width, the init seed (and the data seed with ``data_seed_key``)."""
    out = {**group, thr.width_key: width, thr.seed_key: seed}
    if thr.data_seed_key is not None:
        out[thr.data_seed_key] = seed
    return out


def _n_params(runs, gk, width: int, thr: ThresholdSpec) -> int | None:
    for seed in thr.seeds:
        for _, t in runs.get((gk, width, seed), []):
            n = trial_record(t.user_attrs).get("n_params")
            if n is not None:
                return n
    return None


def _result(group, s: Search, verdicts, runs, gk, thr: ThresholdSpec) -> dict[str, Any]:
    """One group's answer: h*, N* = N(h*), the bracket (lo, hi) in widths and in N (N_lo = N(lo) when lo
    was run), per-width verdicts with seed counts, the UNDECIDED widths, the trials behind it."""
    n_star = _n_params(runs, gk, s.h_star, thr) if s.h_star is not None else None
    lo = s.bracket[0]
    n_lo = _n_params(runs, gk, lo, thr) if lo >= thr.width_min else None
    trials = sorted(t.number for (k, _, _), ts in runs.items() if k == gk for _, t in ts)
    undecided = sorted(w for w, v in verdicts.items() if v["verdict"] == UNDECIDED)
    return {"group": group, "h_star": s.h_star, "n_star": n_star, "n_lo": n_lo, "bracket": list(s.bracket),
            "open_below": s.open_below, "open_above": s.open_above, "widths": s.path,
            "fitted": {str(w): verdicts[w]["verdict"] == SAT for w in s.path if w in verdicts},
            "verdicts": {str(w): verdicts[w] for w in sorted(verdicts)},
            "undecided": undecided, "bracket_undecided": lo in undecided,
            "trials": trials, "finished": s.next_width is None}


def drive(h: StudyHandle, stop, poll: float = 0.5, alive=lambda: True) -> list[dict[str, Any]]:
    """Enqueue runs until every group's search is finished; store the results in the study; set ``stop``.
    Returns early (unfinished) if ``alive()`` turns False (all workers gone)."""
    try:
        while True:
            finished, results = step(h)
            if finished or not alive():
                break
            time.sleep(poll)
        h.study.set_user_attr(THRESHOLD_ATTR, results)
        return results
    finally:
        stop.set()


def status_counts(h: StudyHandle):
    """done / running / failed trial counts for the progress bar."""
    from collections import Counter

    c = Counter({"done": 0, "running": 0, "failed": 0})
    for t in h.trials():
        if t.state == TrialState.COMPLETE:
            c["done"] += 1
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            c["running"] += 1
        elif is_final_failure(t):
            c["failed"] += 1
    return c
