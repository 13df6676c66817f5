"""Thin Lightning adapters: decide when, call an observable, log. Stop rules and the run summary."""

from lightning_phase.callbacks.progress import StepProgressBar
from lightning_phase.callbacks.stopping import StopReason, StopRules
from lightning_phase.callbacks.summary import RunSummary

__all__ = ["RunSummary", "StepProgressBar", "StopReason", "StopRules"]
