"""PhaseDataModule: the data of SCIENCE.md §5 as a few float64 tensors, loaded eagerly and validated."""

from __future__ import annotations

import os

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_phase.data import sources
from lightning_phase.data.loader import NoisyLoader, TensorLoader
from lightning_phase.data.preprocess import preprocess_pool
from lightning_phase.data.sources import DATASETS, SYNTHETIC, VISION
from lightning_phase.errors import ConfigError, check_bool, check_choice, check_positive_int

RAW_DIMS = {"digits": 64, "mnist1d": 40, "mnist": 784, "fashion": 784, "kmnist": 784,
            "emnist_letters": 784, "cifar10": 3072}  # fmt: skip
_TENSORS = ("x_train", "y_train", "x_test", "y_test", "x_kernel", "y_kernel")
LABELS = ("parity", "class")


def precision_dtype(precision: object) -> torch.dtype:
    """float64 for a "64…" trainer precision ("64-true", "64"), float32 for anything else."""
    return torch.float64 if str(precision).startswith("64") else torch.float32


class PhaseDataModule(pl.LightningDataModule):
    """Labelled data sets as tensors: train (P), test (P_te) and kernel (P_k) sets, disjoint.

    ``labels``: ``parity`` (binary, below) or ``class`` (real sets only: y = class index 0…K−1, int64,
    K = ``n_classes``; the net then needs ``out_dim`` = K outputs, filled from ``out_dim`` here).

    Real sets (``digits``, ``mnist1d``, and torchvision's ``mnist``, ``fashion``, ``kmnist``,
    ``emnist_letters``, ``cifar10`` read from ``root``): train+test pools merged, y = +1 for an even
    class index and −1 for an odd one, classes interleaved (shuffled within a class by ``data_seed``)
    so every prefix is balanced, centred by the pool mean, optional PCA to ``pca_dim`` components
    (``whiten``: each divided by its std), each sample rescaled to ‖x‖ = √D. The interleaved order gives
    test first, then kernel, then train: the test set does not depend on n_train.
    Synthetic sets (``random``, ``teacher``, ``stripe``): x ~ N(0, I_dim) with y random ±1, the sign of a
    random ``FullyConnected(teacher_width, teacher_depth)`` teacher, or the stripe rule
    y = −1 iff −0.3 < x₁ < 1.18549; test, kernel and train drawn from separate streams of ``data_seed``;
    no PCA (``pca_dim`` must stay null).

    ``batch_size``: None = full batch; B = global mini-batch, reshuffled each epoch from ``batch_seed``.
    ``label_noise`` q_y, ``input_noise`` q_x ([SB]): every training batch gets a fraction q_y of its labels
    redrawn uniformly and Gaussian input noise of std q_x·std(x_train), fresh at every step (``NoisyLoader``);
    the test and kernel sets stay clean.
    Attributes: x_* (P, D) float64 and y_* (P,) float64 in {−1, +1}, CPU; ``input_dim`` D;
    ``input_shape`` (C, H, W) for images without PCA, else (D,); ``in_channels``; ``pool_size``.
    ``setup`` casts x (and ±1 labels) to the trainer's precision (float64 for "64…", else float32); class
    labels stay int64. ``out_dim``: 1 for parity labels, K for class labels.
    """

    def __init__(
        self,
        dataset: str = "digits",
        n_train: int = 500,
        n_test: int = 500,
        n_kernel: int = 0,
        pca_dim: int | None = None,
        whiten: bool = False,
        data_seed: int = 0,
        batch_size: int | None = None,
        batch_seed: int = 0,
        root: str | None = None,
        download: bool = False,
        dim: int = 10,
        teacher_width: int = 32,
        teacher_depth: int = 2,
        labels: str = "parity",
        label_noise: float = 0.0,
        input_noise: float = 0.0,
    ):
        super().__init__()
        check_choice("data.dataset", dataset, DATASETS)
        self.dataset = dataset
        check_choice("data.labels", labels, LABELS)
        if labels == "class" and dataset in SYNTHETIC:
            raise ConfigError("data.labels", labels, f"'parity' for the synthetic data set {dataset!r}")
        self.labels = labels
        for key, q in (("data.label_noise", label_noise), ("data.input_noise", input_noise)):
            if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 1:
                raise ConfigError(key, q, "a fraction in [0, 1]")
        self.label_noise, self.input_noise = float(label_noise), float(input_noise)
        self.n_train = check_positive_int("data.n_train", n_train)
        self.n_test = check_positive_int("data.n_test", n_test)
        self.n_kernel = check_positive_int("data.n_kernel", n_kernel, minimum=0)
        self.data_seed = check_positive_int("data.data_seed", data_seed, minimum=0)
        self.batch_seed = check_positive_int("data.batch_seed", batch_seed, minimum=0)
        self.batch_size = None if batch_size is None else check_positive_int("data.batch_size", batch_size)
        self.whiten = check_bool("data.whiten", whiten)
        self.download = check_bool("data.download", download)
        self.dim = check_positive_int("data.dim", dim)
        self.teacher_width = check_positive_int("data.teacher_width", teacher_width)
        self.teacher_depth = check_positive_int("data.teacher_depth", teacher_depth)
        self.pca_dim = None if pca_dim is None else check_positive_int("data.pca_dim", pca_dim)
        if pca_dim is not None and dataset in SYNTHETIC:
            raise ConfigError("data.pca_dim", pca_dim, "null for synthetic data sets (set data.dim instead)")
        if pca_dim is not None and pca_dim > RAW_DIMS[dataset]:
            expected = f"an integer in [1, {RAW_DIMS[dataset]}] (input dimension of {dataset})"
            raise ConfigError("data.pca_dim", pca_dim, expected)
        if whiten and pca_dim is None:
            raise ConfigError("data.whiten", whiten, "false unless data.pca_dim is set")
        self.root = root
        if dataset in VISION:
            from lightning_phase.data.vision import check_root

            self.root = check_root(dataset, root, self.download)
        elif root is not None and not isinstance(root, (str, os.PathLike)):
            raise ConfigError("data.root", root, "a folder path (string) or null")
        self._load()
        self._loaders: dict = {}
        self._device_cache: dict = {}

    # ------------------------------------------------------------------------------------------ loading
    @property
    def n_total(self) -> int:
        return self.n_train + self.n_test + self.n_kernel

    def _load(self) -> None:
        if self.dataset in SYNTHETIC:
            self._load_synthetic()
            return
        if self.dataset == "digits":
            x, classes, shape = sources.load_digits_pool()
        elif self.dataset == "mnist1d":
            x, classes, shape = sources.load_mnist1d_pool(self.n_total, self.data_seed)
        else:
            from lightning_phase.data.vision import load_vision_pool

            assert self.root is not None  # check_root set it for a torchvision data set
            x, classes, shape = load_vision_pool(self.dataset, self.root, self.download)
        self.pool_size = len(x)
        if self.n_total > self.pool_size:
            raise ConfigError(
                "data.n_train", self.n_train,
                f"n_train + n_test + n_kernel <= {self.pool_size} (pool size of {self.dataset}); "
                f"got {self.n_train} + {self.n_test} + {self.n_kernel} = {self.n_total}",
            )  # fmt: skip
        gen = sources.generator(self.data_seed, 0)
        sizes = (self.n_test, self.n_kernel, self.n_train)
        parts = preprocess_pool(x, classes, *sizes, gen, self.pca_dim, self.whiten, self.labels)
        self.n_classes = int(len(np.unique(np.asarray(classes))))
        self.out_dim = self.n_classes if self.labels == "class" else 1
        self.x_test, self.y_test = parts["test"]
        self.x_kernel, self.y_kernel = parts["kernel"]
        self.x_train, self.y_train = parts["train"]
        if self.pca_dim is None:
            self.input_shape, self.in_channels = shape, (shape[0] if len(shape) == 3 else 1)
        else:
            self.input_shape, self.in_channels = (self.pca_dim,), 1
        self.input_dim = int(self.x_train.shape[1])

    def _load_synthetic(self) -> None:
        teacher = None
        if self.dataset == "teacher":
            teacher = sources.make_teacher(self.dim, self.teacher_width, self.teacher_depth, self.data_seed)
        sizes = (self.n_test, self.n_kernel, self.n_train)
        parts = [sources.synthetic_part(self.dataset, n, self.dim, self.data_seed, k, teacher)
                 for k, n in enumerate(sizes)]  # fmt: skip
        (self.x_test, self.y_test), (self.x_kernel, self.y_kernel), (self.x_train, self.y_train) = parts
        self.pool_size = self.n_total  # generated at exactly the needed size
        self.n_classes, self.out_dim = 2, 1
        self.input_dim, self.input_shape, self.in_channels = self.dim, (self.dim,), 1

    # ------------------------------------------------------------------------------------ Lightning API
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(getattr(trainer, "global_rank", 0)), int(getattr(trainer, "world_size", 1))

    def _epoch(self) -> int:
        trainer = self.trainer
        return int(trainer.current_epoch) if trainer is not None else 0

    def setup(self, stage: str | None = None) -> None:
        """Cast every tensor to the trainer's precision dtype (no-op without a trainer)."""
        if self.trainer is None:
            return
        dtype = precision_dtype(self.trainer.precision)
        if self.x_train.dtype == dtype:
            return
        for name in _TENSORS:
            t = getattr(self, name)
            if t.is_floating_point():  # class labels stay int64
                setattr(self, name, t.to(dtype))
        self._loaders.clear()
        self._device_cache.clear()

    def _loader(self, split: str, batch_size: int | None) -> TensorLoader:
        rank, world = self._rank_world()
        key = (split, rank, world)
        if key not in self._loaders:
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            epoch_fn = self._epoch if self.trainer is not None else None
            self._loaders[key] = TensorLoader(x, y, batch_size, self.batch_seed, rank, world, epoch_fn)
        return self._loaders[key]

    def train_dataloader(self) -> TensorLoader | NoisyLoader:
        loader = self._loader("train", self.batch_size)
        if not (self.label_noise or self.input_noise):
            return loader
        rank, _ = self._rank_world()
        epoch_fn = self._epoch if self.trainer is not None else None
        return NoisyLoader(loader, self.input_noise, self.label_noise, float(self.x_train.std()), self.n_classes,
                           self.batch_seed, rank, epoch_fn)

    def val_dataloader(self) -> TensorLoader:
        return self._loader("test", None)

    def test_dataloader(self) -> TensorLoader:
        return self._loader("test", None)

    def _cacheable(self) -> dict[int, Tensor]:
        tensors = [getattr(self, name) for name in _TENSORS]
        for loader in self._loaders.values():
            tensors.extend(loader.tensors())
        return {id(t): t for t in tensors}

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Move a batch to ``device``; the datamodule's own tensors (full batches) are copied once and the
        cached copy is returned every step (same object), fresh mini-batch tensors are moved as usual."""
        if isinstance(batch, (tuple, list)) and batch and all(isinstance(t, Tensor) for t in batch):
            own = self._cacheable()
            if all(id(t) in own for t in batch):
                out = []
                for t in batch:
                    key = (id(t), str(device))
                    if key not in self._device_cache:  # the entry keeps t alive, so its id stays unique
                        self._device_cache[key] = (t, t.to(device))
                    out.append(self._device_cache[key][1])
                return type(batch)(out)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)
