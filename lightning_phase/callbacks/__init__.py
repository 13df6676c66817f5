"""Lightning callbacks: decide when (``LogSpacedSchedule``), call one observable, log; no physics here.

Each implements ``summary()`` → dict merged into summary.json by the run summary callback.
"""

from lightning_phase.callbacks.hessian import HessianSpectrum
from lightning_phase.callbacks.margins import Margins
from lightning_phase.callbacks.ntk import NTKChange
from lightning_phase.callbacks.schedule import LogSpacedSchedule
from lightning_phase.callbacks.timescale import TimeScale
from lightning_phase.callbacks.weights import WeightsChange

__all__ = ["HessianSpectrum", "LogSpacedSchedule", "Margins", "NTKChange", "TimeScale", "WeightsChange"]
