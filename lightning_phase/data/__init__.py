"""Data sets of SCIENCE.md §5 as tensors: ``PhaseDataModule`` and the names in ``DATASETS``.

torchvision and mnist1d are imported only when such a data set is asked for.
"""

from lightning_phase.data.datamodule import PhaseDataModule
from lightning_phase.data.loader import TensorLoader
from lightning_phase.data.sources import DATASETS

__all__ = ["DATASETS", "PhaseDataModule", "TensorLoader"]
