"""Lightning callbacks: decide when (``LogSpacedSchedule``), call one observable, log; no physics here.
Also the stop rules, the run summary and the step progress bar.

Each measurement callback implements ``summary()`` → dict merged into summary.json by ``RunSummary``.
"""

from lightning_phase.callbacks.dynamics import DynamicsLogger
from lightning_phase.callbacks.hessian import HessianSpectrum
from lightning_phase.callbacks.load_curve import LoadCurve
from lightning_phase.callbacks.margins import Margins
from lightning_phase.callbacks.ntk import NTKChange
from lightning_phase.callbacks.progress import StepProgressBar
from lightning_phase.callbacks.schedule import LogSpacedSchedule
from lightning_phase.callbacks.stability import DiffeoStability
from lightning_phase.callbacks.stopping import StopReason, StopRules
from lightning_phase.callbacks.summary import RunSummary
from lightning_phase.callbacks.timescale import TimeScale
from lightning_phase.callbacks.weights import WeightsChange

__all__ = [
    "DiffeoStability",
    "DynamicsLogger",
    "HessianSpectrum",
    "LoadCurve",
    "LogSpacedSchedule",
    "Margins",
    "NTKChange",
    "RunSummary",
    "StepProgressBar",
    "StopReason",
    "StopRules",
    "TimeScale",
    "WeightsChange",
]
