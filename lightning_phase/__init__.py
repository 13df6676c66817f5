"""lightning_phase: the (h, α) phase diagram of deep learning — jamming, lazy and feature training.

The top-level names are imported on first use, so that light commands (``lightning-phase results``,
``from lightning_phase.errors import ConfigError``) don't pay for importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "ConfigError": "lightning_phase.errors",
    "GradientFlow": "lightning_phase.optim",
    "KernelFlow": "lightning_phase.kernel_flow",
    "PhaseDataModule": "lightning_phase.data",
    "PhaseModule": "lightning_phase.module",
}
__all__ = ["ConfigError", "GradientFlow", "KernelFlow", "PhaseDataModule", "PhaseModule", "__version__"]

if TYPE_CHECKING:
    from lightning_phase.data import PhaseDataModule
    from lightning_phase.errors import ConfigError
    from lightning_phase.kernel_flow import KernelFlow
    from lightning_phase.module import PhaseModule
    from lightning_phase.optim import GradientFlow


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_phase' has no attribute {name!r}")
