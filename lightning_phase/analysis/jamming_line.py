"""The jamming line from a threshold search: N* = aP (+ b) with confidence intervals, r* = P/N* per family.

Input: the per-group results of ``lightning-phase threshold`` (``sweep.threshold``: group, h_star, n_star,
n_lo = N at the bracket's lower end). A *family* is a group without its P key (e.g. one depth); each family
with N* at two or more values of P gets

- ``slope``: a of N* = aP (least squares through the origin), with its t-interval at ``level`` (n − 1 dof);
- ``affine``: (a, b) of N* = aP + b with t-intervals (n − 2 dof; three or more P);
- ``slope_bracket``: a fitted to the bracket ends instead (N_lo, where every N_lo is known, and N*): how far
  the search's resolution alone moves the slope;
- ``r_star``: P/N* averaged over P ([JAM]: r* ≈ 3 for random data at L = 3), with its range over the P and
  over the brackets (P/N* ≤ r < P/N_lo).
No training, no Lightning: numbers in, numbers out.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def _t(level: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, dof))


def fit_through_origin(p: np.ndarray, n: np.ndarray, level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """a of n = a·p by least squares, with its t-interval (len(p) − 1 dof; (nan, nan) with one point)."""
    a = float(np.sum(p * n) / np.sum(p * p))
    dof = len(p) - 1
    if dof < 1:
        return a, (math.nan, math.nan)
    se = math.sqrt(float(np.sum((n - a * p) ** 2)) / dof / float(np.sum(p * p)))
    half = _t(level, dof) * se
    return a, (a - half, a + half)


def fit_affine(p: np.ndarray, n: np.ndarray, level: float = 0.95) -> dict[str, Any] | None:
    """(a, b) of n = a·p + b with t-intervals (len(p) − 2 dof); None with fewer than 3 points."""
    if len(p) < 3:
        return None
    X = np.stack([p, np.ones_like(p)], axis=1)  # (n, 2)
    coef, *_ = np.linalg.lstsq(X, n, rcond=None)
    dof = len(p) - 2
    s2 = float(np.sum((n - X @ coef) ** 2)) / dof
    cov = s2 * np.linalg.inv(X.T @ X)
    t = _t(level, dof)
    a, b = float(coef[0]), float(coef[1])
    ha, hb = t * math.sqrt(cov[0, 0]), t * math.sqrt(cov[1, 1])
    return {"a": a, "a_interval": [a - ha, a + ha], "b": b, "b_interval": [b - hb, b + hb]}


def jamming_line(results: list[dict[str, Any]], p_key: str = "data.n_train",
                 level: float = 0.95) -> list[dict[str, Any]]:
    """One record per family (group without ``p_key``) with N* known at ≥ 2 values of P (module docstring)."""
    families: dict[str, list[tuple[float, float, float | None]]] = {}
    labels: dict[str, dict[str, Any]] = {}
    for r in results:
        group = dict(r.get("group") or {})
        p = group.pop(p_key, None)
        if p is None or not r.get("n_star"):
            continue
        key = json.dumps(group, sort_keys=True)
        labels[key] = group
        families.setdefault(key, []).append((float(p), float(r["n_star"]), r.get("n_lo")))
    out = []
    for key, pts in families.items():
        pts.sort()
        if len(pts) < 2:
            continue
        p = np.array([x[0] for x in pts])
        n = np.array([x[1] for x in pts])
        a, interval = fit_through_origin(p, n, level)
        ratios = p / n
        rec: dict[str, Any] = {
            "family": labels[key], "p": p.tolist(), "n_star": n.tolist(),
            "n_lo": [x[2] for x in pts], "level": level,
            "slope": a, "slope_interval": list(interval), "affine": fit_affine(p, n, level),
            "r_star": float(np.mean(ratios)), "r_star_range": [float(ratios.min()), float(ratios.max())],
            "slope_bracket": None, "r_star_bracket": None,
        }
        if all(x[2] for x in pts):
            n_lo = np.array([float(x[2] or 0.0) for x in pts])  # all set (checked above)
            rec["slope_bracket"] = [fit_through_origin(p, n_lo, level)[0], a]
            rec["r_star_bracket"] = [float(np.min(ratios)), float(np.max(p / n_lo))]
        out.append(rec)
    return out


def format_line(fits: list[dict[str, Any]]) -> str:
    """One line per family: N* = aP with its interval (and aP + b), r* = P/N*."""
    lines = []
    for f in fits:
        fam = " ".join(f"{k.split('.')[-1]}={v}" for k, v in f["family"].items()) or "(all)"
        lo, hi = f["slope_interval"]
        pct = round(100 * f["level"])
        line = (f"{fam}: N* = aP, a = {f['slope']:.3f} ({pct}% CI [{lo:.3f}, {hi:.3f}], {len(f['p'])} P)  "
                f"r* = P/N* = {f['r_star']:.2f} (over P: {f['r_star_range'][0]:.2f}–{f['r_star_range'][1]:.2f})")
        if f["affine"] is not None:
            aff = f["affine"]
            line += f"  affine: a = {aff['a']:.3f} [{aff['a_interval'][0]:.3f}, {aff['a_interval'][1]:.3f}]" \
                    f", b = {aff['b']:.1f} [{aff['b_interval'][0]:.1f}, {aff['b_interval'][1]:.1f}]"
        if f["slope_bracket"] is not None:
            line += f"  a from the bracket ends: {f['slope_bracket'][0]:.3f}–{f['slope_bracket'][1]:.3f}"
        lines.append(line)
    return "\n".join(lines)


def format_results(results: list[dict[str, Any]]) -> str:
    """One line per group of a threshold search's results (``sweep.threshold``, stored in the study): h*, N*,
    P/N*, the bracket and the widths tried (+ SAT, - UNSAT, ? UNDECIDED)."""
    lines = []
    for r in results:
        g = " ".join(f"{k.split('.')[-1]}={v}" for k, v in r["group"].items()) or "(all)"
        if r["h_star"] is None:
            ans = "unfinished" if not r["finished"] else f"h* > {r['bracket'][0]} (nothing fits; raise width_max)"
        else:
            ans = f"h*={r['h_star']}" + (" (≤; lower width_min)" if r["open_below"] else "")
            p = r["group"].get("data.n_train")
            n_lo = r.get("n_lo")
            ans += f"  N*={r['n_star']}" + (f" (N ∈ ({n_lo}, {r['n_star']}])" if n_lo else "")
            if p and r["n_star"]:
                ans += f"  P/N*={p / r['n_star']:.2f}" + (f" [{p / r['n_star']:.2f}, {p / n_lo:.2f})" if n_lo else "")
        mark = {"SAT": "+", "UNSAT": "-", "UNDECIDED": "?"}
        verdicts = r.get("verdicts") or {}
        tried = ",".join(f"{w}{mark.get((verdicts.get(str(w)) or {}).get('verdict') or '', '-')}" for w in r["widths"])
        lo = f"{r['bracket'][0]}?" if r.get("bracket_undecided") else str(r["bracket"][0])
        note = "  (? = UNDECIDED at the budget cap: h* may be lower)" if r.get("bracket_undecided") else ""
        lines.append(f"{g}: {ans}  bracket=({lo}, {r['bracket'][1]})  widths tried={tried}  "
                     f"runs={len(r['trials'])}{note}")
    return "\n".join(lines)
