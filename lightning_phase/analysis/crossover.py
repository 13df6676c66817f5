"""The lazy/feature crossover line: α̃*(h) where the kernel change ‖Θ_t − Θ₀‖/‖Θ₀‖ crosses c ([FL], [PD]).

    >>> line = crossover_line(df)                       # doctest: +SKIP  (df: load_study / load_runs)
    >>> line[["width", "alpha_tilde_star", "bracket_lo", "bracket_hi"]]
    >>> crossover_exponent(line, df).exponent           # α* = α̃*/√h ∝ h^b, published b = −1/2

Per width, the kernel change (geometric mean over seeds) is interpolated linearly in log–log between the
two neighbouring α̃ of the grid where it passes c; the bracket is that pair. The change falls with α̃
(∝ α̃⁻¹ on the lazy side), so the crossing taken is the one reached first coming from large α̃. A curve
that stays above c has α̃* > max α̃ (bracket (max α̃, inf), value NaN); one below c, α̃* < min α̃.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from lightning_phase.analysis.stats import DEFAULT_BOOT, DEFAULT_LEVEL, PowerLawFit, fit_power_law


@dataclass(frozen=True)
class Crossing:
    """α̃* = ``value`` (NaN when the curve does not cross inside the grid), between ``bracket`` (grid
    values; inf/0 on an open side); ``crossed`` says whether the curve passes c inside the grid."""

    value: float
    bracket: tuple[float, float]
    crossed: bool

    def as_dict(self) -> dict:
        return {**asdict(self), "bracket": list(self.bracket)}


def crossing(alpha_tilde: Sequence[float], change: Sequence[float], c: float = 1.0) -> Crossing:
    """Where ``change`` (one value per α̃, > 0) crosses ``c``, by log–log interpolation (module doc)."""
    a = np.asarray(alpha_tilde, dtype=np.float64)
    v = np.asarray(change, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(v) & (a > 0) & (v > 0)
    a, v = a[keep], v[keep]
    order = np.argsort(a)
    a, v = a[order], v[order]
    if a.size == 0:
        return Crossing(math.nan, (0.0, math.inf), False)
    s = np.log(v) - math.log(c)                            # > 0: above c (feature side)
    for i in range(a.size - 1, 0, -1):                     # from the lazy end towards small α̃
        if s[i] <= 0 < s[i - 1] or s[i - 1] == 0:
            la, lb = math.log(a[i - 1]), math.log(a[i])
            frac = s[i - 1] / (s[i - 1] - s[i]) if s[i - 1] != s[i] else 0.0
            return Crossing(float(math.exp(la + frac * (lb - la))), (float(a[i - 1]), float(a[i])), True)
    if s[-1] > 0:                                          # above c everywhere: crosses beyond the grid
        return Crossing(math.nan, (float(a[-1]), math.inf), False)
    return Crossing(math.nan, (0.0, float(a[0])), False)   # below c everywhere


def crossover_line(df: pd.DataFrame, c: float = 1.0, change: str = "ntk_rel_change", width: str = "width",
                   alpha_tilde: str = "alpha_tilde") -> pd.DataFrame:
    """One row per width: ``alpha_tilde_star`` (α̃*), ``bracket_lo``, ``bracket_hi``, ``crossed``,
    ``alpha_star`` = α̃*/√h (the article's α), ``n_alpha`` (grid values with a finite change) and
    ``n_seeds`` (fewest runs at one α̃ of the width). Seeds are averaged geometrically (mean of log change)."""
    rows = []
    d = df[[width, alpha_tilde, change]].apply(pd.to_numeric, errors="coerce").dropna()
    d = d[d[change] > 0]
    for h, g in d.groupby(width, sort=True):
        m = g.groupby(alpha_tilde)[change].agg(lambda s: float(np.exp(np.log(s).mean())))
        cr = crossing(m.index.to_numpy(), m.to_numpy(), c)
        rows.append({"width": h, "alpha_tilde_star": cr.value, "bracket_lo": cr.bracket[0],
                     "bracket_hi": cr.bracket[1], "crossed": cr.crossed,
                     "alpha_star": cr.value / math.sqrt(h), "n_alpha": int(m.size),
                     "n_seeds": int(g.groupby(alpha_tilde).size().min())})
    return pd.DataFrame(rows, columns=["width", "alpha_tilde_star", "bracket_lo", "bracket_hi", "crossed",
                                       "alpha_star", "n_alpha", "n_seeds"])


def crossover_exponent(line: pd.DataFrame, df: pd.DataFrame | None = None, c: float = 1.0,
                       change: str = "ntk_rel_change", seed: str = "seed", level: float = DEFAULT_LEVEL,
                       n_boot: int = DEFAULT_BOOT, rng_seed: int = 0) -> PowerLawFit | None:
    """Fit α* = α̃*/√h ∝ h^b over the widths whose curve crossed c (None with fewer than 2).

    With ``df`` holding several seeds at every point of the crossed widths, the interval is a bootstrap over
    seeds: each draw
    resamples the seeds of every (width, α̃) point, recomputes every α̃*(h) and refits (draws where a
    width no longer crosses are dropped). Otherwise it is ``fit_power_law``'s own (t-interval for < 4
    widths)."""
    ok = line[line["crossed"]]
    base = fit_power_law(ok["width"], ok["alpha_star"], level=level, n_boot=n_boot, seed=rng_seed)
    if base is None or df is None or seed not in df.columns or ok["n_seeds"].min() < 2:
        return base   # a point with one seed: resampling seeds cannot move its crossing
    d = df[["width", "alpha_tilde", change, seed]].apply(pd.to_numeric, errors="coerce").dropna()
    d = d[(d[change] > 0) & d["width"].isin(ok["width"])]
    rng = np.random.default_rng(rng_seed)
    curves: dict[float, tuple[list[float], list[np.ndarray]]] = {}
    for (h, a), g in d.groupby(["width", "alpha_tilde"]):
        lv = np.log(g[change].to_numpy())                                   # (S,) log change per seed
        boot = np.exp(lv[rng.integers(0, lv.size, (n_boot, lv.size))].mean(axis=1))   # (B,) geometric means
        curves.setdefault(h, ([], []))
        curves[h][0].append(a)
        curves[h][1].append(boot)
    slopes = []
    for b in range(n_boot):
        hs, stars = [], []
        for h, (a, boots) in curves.items():
            cr = crossing(a, [v[b] for v in boots], c)
            if cr.crossed:
                hs.append(h)
                stars.append(cr.value / math.sqrt(h))
        if len(hs) == len(ok):
            slopes.append(float(np.polyfit(np.log(hs), np.log(stars), 1)[0]))
    if len(slopes) < n_boot // 2:
        return base
    q = (1 - level) / 2
    interval = (float(np.quantile(slopes, q)), float(np.quantile(slopes, 1 - q)))
    return PowerLawFit(base.exponent, base.prefactor, interval, level, base.x_range, base.n_points, base.n_rows,
                       base.stderr, "bootstrap-seeds")
