"""The jamming line of a phase-diagram study: per α̃, the width above which the runs fit ([JAM], [PD]).

A run is fitted when its ``fit_state`` is SAT (the jamming issue's decision) or, for runs recorded
without one, when N_Δ = 0 at the end; a grid point is fitted when a majority of its seeds are. The line
sits between the widest unfitted width and the narrowest fitted one above which every width fits.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def fitted(df: pd.DataFrame) -> pd.Series:
    """Per row: True/False where the run is decided (fit_state SAT/UNSAT, else N_Δ = 0 / > 0), NaN where it
    is not (fit_state UNDECIDED, or neither field)."""
    out = pd.Series(np.nan, index=df.index, dtype=object)
    if "n_delta" in df.columns:
        nd = pd.to_numeric(df["n_delta"], errors="coerce")
        out[nd.notna()] = nd[nd.notna()] == 0
    if "fit_state" in df.columns:
        fs = df["fit_state"]
        out[fs == "SAT"], out[fs == "UNSAT"] = True, False
        out[fs == "UNDECIDED"] = np.nan
    return out


def jamming_line(df: pd.DataFrame) -> pd.DataFrame:
    """One row per α̃: ``width_star`` (geometric mean of the bracket, NaN when open), ``bracket_lo``
    (widest unfitted width; 0 if every width fits), ``bracket_hi`` (narrowest width from which all fit;
    inf if the widest does not), ``n_widths``."""
    d = df.assign(_fit=fitted(df)).dropna(subset=["_fit", "width", "alpha_tilde"])
    rows = []
    for a, g in d.groupby("alpha_tilde", sort=True):
        point = g.groupby("width")["_fit"].agg(lambda s: float(np.mean(s.astype(float))) > 0.5).sort_index()
        hs, ok = point.index.to_numpy(dtype=float), point.to_numpy(dtype=bool)
        if ok.all():
            lo, hi = 0.0, float(hs[0])
        elif not ok[-1]:
            lo, hi = float(hs[-1]), math.inf
        else:
            i = int(np.flatnonzero(~ok)[-1])       # widest unfitted width; everything above fits
            lo, hi = float(hs[i]), float(hs[i + 1])
        star = math.sqrt(lo * hi) if 0 < lo and math.isfinite(hi) else math.nan
        rows.append({"alpha_tilde": a, "width_star": star, "bracket_lo": lo, "bracket_hi": hi, "n_widths": len(hs)})
    return pd.DataFrame(rows, columns=["alpha_tilde", "width_star", "bracket_lo", "bracket_hi", "n_widths"])
