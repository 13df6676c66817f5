"""Fluctuations over init seeds and ensembles of nets, from each run's ``outputs.npz`` ([FL], [SC]).

    >>> F = stack_outputs(run_dirs)                 # doctest: +SKIP   (S, P_te): one row per seed
    >>> output_variance(F)                          # mean over test points of Var_seeds F   (∝ 1/h)
    >>> ensemble_error(F, y), single_error(F, y)    # error of the output-averaged ensemble vs one net

F is the trained function α(f − f₀) on the test set, float64, shape (S, P) with S nets (seeds) along
axis 0 and the P test points along axis 1; y is (P,) with values ±1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lightning_phase.errors import ConfigError
from lightning_phase.summary import OUTPUTS_FILE


def read_outputs(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of ``<run_dir>/outputs.npz`` (train_F, train_y, test_F, test_y[, kernel_F, kernel_y])."""
    path = Path(run_dir) / OUTPUTS_FILE
    if not path.is_file():
        raise ConfigError("run_dir", str(run_dir), f"a run directory with {OUTPUTS_FILE} (runs write it at the end)")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def stack_outputs(run_dirs: Sequence[str | os.PathLike], split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """(F, y): the ``<split>_F`` of every run stacked along a new axis 0 → (S, P) (runs that train M
    members contribute M rows each), and the shared labels (P,). ConfigError if the runs' labels differ
    (they must share the data set to be compared point by point)."""
    Fs, y0 = [], None
    for d in run_dirs:
        out = read_outputs(d)
        F, y = out[f"{split}_F"], out[f"{split}_y"]
        if y0 is None:
            y0 = y
        elif y.shape != y0.shape or not np.array_equal(y, y0):
            raise ConfigError("run_dir", str(d),
                              f"runs on the same {split} set (its labels differ from the first run's)")
        Fs.append(F.reshape(-1, F.shape[-1]) if F.ndim > 1 else F[None])
    if not Fs:
        raise ConfigError("run_dirs", [], "at least one run directory")
    assert y0 is not None  # set by the first run
    return np.concatenate(Fs, axis=0), y0


def output_variance(F: np.ndarray) -> float:
    """(1/P) Σ_μ Var_s F_sμ, the unbiased variance over the S nets (axis 0, ddof 1) averaged over the P
    points (axis 1). Units: those of F². NaN for S < 2."""
    F = np.asarray(F, dtype=np.float64)
    if F.shape[0] < 2:
        return float("nan")
    return float(F.var(axis=0, ddof=1).mean())


def single_error(F: np.ndarray, y: np.ndarray) -> float:
    """Mean over the S nets of their test error: (1/S) Σ_s (1/P) #{μ : y_μ F_sμ ≤ 0}."""
    F = np.atleast_2d(np.asarray(F, dtype=np.float64))
    return float((np.asarray(y) * F <= 0).mean())


def ensemble_error(F: np.ndarray, y: np.ndarray, k: int | None = None) -> float:
    """Test error of the ensemble that averages the outputs of k nets: sign of F̄_μ = (1/k) Σ_s F_sμ.

    k = None (default) averages all S nets. For k < S the S nets are split into ⌊S/k⌋ disjoint groups of
    k (in order) and the groups' errors are averaged."""
    F = np.atleast_2d(np.asarray(F, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)
    k = F.shape[0] if k is None else k
    if not 1 <= k <= F.shape[0]:
        raise ConfigError("k", k, f"an ensemble size between 1 and the number of nets ({F.shape[0]})")
    n = F.shape[0] // k
    groups = F[: n * k].reshape(n, k, -1).mean(axis=1)      # (n, P): each group's averaged output
    return float((y * groups <= 0).mean())


def fluctuations(df: pd.DataFrame, by: Sequence[str] = ("width", "alpha_tilde"), split: str = "test") -> pd.DataFrame:
    """Per grid point of ``by`` (rows of load_study/load_runs with a ``run_dir``, one per seed): ``n_seeds``,
    ``variance`` (output_variance), ``single_error`` and ``ensemble_error`` (all seeds averaged), from
    each run's outputs.npz. Points whose runs have no outputs.npz are left out."""
    by = list(by)
    rows = []
    keep = df["run_dir"].notna()
    if "state" in df.columns:
        keep &= df["state"] == "COMPLETE"
    d = df[keep]
    for key, g in d.groupby(by, sort=True):
        dirs = [r for r in g["run_dir"] if (Path(r) / OUTPUTS_FILE).is_file()]
        if not dirs:
            continue
        F, y = stack_outputs(dirs, split)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key, strict=True)), "n_seeds": F.shape[0], "variance": output_variance(F),
                     "single_error": single_error(F, y), "ensemble_error": ensemble_error(F, y)})
    return pd.DataFrame(rows, columns=[*by, "n_seeds", "variance", "single_error", "ensemble_error"])


def variance_exponent(stacks: dict[float, np.ndarray], level: float = 0.95, n_boot: int = 1000,
                      seed: int = 0):
    """Fit Var_seeds F ∝ h^b over the widths of ``stacks`` (width → F (S, P), S ≥ 2 nets), with a bootstrap
    over seeds: each draw resamples the S nets of every width with replacement, recomputes every variance
    and refits; draws that pick fewer than 2 distinct nets at some width (no variance) are dropped.
    With fewer than 3 nets at some width the seed bootstrap is degenerate (2 nets: one variance) and the
    interval is fit_power_law's over the widths. Returns a PowerLawFit, None with fewer than 2 widths."""
    from lightning_phase.analysis.stats import PowerLawFit, fit_power_law

    hs = sorted(h for h, F in stacks.items() if F.shape[0] >= 2)
    if len(hs) < 2:
        return None
    var = np.array([output_variance(stacks[h]) for h in hs])
    base = fit_power_law(np.asarray(hs, dtype=np.float64), var, level=level, n_boot=n_boot, seed=seed)
    if base is None or min(stacks[h].shape[0] for h in hs) < 3:
        return base
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(hs)))
    ok = np.ones(n_boot, dtype=bool)
    for j, h in enumerate(hs):
        F = stacks[h]
        idx = rng.integers(0, F.shape[0], size=(n_boot, F.shape[0]))          # (B, S)
        ok &= (np.diff(np.sort(idx, axis=1), axis=1) != 0).any(axis=1)        # ≥ 2 distinct nets
        boot[:, j] = F[idx].var(axis=1, ddof=1).mean(axis=1)                  # (B, S, P) → (B,)
    lx = np.log(hs)
    slopes = np.polyfit(lx, np.log(boot[ok]).T, 1)[0]                         # one fit per draw
    q = (1 - level) / 2
    interval = (float(np.quantile(slopes, q)), float(np.quantile(slopes, 1 - q)))
    return PowerLawFit(base.exponent, base.prefactor, interval, level, base.x_range, base.n_points,
                       int(sum(stacks[h].shape[0] for h in hs)), base.stderr, "bootstrap-seeds")
