"""Analysis: read studies and run directories back, fit with error bars, draw, report. Never trains;
imports numpy, pandas, optuna and matplotlib, never torch or Lightning.

- :mod:`.tables`: ``load_study(name, storage)``, ``load_runs(path)`` → pandas DataFrames.
- :mod:`.stats`: ``aggregate`` over seeds (mean, sem, bootstrap interval), ``fit_power_law`` with a
  bootstrap interval and its stated range.
- :mod:`.crossover`: ``crossover_line`` α̃*(h) with brackets, ``crossover_exponent`` of α* = α̃*/√h.
- :mod:`.fluctuations`: variance of the outputs over seeds and ensemble errors, from ``outputs.npz``.

API reference: docs/analysis.md.
"""

from lightning_phase.analysis.crossover import Crossing, crossing, crossover_exponent, crossover_line
from lightning_phase.analysis.fluctuations import (
    ensemble_error,
    fluctuations,
    output_variance,
    read_outputs,
    single_error,
    stack_outputs,
)
from lightning_phase.analysis.stats import PowerLawFit, aggregate, bootstrap_mean_interval, fit_power_law
from lightning_phase.analysis.tables import load_runs, load_study, sort_by_grid, trial_attrs

__all__ = [
    "Crossing",
    "PowerLawFit",
    "aggregate",
    "bootstrap_mean_interval",
    "crossing",
    "crossover_exponent",
    "crossover_line",
    "ensemble_error",
    "fit_power_law",
    "fluctuations",
    "load_runs",
    "load_study",
    "output_variance",
    "read_outputs",
    "single_error",
    "sort_by_grid",
    "stack_outputs",
    "trial_attrs",
]
