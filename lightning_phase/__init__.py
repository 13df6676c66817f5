"""lightning_phase: the (h, α) phase diagram of deep learning — jamming, lazy and feature training."""

from lightning_phase.errors import ConfigError
from lightning_phase.kernel_flow import KernelFlow
from lightning_phase.module import PhaseModule
from lightning_phase.optim import GradientFlow

__version__ = "0.1.0"
__all__ = ["ConfigError", "GradientFlow", "KernelFlow", "PhaseModule", "__version__"]
