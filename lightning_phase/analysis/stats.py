"""Error bars: aggregation over seeds and power-law fits with bootstrap intervals (numpy only).

    >>> fit = fit_power_law(alpha_tilde, kernel_change, x_range=(1e2, 1e4))   # doctest: +SKIP
    >>> fit.exponent, fit.interval        # e.g. -1.03, (-1.08, -0.98): the lazy slope with its 95 % interval

Every interval is a percentile bootstrap at ``level`` (default 0.95), with a fixed ``seed`` so a report
is reproducible. A power law y = A·x^b is fitted by least squares on (log x, log y); rows with the same x
are replicates (seeds) of one point, and the bootstrap resamples points, then seeds within each drawn
point. With fewer than 4 distinct x and no replicates the bootstrap has nothing to resample, and the
interval is the t-interval of the least-squares slope (``method = "ols-t"``); the fit says which it used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_LEVEL = 0.95
DEFAULT_BOOT = 2000


def bootstrap_mean_interval(values: Sequence[float], level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOT,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (1-d); (v, v) for one value, NaNs for none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (math.nan, math.nan)
    if v.size == 1:
        return (float(v[0]), float(v[0]))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)   # (n_boot,)
    q = (1 - level) / 2
    return (float(np.quantile(means, q)), float(np.quantile(means, 1 - q)))


def aggregate(df: pd.DataFrame, by: Sequence[str], value: str, level: float = DEFAULT_LEVEL,
              n_boot: int = DEFAULT_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per group of ``by`` (e.g. width, alpha_tilde): the rows' ``value`` over seeds as ``n`` (finite
    values), ``mean``, ``std`` (ddof 1), ``sem`` = std/√n, and the bootstrap interval of the mean ``lo``,
    ``hi``. One row per group, sorted by ``by``; NaN/None values are left out of every statistic."""
    by = list(by)
    out = []
    for key, g in df.groupby(by, sort=True, dropna=False):
        v = pd.to_numeric(g[value], errors="coerce").to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        n = v.size
        std = float(v.std(ddof=1)) if n > 1 else math.nan
        lo, hi = bootstrap_mean_interval(v, level, n_boot, seed)
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(by, key, strict=True)), "n": n, "mean": float(v.mean()) if n else math.nan,
                    "std": std, "sem": std / math.sqrt(n) if n > 1 else math.nan, "lo": lo, "hi": hi})
    return pd.DataFrame(out, columns=[*by, "n", "mean", "std", "sem", "lo", "hi"])


@dataclass(frozen=True)
class PowerLawFit:
    """y = prefactor · x^exponent on ``x_range`` (the smallest and largest x used), from ``n_points``
    distinct x and ``n_rows`` rows; ``interval`` at ``level`` by ``method`` ("bootstrap" or "ols-t");
    ``stderr`` is the least-squares standard error of the exponent."""

    exponent: float
    prefactor: float
    interval: tuple[float, float]
    level: float
    x_range: tuple[float, float]
    n_points: int
    n_rows: int
    stderr: float
    method: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"], d["x_range"] = list(self.interval), list(self.x_range)
        return d

    def covers(self, value: float) -> bool:
        return self.interval[0] <= value <= self.interval[1]

    def __str__(self) -> str:
        lo, hi = self.interval
        return (f"{self.exponent:+.3f} [{lo:+.3f}, {hi:+.3f}] ({self.level:.0%}, {self.method}; "
                f"x in [{self.x_range[0]:.3g}, {self.x_range[1]:.3g}], {self.n_points} points)")


def fit_power_law(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                  x_range: tuple[float, float] | None = None,
                  level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOT, seed: int = 0) -> PowerLawFit | None:
    """Fit y = A·x^b by least squares in log–log on the rows with x > 0, y > 0 (finite) and x inside
    ``x_range`` (inclusive; None = all). Rows with equal x are replicates of one point. Returns None when
    fewer than 2 distinct x remain. Interval: module doc."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0)
    if x_range is not None:
        keep &= (xs >= x_range[0]) & (xs <= x_range[1])
    lx, ly = np.log(xs[keep]), np.log(ys[keep])
    points, inverse = np.unique(lx, return_inverse=True)
    if points.size < 2:
        return None
    b, a, stderr = _ols(lx, ly)
    replicates = lx.size > points.size
    if points.size >= 4 or replicates:
        slopes = _bootstrap_slopes(lx, ly, inverse, points.size, n_boot, np.random.default_rng(seed))
        q = (1 - level) / 2
        interval = (float(np.quantile(slopes, q)), float(np.quantile(slopes, 1 - q)))
        method = "bootstrap"
    else:
        from scipy.special import stdtrit  # Student t quantile (scipy.stats takes seconds to import)

        dof = lx.size - 2
        half = float(stdtrit(dof, 1 - (1 - level) / 2)) * stderr if dof > 0 else math.inf
        interval, method = (b - half, b + half), "ols-t"
    return PowerLawFit(exponent=float(b), prefactor=float(math.exp(a)), interval=interval, level=level,
                       x_range=(float(math.exp(points[0])), float(math.exp(points[-1]))),
                       n_points=int(points.size), n_rows=int(lx.size), stderr=float(stderr), method=method)


def _ols(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float, float]:
    """(slope, intercept, standard error of the slope) of ly on lx."""
    mx, my = lx.mean(), ly.mean()
    sxx = float(((lx - mx) ** 2).sum())
    b = float(((lx - mx) * (ly - my)).sum() / sxx)
    a = float(my - b * mx)
    dof = lx.size - 2
    resid = ly - (a + b * lx)
    stderr = math.sqrt(float((resid**2).sum()) / dof / sxx) if dof > 0 else math.inf
    return b, a, stderr


def _bootstrap_slopes(lx: np.ndarray, ly: np.ndarray, point_of_row: np.ndarray, n_points: int, n_boot: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Slopes of weighted least squares, weights = how often each row is drawn when first the points and
    then the rows within each drawn point are resampled with replacement; degenerate draws (one x) dropped.
    Vectorised: a (n_boot, n_rows) weight matrix, no Python loop over samples."""
    rows_of = [np.flatnonzero(point_of_row == p) for p in range(n_points)]
    point_draws = rng.multinomial(n_points, np.full(n_points, 1 / n_points), size=n_boot)   # (B, n_points)
    if n_points < 4:   # too few points to resample them: keep every point, resample its seeds
        point_draws = np.ones_like(point_draws)
    w = np.zeros((n_boot, lx.size))
    for p, rows in enumerate(rows_of):
        c = point_draws[:, p]                                      # (B,) copies of point p
        # each copy of point p redraws its len(rows) seeds: c·n_p draws spread over the rows
        w[:, rows] = rng.multinomial(c * rows.size, np.full(rows.size, 1 / rows.size))   # (B, n_p)
    sw = w.sum(1)
    mx = (w * lx).sum(1) / sw
    my = (w * ly).sum(1) / sw
    sxx = (w * (lx - mx[:, None]) ** 2).sum(1)
    sxy = (w * (lx - mx[:, None]) * (ly - my[:, None])).sum(1)
    ok = sxx > 1e-12 * max(float(np.ptp(lx)) ** 2, 1e-300)
    return sxy[ok] / sxx[ok]
