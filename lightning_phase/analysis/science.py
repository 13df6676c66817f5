"""From a study's table to the numbers of SCIENCE.md §6, each with its interval, range and published value.

:func:`analyse` returns ``fits`` (JSON-ready, written as fits.json) and the tables behind the figures.
Ranges: for width h with crossover α̃*(h), the lazy side is α̃ ≥ ``lazy_factor``·α̃*(h) and the feature
side α̃ ≤ α̃*(h); a width whose kernel change stays below c has only a lazy side (its whole range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_phase.analysis.crossover import crossover_exponent, crossover_line
from lightning_phase.analysis.fluctuations import fluctuations, stack_outputs, variance_exponent
from lightning_phase.analysis.jamming import jamming_line
from lightning_phase.analysis.stats import PowerLawFit, aggregate, fit_power_law
from lightning_phase.summary import OUTPUTS_FILE

# Published values beside each fitted number (SCIENCE.md §4, §6).
PUBLISHED = {
    "kernel_change.lazy_slope": (-1.0, "[FL]: ‖ΔΘ‖/‖Θ₀‖ ∝ α̃^-1 on the lazy side"),
    "kernel_change.feature_slope": (-4 / 3, "[FL]: ≈ α̃^-4/3 (softplus), ≈ α̃^-1.7 (ReLU) on the feature side"),
    "weights_change.lazy_slope": (-1.0, "[FL]: √h‖w−w₀‖/‖w₀‖ ∝ α̃^-1 lazy"),
    "weights_change.feature_slope": (-0.23, "[FL]: ≈ α̃^-0.23 feature"),
    "t1.feature_slope": (1.0, "[FL]: t₁ ∝ √h·α = α̃ in the feature regime"),
    "crossover.exponent": (-0.5, "[FL],[PD]: α* ∝ h^-1/2 (α̃* = O(1) for every h)"),
    "fluctuations.exponent": (-1.0, "[FL],[SC]: Var_seeds F ∝ 1/h"),
    "threshold.n_star_exponent": (1.0, "[JAM]: N* ∝ P"),
}


@dataclass
class Analysis:
    """``fits``: nested dict for fits.json; tables: DataFrames for the figures and report.md."""

    fits: dict[str, Any] = field(default_factory=dict)
    cells: pd.DataFrame | None = None            # test error per (width, alpha_tilde): aggregate()
    crossover: pd.DataFrame | None = None        # crossover_line()
    jamming: pd.DataFrame | None = None          # jamming_line()
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)       # column → aggregate per (h, α̃)
    side_fits: dict[str, dict[float, dict[str, PowerLawFit | None]]] = field(default_factory=dict)
    fluct: pd.DataFrame | None = None            # fluctuations()
    fluct_fit: PowerLawFit | None = None
    fluct_alpha: float | None = None


def _fit_dict(fit: PowerLawFit | None, key: str | None = None) -> dict[str, Any] | None:
    if fit is None:
        return None
    d = fit.as_dict()
    if key in PUBLISHED:
        d["published"] = PUBLISHED[key][0]
    return d


def usable(df: pd.DataFrame) -> pd.DataFrame:
    """Runs that finished with a result: trials COMPLETE (or run dirs with status completed), not diverged."""
    keep = pd.Series(True, index=df.index)
    if "state" in df.columns:
        keep &= df["state"] == "COMPLETE"
    if "status" in df.columns:
        keep &= df["status"].isin(["completed"]) | df["status"].isna()
    return df[keep]


def analyse(df: pd.DataFrame, c: float = 1.0, lazy_factor: float = 10.0, level: float = 0.95,
            n_boot: int = 2000) -> Analysis:
    """Every fit the table allows (module doc); a quantity without its summary field is left out."""
    df = usable(df)
    an = Analysis()
    an.fits = {"n_runs": int(len(df)), "level": level, "c": c, "lazy_factor": lazy_factor}
    if df.empty or not {"width", "alpha_tilde"} <= set(df.columns):
        return an
    df = df.dropna(subset=["width", "alpha_tilde"])
    by = ["width", "alpha_tilde"]
    if "test_error" in df.columns:
        an.cells = aggregate(df, by, "test_error", level=level, n_boot=n_boot)
        an.fits["test_error"] = {f"{h:g}": {f"{r.alpha_tilde:.6g}": r.mean for r in g.itertuples()}
                                 for h, g in an.cells.groupby("width")}
    if "n_delta" in df.columns or "fit_state" in df.columns:
        an.jamming = jamming_line(df)
        an.fits["jamming"] = {f"{r.alpha_tilde:.6g}": {"width_star": r.width_star,
                                                       "bracket": [r.bracket_lo, r.bracket_hi]}
                              for r in an.jamming.itertuples()}
    stars: dict[float, tuple[float, bool, float]] = {}
    if "ntk_rel_change" in df.columns and df["ntk_rel_change"].notna().any():
        an.crossover = crossover_line(df, c=c)
        exp = crossover_exponent(an.crossover, df, c=c, level=level, n_boot=min(n_boot, 1000))
        an.fits["crossover"] = {
            "alpha_tilde_star": {f"{r.width:g}": r.alpha_tilde_star for r in an.crossover.itertuples()},
            "bracket": {f"{r.width:g}": [r.bracket_lo, r.bracket_hi] for r in an.crossover.itertuples()},
            "alpha_star": {f"{r.width:g}": r.alpha_star for r in an.crossover.itertuples()},
            "exponent": _fit_dict(exp, "crossover.exponent"),
            "published_exponent": PUBLISHED["crossover.exponent"][0]}
        for r in an.crossover.itertuples():
            stars[r.width] = (r.alpha_tilde_star, r.crossed, r.bracket_lo)
    for col, name, sides in (("ntk_rel_change", "kernel_change", ("lazy", "feature")),
                             ("weights_change", "weights_change", ("lazy", "feature")),
                             ("t1", "t1", ("feature",))):
        if col not in df.columns or not pd.to_numeric(df[col], errors="coerce").notna().any():
            continue
        an.curves[col] = aggregate(df, by, col, level=level, n_boot=n_boot)
        per_width: dict[float, dict[str, PowerLawFit | None]] = {}
        for h, g in df.groupby("width", sort=True):
            star, crossed, lo = stars.get(h, (math.nan, False, math.nan))
            ranges = {}
            if crossed:
                ranges = {"lazy": (lazy_factor * star, math.inf), "feature": (0.0, star)}
            elif h in stars and lo == 0.0:         # below c everywhere: all lazy
                ranges = {"lazy": (0.0, math.inf)}
            per_width[h] = {s: fit_power_law(g["alpha_tilde"], g[col], x_range=ranges[s], level=level,
                                             n_boot=n_boot)
                            for s in sides if s in ranges}
            per_width[h] = {s: f for s, f in per_width[h].items() if f is not None and f.n_points >= 3}
        an.side_fits[col] = per_width
        an.fits[name] = {f"{s}_slope": {f"{h:g}": _fit_dict(f.get(s), f"{name}.{s}_slope")
                                        for h, f in per_width.items() if f.get(s) is not None}
                         for s in sides}
        an.fits[name]["published"] = {s: PUBLISHED[f"{name}.{s}_slope"][0] for s in sides}
    _fluctuations(df, an, level, n_boot)
    return an


def _fluctuations(df: pd.DataFrame, an: Analysis, level: float, n_boot: int) -> None:
    if "run_dir" not in df.columns:
        return
    counts = df.groupby(["width", "alpha_tilde"]).size()
    if counts.max() < 2:
        return
    an.fluct = fluctuations(df)
    fl = an.fluct[an.fluct["n_seeds"] >= 2]
    if fl.empty:
        return
    by_alpha = {}
    for a, g in fl.groupby("alpha_tilde"):
        rows = df[np.isclose(df["alpha_tilde"], a) & df["width"].isin(g["width"])]
        stacks = {h: stack_outputs([r for r in gg["run_dir"] if (Path(r) / OUTPUTS_FILE).is_file()])[0]
                  for h, gg in rows.groupby("width")}
        by_alpha[a] = variance_exponent(stacks, level=level, n_boot=min(n_boot, 1000))
    fitted = {a: f for a, f in by_alpha.items() if f is not None}
    an.fits["fluctuations"] = {
        "variance": {f"{r.width:g}": {f"{r.alpha_tilde:.6g}": r.variance} for r in fl.itertuples()},
        "exponent_by_alpha_tilde": {f"{a:.6g}": _fit_dict(f, "fluctuations.exponent") for a, f in fitted.items()},
        "ensemble_error": {f"{r.width:g}": {f"{r.alpha_tilde:.6g}": {"single": r.single_error,
                                                                     "ensemble": r.ensemble_error,
                                                                     "n_seeds": int(r.n_seeds)}}
                           for r in fl.itertuples()},
        "published_exponent": PUBLISHED["fluctuations.exponent"][0]}
    if fitted:
        an.fluct_alpha = max(fitted)             # the lazy end: the [FL] claim is made there
        an.fluct_fit = fitted[an.fluct_alpha]
        an.fits["fluctuations"]["exponent"] = _fit_dict(an.fluct_fit, "fluctuations.exponent")
        an.fits["fluctuations"]["alpha_tilde"] = an.fluct_alpha


def threshold_fits(results: list[dict[str, Any]], level: float = 0.95, n_boot: int = 2000) -> dict[str, Any]:
    """h*(P) and N*(P) of a threshold study's stored results, and the fit N* ∝ P^b (published b = 1)."""
    rows = []
    for r in results:
        p = (r.get("group") or {}).get("data.n_train")
        rows.append({"n_train": p, "h_star": r.get("h_star"), "n_star": r.get("n_star"),
                     "bracket": list(r.get("bracket") or []), "finished": bool(r.get("finished"))})
    ok = [r for r in rows if r["n_train"] and r["n_star"]]
    fit = fit_power_law(np.array([r["n_train"] for r in ok], dtype=float),
                        np.array([r["n_star"] for r in ok], dtype=float), level=level, n_boot=n_boot) if ok else None
    return {"groups": rows, "n_star_exponent": _fit_dict(fit, "threshold.n_star_exponent"),
            "published_exponent": PUBLISHED["threshold.n_star_exponent"][0]}
