"""The jamming threshold h*: for each group (P, depth, dataset, ... = a point of the spec's grid) the
smallest width at which a strict majority of seeds fits (N_Δ = 0) [JAM], found by bisection on integers.

The search is a pure function of the results so far (:func:`search`), replayed from the study on every
look: the driver keeps no state of its own, so a restarted search continues where it stopped and every
run behind an h* stays in the study. The driver enqueues the seeds of the next width of each group as
WAITING trials; the workers (the same as a grid sweep's) run them.

Bracket: width_min − 1 is taken as unfitted and width_max + 1 as fitted; bisection on the integers in
between tries ⌈log2(width_max − width_min + 2)⌉ widths (≤ log2(width_max/width_min) + 3 for width_min ≤ 4);
if even width_max does not fit, the bracket doubles upward (at most ``max_doublings`` times). A linear
scan would need up to width_max − width_min + 1 widths.
Fitting is assumed monotone in h; a run that diverged or crashed counts as not fitted.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState

from lightning_phase.summary import trial_record
from lightning_phase.sweep.spec import SweepSpec, ThresholdSpec
from lightning_phase.sweep.worker import RETRIED, StudyHandle, is_final_failure

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


def _key(group: dict[str, Any]) -> str:
    return json.dumps(group, sort_keys=True)


def collect(h: StudyHandle) -> dict[tuple[str, int, int], list]:
    """(group key, width, seed) → the trials of that run, retried (STALE/INTERRUPTED) FAILs left out."""
    thr = h.spec.threshold
    out: dict[tuple[str, int, int], list] = {}
    for t in h.trials():
        params = dict(t.system_attrs.get("fixed_params") or {})
        if thr.width_key not in params or thr.seed_key not in params:
            continue
        if t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") in RETRIED:
            continue
        w, s = params.pop(thr.width_key), params.pop(thr.seed_key)
        out.setdefault((_key(params), w, s), []).append(t)
    return out


def _fitted(trial) -> bool:
    summary = trial_record(trial.user_attrs)
    return trial.state == TrialState.COMPLETE and summary.get("n_delta") == 0


def step(h: StudyHandle) -> tuple[bool, list[dict[str, Any]]]:
    """One look: enqueue the next width's missing runs of every group; (all finished?, per-group results)."""
    thr = h.spec.threshold
    runs = collect(h)
    finished, results = True, []
    for group in groups(h.spec):
        gk = _key(group)
        fitted: dict[int, bool] = {}
        for w in sorted({w for (k, w, _) in runs if k == gk}):
            trials = [runs.get((gk, w, s), []) for s in thr.seeds]
            final = [next((t for t in ts if t.state.is_finished()), None) for ts in trials]
            if all(t is not None for t in final):
                fitted[w] = sum(_fitted(t) for t in final) * 2 > len(thr.seeds)
        s = search(thr, fitted)
        if s.next_width is not None:
            finished = False
            for seed in thr.seeds:
                if (gk, s.next_width, seed) not in runs:
                    h.study.enqueue_trial({**group, thr.width_key: s.next_width, thr.seed_key: seed},
                                          skip_if_exists=False)
        results.append(_result(group, s, fitted, runs, gk, thr))
    return finished, results


def _result(group, s: Search, fitted, runs, gk, thr: ThresholdSpec) -> dict[str, Any]:
    n_star = None
    if s.h_star is not None:
        for seed in thr.seeds:
            for t in runs.get((gk, s.h_star, seed), []):
                n_star = n_star or trial_record(t.user_attrs).get("n_params")
    trials = sorted(t.number for (k, _, _), ts in runs.items() if k == gk for t in ts)
    return {"group": group, "h_star": s.h_star, "n_star": n_star, "bracket": list(s.bracket),
            "open_below": s.open_below, "open_above": s.open_above, "widths": s.path,
            "fitted": {str(w): fitted[w] for w in s.path if w in fitted}, "trials": trials,
            "finished": s.next_width is None}


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


def format_results(results: list[dict[str, Any]]) -> str:
    """One line per group: h*, N*, P/N*, the bracket and the widths tried."""
    lines = []
    for r in results:
        g = " ".join(f"{k.split('.')[-1]}={v}" for k, v in r["group"].items()) or "(all)"
        if r["h_star"] is None:
            ans = "unfinished" if not r["finished"] else f"h* > {r['bracket'][0]} (nothing fits; raise width_max)"
        else:
            ans = f"h*={r['h_star']}" + (" (≤; lower width_min)" if r["open_below"] else "")
            p = r["group"].get("data.n_train")
            ans += f"  N*={r['n_star']}" + (f"  P/N*={p / r['n_star']:.2f}" if p and r["n_star"] else "")
        tried = ",".join(f"{w}{'+' if r['fitted'].get(str(w)) else '-'}" for w in r["widths"])
        lines.append(f"{g}: {ans}  bracket={tuple(r['bracket'])}  widths tried={tried}  runs={len(r['trials'])}")
    return "\n".join(lines)


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
