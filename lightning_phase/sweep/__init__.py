"""Sweeps: Optuna studies over grids of run configs, and the jamming-threshold search (h* by bisection).

A trial's result is its run's ``summary.json``, stored in the trial's user attributes; the storage (a
journal file by default, PostgreSQL for many machines) is the source of truth. Commands: see
:mod:`lightning_phase.sweep.commands`.
"""

from lightning_phase.sweep.spec import SweepSpec, ThresholdSpec, expand_values, load_spec, parse_spec

__all__ = ["SweepSpec", "ThresholdSpec", "expand_values", "load_spec", "parse_spec"]
