"""torchvision data sets read from ``root`` in their on-disk formats (imported lazily: ~1 s)."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from lightning_phase.errors import ConfigError

_KINDS = (("images", 3), ("labels", 1))
_IDX = tuple(f"{s}-{k}-idx{n}-ubyte" for s in ("train", "t10k") for k, n in _KINDS)
_EMNIST = tuple(f"emnist-letters-{s}-{k}-idx{n}-ubyte" for s in ("train", "test") for k, n in _KINDS)
_CIFAR = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")

# name → (torchvision class, extra kwargs, files expected under root)
VISION_SETS: dict[str, tuple[str, dict, tuple[str, ...]]] = {
    "mnist": ("MNIST", {}, tuple(f"MNIST/raw/{f}" for f in _IDX)),
    "fashion": ("FashionMNIST", {}, tuple(f"FashionMNIST/raw/{f}" for f in _IDX)),
    "kmnist": ("KMNIST", {}, tuple(f"KMNIST/raw/{f}" for f in _IDX)),
    "emnist_letters": ("EMNIST", {"split": "letters"}, tuple(f"EMNIST/raw/{f}" for f in _EMNIST)),
    "cifar10": ("CIFAR10", {}, tuple(f"cifar-10-batches-py/{f}" for f in _CIFAR)),
}


def missing_files(name: str, root: str) -> list[str]:
    """The files of ``name`` that are not under ``root`` (empty when all are there)."""
    return [f for f in VISION_SETS[name][2] if not os.path.isfile(os.path.join(root, f))]


def check_root(name: str, root, download: bool) -> str:
    """Raise ConfigError unless ``root`` holds the files of ``name`` (or ``download`` may fetch them)."""
    files = VISION_SETS[name][2]
    folder = os.path.dirname(files[0])
    what = f"a folder holding {folder}/ ({', '.join(os.path.basename(f) for f in files)})"
    hint = "; or set data.download: true to fetch them"
    if root is None:
        raise ConfigError("data.root", root, what + hint)
    if not isinstance(root, (str, os.PathLike)):
        raise ConfigError("data.root", root, "a folder path (string)")
    root = os.fspath(root)
    if download:
        return root
    if not os.path.isdir(root):
        raise ConfigError("data.root", root, "an existing folder: " + what + hint)
    missing = missing_files(name, root)
    if missing:
        raise ConfigError("data.root", root, f"{what}; missing {', '.join(missing)}{hint}")
    return root


def load_vision_pool(name: str, root: str, download: bool) -> tuple[Tensor, np.ndarray, tuple[int, ...]]:
    """Train and test parts of torchvision set ``name`` merged into one pool.

    Returns x (N, C·H·W) uint8 in C, H, W order, classes (N,) int64, and the image shape (C, H, W).
    EMNIST images are stored transposed in its files; they are turned upright here. Letters have
    classes 1..26 (a = 1).
    """
    import torchvision.datasets as tvd

    cls_name, kwargs, _ = VISION_SETS[name]
    cls = getattr(tvd, cls_name)
    xs, ys = [], []
    for train in (True, False):
        try:
            ds = cls(root, train=train, download=download, **kwargs)
        except (RuntimeError, OSError, ValueError) as err:  # corrupted, failed download, ...
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError("data.root", root, f"readable {name} files ({msg})") from err
        data = torch.as_tensor(np.asarray(ds.data))
        if data.ndim == 3:  # (N, H, W) grey images
            data = data.transpose(1, 2) if name == "emnist_letters" else data
            data = data.unsqueeze(1)
        else:  # CIFAR: (N, H, W, C) → (N, C, H, W)
            data = data.permute(0, 3, 1, 2)
        xs.append(data.contiguous())
        ys.append(np.asarray(ds.targets, dtype=np.int64))
    x = torch.cat(xs)  # (N, C, H, W) uint8
    shape = tuple(x.shape[1:])
    return x.reshape(len(x), -1), np.concatenate(ys), shape
