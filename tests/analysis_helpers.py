"""A synthetic phase-diagram study with known answers, for the analysis tests and benchmarks/report.py.

Kernel change = (α̃/α̃*)^-1 on the lazy side and (α̃/α̃*)^-4/3 on the feature side with α̃* = 7 for every
width (so α* = α̃*/√h ∝ h^-1/2), times log-normal seed noise; test outputs F = y + noise/√h, so the
variance over seeds is 1/h; N_Δ = 0 from width 8 up.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from lightning_phase.analysis import trial_attrs

STAR = 7.0
ALPHAS = tuple(float(a) for a in np.geomspace(0.1, 1e4, 11))
WIDTH_KEY, ALPHA_KEY, SEED_KEY = "model.net.init_args.width", "model.alpha_tilde", "seed_everything"


def kernel_change(a: float) -> float:
    return (a / STAR) ** (-1.0 if a >= STAR else -4 / 3)


def synthetic_study(storage_path: Path, widths=(4, 16, 64, 256), alphas=ALPHAS,
                    seeds=(0, 1, 2), runs_dir: Path | None = None, name: str = "toy", n_test: int = 200,
                    noise: float = 0.05, rng_seed: int = 0) -> str:
    """Write the study into a journal file (v2 trial records); with ``runs_dir``, each trial also gets a
    run directory with outputs.npz. Returns the storage path."""
    rng = np.random.default_rng(rng_seed)
    storage = JournalStorage(JournalFileBackend(str(storage_path)))
    study = optuna.create_study(study_name=name, storage=storage)
    grid = {WIDTH_KEY: list(widths), ALPHA_KEY: [float(a) for a in alphas], SEED_KEY: list(seeds)}
    study.set_user_attr("lp_spec", {"grid": grid, "objective": "test_error"})
    dists = {WIDTH_KEY: IntDistribution(min(widths), max(widths), log=True),
             ALPHA_KEY: FloatDistribution(min(grid[ALPHA_KEY]), max(grid[ALPHA_KEY]), log=True),
             SEED_KEY: IntDistribution(min(seeds), max(seeds))}
    y = np.where(rng.standard_normal(n_test) > 0, 1.0, -1.0)
    trials, n = [], 0
    for h in widths:
        for a in grid[ALPHA_KEY]:
            for s in seeds:
                F = y + rng.standard_normal(n_test) / math.sqrt(h)
                summary = {"status": "completed", "width": h, "depth": 2, "alpha_tilde": a, "alpha": a / math.sqrt(h),
                           "seed": s, "n_train": 200, "n_params": 64 * h + h * h + h, "n_delta": 0 if h >= 8 else 5,
                           "test_error": float(np.mean(y * F <= 0)),
                           "ntk_rel_change": kernel_change(a) * math.exp(noise * rng.standard_normal()),
                           "weights_change": kernel_change(a) ** 0.5, "t1": a if a < STAR else STAR,
                           "stop_reason": "ALL_MARGINS_MET", "config_hash": f"{n:016x}"}
                attrs = trial_attrs(summary)
                if runs_dir is not None:
                    d = Path(runs_dir) / name / f"trial_{n:05d}"
                    d.mkdir(parents=True, exist_ok=True)
                    np.savez(d / "outputs.npz", test_F=F, test_y=y, train_F=F[:10], train_y=y[:10])
                    attrs["run_dir"] = str(d)
                trials.append(create_trial(state=TrialState.COMPLETE, value=summary["test_error"],
                                           params={WIDTH_KEY: h, ALPHA_KEY: a, SEED_KEY: s}, distributions=dists,
                                           user_attrs=attrs))
                n += 1
    study.add_trials(trials)
    return str(storage_path)
