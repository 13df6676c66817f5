"""Pure observables of a run (SCIENCE.md §4): tensors and ``nn.Module``s in, numbers and tensors out.

No Lightning, no files, no logging; every function states its formula and is tested against a
brute-force definition in float64 (tests/test_observables.py).
"""

from lightning_phase.observables.diffeo import (
    Stability,
    apply_displacement,
    matched_noise,
    relative_stability,
    sample_displacement,
    stabilities,
    temperature_for_displacement,
    temperature_range,
)
from lightning_phase.observables.dynamics import output_norm, t1, weights_change
from lightning_phase.observables.hessian import Spectrum, hessian, hessian_spectrum
from lightning_phase.observables.jamming import (
    FitState,
    LossConvergence,
    dead_points,
    decide_history,
    decision_record,
    fit_state,
    n_delta_tol,
)
from lightning_phase.observables.margins import (
    TailFit,
    log_histogram,
    margins,
    n_delta,
    power_law_mle,
    tail_exponents,
)
from lightning_phase.observables.ntk import kernel_change, kernel_stats, ntk, ntk_diagonal, ntk_loop
from lightning_phase.observables.separation import LoadCurve, load_curve, log_separation
from lightning_phase.observables.spring_block import spring_block

__all__ = [
    "FitState",
    "LossConvergence",
    "dead_points",
    "decide_history",
    "decision_record",
    "fit_state",
    "n_delta_tol",
    "ntk_diagonal",
    "LoadCurve",
    "Spectrum",
    "Stability",
    "apply_displacement",
    "load_curve",
    "log_separation",
    "matched_noise",
    "relative_stability",
    "sample_displacement",
    "spring_block",
    "stabilities",
    "temperature_for_displacement",
    "temperature_range",
    "TailFit",
    "hessian",
    "hessian_spectrum",
    "kernel_change",
    "kernel_stats",
    "log_histogram",
    "margins",
    "n_delta",
    "ntk",
    "ntk_loop",
    "output_norm",
    "power_law_mle",
    "t1",
    "tail_exponents",
    "weights_change",
]
