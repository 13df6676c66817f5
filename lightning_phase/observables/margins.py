"""Margins Δ = 1 − yF, N_Δ, and the exponents of the Δ distribution near 0 at jamming (SCIENCE.md §2, §4).

[JAM]: P₊(Δ) ∼ Δ^θ for Δ → 0⁺ and P₋(Δ) ∼ (−Δ)^{−γ} for Δ → 0⁻ (θ ≈ 0.3, γ ≈ 0.2 measured).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from torch import Tensor

from lightning_phase.losses import margins, n_delta
from lightning_phase.observables._stats import bootstrap

__all__ = ["TailFit", "log_histogram", "margins", "n_delta", "power_law_mle", "tail_exponents"]


def power_law_mle(values: np.ndarray, k: int) -> tuple[float, float]:
    """MLE of the exponent a of p(v) ∝ v^a near v = 0 from the k smallest positive values.

    With u = v_(k+1) (the (k+1)-th smallest), the k smaller values are i.i.d. with density
    (a+1)v^a/u^{a+1} on (0, u), so a+1 = (k − 1)/S, S = Σ_{i≤k} log(u/v_(i)) (the (k−1) makes 1/(a+1)
    unbiased — the lower-tail Hill estimator). Returns (a, u). Needs k+1 ≤ len(values).
    """
    v = np.sort(values)
    u = v[k]
    s = float(np.sum(np.log(u / v[:k])))
    return (k - 1) / s - 1.0, float(u)


def _fit_side(v: np.ndarray, k_min: int, k: int | None, n_grid: int = 40,
              cutoff: str = "ks_pass") -> tuple[float, int, float]:
    """(a, k, u) for one side: k given, or among ~n_grid log-spaced k in [k_min, n−1] — ``cutoff="ks_pass"``:
    the largest k at which a Kolmogorov–Smirnov test does not reject the fitted law at the 10% level
    (√k·D_k < 1.224), the widest range near 0 consistent with a power law (k_min if none passes);
    ``cutoff="csn"``: the k minimising the KS distance D_k (Clauset, Shalizi & Newman 2009)."""
    v = np.sort(v)
    n = len(v)
    if k is not None:
        a, u = power_law_mle(v, min(k, n - 1))
        return a, min(k, n - 1), u
    logv = np.log(v)
    cum = np.cumsum(logv)
    chosen, best_d = None, math.inf
    for kk in np.unique(np.geomspace(k_min, n - 1, n_grid).astype(int)):
        s = kk * logv[kk] - cum[kk - 1]  # Σ_{i<kk} log(u/v_i), u = v[kk]
        a1 = (kk - 1) / s  # a + 1
        model = np.exp(a1 * (logv[:kk] - logv[kk]))  # fitted CDF (v/u)^{a+1} at the k smallest values
        emp_hi = np.arange(1, kk + 1) / kk
        d = max(np.max(np.abs(emp_hi - model)), np.max(np.abs(emp_hi - 1 / kk - model)))
        take = d < best_d if cutoff == "csn" else np.sqrt(kk) * d < _KS_10PCT
        if chosen is None or take:
            chosen, best_d = (a1 - 1.0, int(kk), float(v[kk])), min(best_d, d)
    assert chosen is not None  # the first candidate k is always taken
    return chosen


_KS_10PCT = 1.224  # asymptotic Kolmogorov critical value √k·D at the 10% level


@dataclass(frozen=True)
class TailFit:
    """θ, γ with bootstrap standard errors; k_* = values used, cut_* = |Δ| cutoff u, n_* = values per side.

    Flags: floor_* — the cutoff rule fell back to its floor k = k_min (ks_pass: no k passed the KS test; the
    fit is not a power law over any wider range); pos_below_tol — every Δ > 0 used for θ is ≤ ``tol``: they
    are round-off / optimiser leftovers of a SAT run (Δ → 0⁺), not a jamming tail; cutoff — the rule used."""

    theta: float | None
    theta_err: float | None
    gamma: float | None
    gamma_err: float | None
    k_pos: int
    k_neg: int
    cut_pos: float | None
    cut_neg: float | None
    n_pos: int
    n_neg: int
    floor_pos: bool = False
    floor_neg: bool = False
    pos_below_tol: bool = False
    cutoff: str = "ks_pass"

    def as_dict(self) -> dict:
        return asdict(self)


def tail_exponents(delta: Tensor | np.ndarray, k: int | None = None, k_min: int = 50, n_boot: int = 200,
                   seed: int = 0, cutoff: str = "ks_pass", tol: float = 1e-3) -> TailFit:
    """θ and γ of the Δ distribution near 0, by maximum likelihood, with bootstrap standard errors.

    Δ>0 side: p(Δ) ∝ Δ^θ, θ = a from ``power_law_mle`` on the k smallest positive Δ.
    Δ<0 side: p(−Δ) ∝ (−Δ)^{−γ}, γ = −a on the k smallest −Δ.
    Cutoff rule: ``k`` if given (same on both sides, capped at n_side − 1); else, per side, the largest
    k ≥ k_min (log grid) whose k smallest values pass a KS test (10% level) against the fitted law: the
    widest range near 0 where the power law holds. Errors: std over ``n_boot`` resamples (with
    replacement) of that side, the whole procedure (cutoff included) redone on each; numpy Generator
    seeded with ``seed``.
    ``cutoff="csn"``: per side the k minimising the KS distance instead (Clauset–Shalizi–Newman).
    delta: any shape, all entries pooled; exact zeros are dropped. A side with ≤ k_min values gives None.
    Flags (``TailFit``): the cutoff at its floor k_min; the fitted Δ > 0 all ≤ ``tol`` (the SAT tolerance δ).
    """
    if cutoff not in ("ks_pass", "csn"):
        raise ValueError(f"cutoff: got {cutoff!r}; expected 'ks_pass' or 'csn'")
    d = delta.detach().cpu().double().numpy() if isinstance(delta, Tensor) else np.asarray(delta, float)
    d = d.reshape(-1)
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[float | None, float | None, int, float | None, int]] = {}  # (exponent, err, k, u, n)
    for side, v, sign in (("pos", d[d > 0], 1.0), ("neg", -d[d < 0], -1.0)):
        if len(v) <= max(k_min, 2) or (k is not None and len(v) <= 2):
            out[side] = (None, None, 0, None, len(v))
            continue
        a, kk, u = _fit_side(v, k_min, k, cutoff=cutoff)
        def exponent(idx: np.ndarray, v: np.ndarray = v) -> float:
            return _fit_side(v[idx], k_min, k, cutoff=cutoff)[0]

        boots = bootstrap(exponent, len(v), n_boot, rng)
        err = float(np.std(boots, ddof=1)) if n_boot > 1 else None
        out[side] = (sign * a, err, kk, u, len(v))
    (th, the, kp, up, npos), (ga, gae, kn, un, nneg) = out["pos"], out["neg"]
    auto = k is None
    return TailFit(th, the, ga, gae, kp, kn, up, un, npos, nneg,
                   floor_pos=auto and th is not None and kp == k_min,
                   floor_neg=auto and ga is not None and kn == k_min,
                   pos_below_tol=up is not None and up <= tol, cutoff=cutoff)


def log_histogram(values: Tensor | np.ndarray, lo: float = 1e-9, hi: float = 1e4,
                  bins_per_decade: int = 4, n_total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Density of the positive ``values`` on log-spaced bins from lo to hi (for display of the tails).

    Returns (centres (B,), density (B,)): count/(n·width), n = ``n_total`` or the number of values given
    (pass n_total = P for the two sides of Δ so that their densities add up to the full distribution).
    """
    v = values.detach().cpu().double().numpy() if isinstance(values, Tensor) else np.asarray(values, float)
    v = v.reshape(-1)
    n_bins = int(round(bins_per_decade * math.log10(hi / lo)))
    edges = np.geomspace(lo, hi, n_bins + 1)
    counts, _ = np.histogram(v[v > 0], bins=edges)
    density = counts / (max(n_total or len(v), 1) * np.diff(edges))
    return np.sqrt(edges[:-1] * edges[1:]), density

