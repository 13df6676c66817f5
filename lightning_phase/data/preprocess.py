"""Preprocessing of real data pools (SCIENCE.md §5), as pure functions on tensors.

Pipeline (``preprocess_pool``): parity labels → class-balanced interleaved order (shuffled within each
class by the data seed) → centre by the pool mean → optional PCA to d components (optionally whitened)
→ each sample rescaled to norm √D → split the order into test | kernel | train.
The mean and the PCA basis are computed on the whole pool, in float64, chunk by chunk (the raw pool may
stay uint8), so they do not depend on n_train, and neither does the test set.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

_CHUNK = 8192  # rows converted to float64 at a time


def parity_labels(classes: np.ndarray | Tensor) -> Tensor:
    """y = +1 for an even class index, −1 for an odd one; (N,) int → (N,) float64."""
    c = torch.as_tensor(np.asarray(classes), dtype=torch.int64)
    return torch.where(c % 2 == 0, 1.0, -1.0).to(torch.float64)


def class_labels(classes: np.ndarray | Tensor) -> Tensor:
    """Class indices 0…K−1 in increasing order of the distinct class values; (N,) → (N,) int64."""
    c = np.asarray(classes)
    return torch.as_tensor(np.unique(c, return_inverse=True)[1].reshape(-1), dtype=torch.int64)


def interleave_classes(classes: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """An order of the pool visiting classes round-robin in increasing class order: c₀, c₁, …, c₀, c₁, …

    Within each class the order is a random permutation drawn from ``gen``. A class that runs out is
    skipped, so every prefix of length ≤ (number of classes)·(smallest class size) holds each class
    equally often (±1), and — since consecutive classes alternate in parity — every such window has
    |Σ y| ≤ 1. Returns (N,) int64 indices into the pool.
    """
    classes = np.asarray(classes)
    n = len(classes)
    perm = torch.randperm(n, generator=gen).numpy()  # random order of the pool
    idx = perm[np.argsort(classes[perm], kind="stable")]  # grouped by class, random inside a class
    c = classes[idx]
    rank = np.arange(n) - np.searchsorted(c, c, side="left")  # position of each sample inside its class
    return idx[np.lexsort((c, rank))]  # sort by rank, then by class


def pool_mean(x: Tensor) -> Tensor:
    """μ = (1/N) Σ_μ x_μ over the whole pool in float64; x (N, D) any dtype → (D,)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for start in range(0, len(x), _CHUNK):
        total += x[start : start + _CHUNK].to(torch.float64).sum(0)
    return total / len(x)


def pca_basis(x: Tensor, mean: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k principal directions of the pool: C = (1/N) Σ (x−μ)(x−μ)ᵀ = U Λ Uᵀ (torch.linalg.eigh).

    Returns (U_k (D, k) float64, columns by decreasing variance, signs fixed so each column's largest
    entry is positive; σ_k (k,) the standard deviations √λ of the pool along them).
    """
    cov = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for start in range(0, len(x), _CHUNK):
        xc = x[start : start + _CHUNK].to(torch.float64) - mean  # (chunk, D)
        cov += xc.T @ xc
    cov /= len(x)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals, evecs = evals.flip(0)[:k], evecs.flip(1)[:, :k]
    sign = torch.sign(evecs.gather(0, evecs.abs().argmax(0, keepdim=True)))  # (1, k)
    return evecs * sign, evals.clamp_min(0).sqrt()


def normalise_rows(x: Tensor) -> Tensor:
    """x_μ ← √D · x_μ / ‖x_μ‖ for every row; x (P, D) float64 → (P, D). A zero row stays zero."""
    norms = x.norm(dim=1, keepdim=True)
    return x * (math.sqrt(x.shape[1]) / norms.clamp_min(torch.finfo(x.dtype).tiny))


def transform(x: Tensor, mean: Tensor, basis: Tensor | None = None, std: Tensor | None = None) -> Tensor:
    """Centre, project, normalise: z = (x − μ) U_k [/ σ_k], then ‖z_μ‖ = √D; x (P, D_raw) → (P, D)."""
    z = x.to(torch.float64) - mean
    if basis is not None:
        z = z @ basis  # (P, k)
        if std is not None:
            z = z / std.clamp_min(torch.finfo(z.dtype).tiny)
    return normalise_rows(z)


def split_order(order: np.ndarray, n_test: int, n_kernel: int, n_train: int) -> tuple[np.ndarray, ...]:
    """Consecutive slices of ``order``: test first, then kernel, then train (disjoint by construction)."""
    a, b = n_test, n_test + n_kernel
    return order[:a], order[a:b], order[b : b + n_train]


def preprocess_pool(
    x: Tensor,
    classes: np.ndarray,
    n_test: int,
    n_kernel: int,
    n_train: int,
    gen: torch.Generator,
    pca_dim: int | None = None,
    whiten: bool = False,
    labels: str = "parity",
) -> dict[str, tuple[Tensor, Tensor]]:
    """The whole pipeline of this module on a raw pool x (N, D_raw), classes (N,).

    Returns {"test": (x, y), "kernel": (x, y), "train": (x, y)}, x (P, D) float64 with ‖x_μ‖ = √D,
    D = pca_dim or D_raw, y (P,) float64 in {−1, +1} (``labels="parity"``) or int64 class indices 0…K−1
    (``labels="class"``).
    """
    order = interleave_classes(classes, gen)
    mean = pool_mean(x)
    basis = std = None
    if pca_dim is not None:
        basis, std = pca_basis(x, mean, pca_dim)
        std = std if whiten else None
    y = parity_labels(classes) if labels == "parity" else class_labels(classes)
    parts = {}
    slices = split_order(order, n_test, n_kernel, n_train)
    for name, idx in zip(("test", "kernel", "train"), slices, strict=True):
        idx_t = torch.as_tensor(idx, dtype=torch.int64)
        parts[name] = (transform(x[idx_t], mean, basis, std), y[idx_t])
    return parts
