"""Raw data sources (SCIENCE.md §5): offline real sets (digits, mnist1d) and synthetic sets.

Every source draws its randomness from its own ``torch.Generator`` (or restores the global state it had
to touch), so constructing a data set never moves torch's, numpy's or Python's global RNG.
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import torch
from torch import Tensor

SYNTHETIC = ("random", "teacher", "stripe")
OFFLINE = ("digits", "mnist1d")
VISION = ("mnist", "fashion", "kmnist", "emnist_letters", "cifar10")
DATASETS = OFFLINE + VISION + SYNTHETIC

MNIST1D_MIN_POOL = 5000  # the standard mnist1d size (4000 train + 1000 test); grown only when more is asked
STRIPE_LOW, STRIPE_HIGH = -0.3, 1.18549  # y = −1 inside (low, high), +1 outside; P(y = −1) ≈ 1/2


def derived_seed(seed: int, *stream: int) -> int:
    """A 63-bit seed for stream ``stream`` of ``seed`` (numpy SeedSequence: streams are independent)."""
    state = np.random.SeedSequence([int(seed), *map(int, stream)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def generator(seed: int, *stream: int) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` for stream ``stream`` of ``seed``; never the global one."""
    return torch.Generator().manual_seed(derived_seed(seed, *stream))


# --------------------------------------------------------------------------------------------- real sets
@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()   # parses a compressed CSV: ~50 ms, paid once per process (and before a sweep's forks)
    x, y = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_digits_pool() -> tuple[Tensor, np.ndarray, tuple[int, ...]]:
    """scikit-learn's handwritten digits: x (1797, 64) float64 pixel values 0..16, classes (1797,) in 0..9.

    Returns (x, classes, image shape (1, 8, 8)), fresh copies of arrays cached in memory.
    """
    x, y = _digits_arrays()
    return torch.tensor(x), y.copy(), (1, 8, 8)


def mnist1d_pool_size(n_needed: int) -> int:
    """max(5000, n_needed rounded up to a multiple of 10): the pool, hence the test set, stays the same
    for every n_train as long as n_train + n_test + n_kernel ≤ 5000; ten equal classes."""
    return max(MNIST1D_MIN_POOL, 10 * math.ceil(n_needed / 10))


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    py_state, np_state = random.getstate(), np.random.get_state()
    try:  # make_dataset calls random.seed / np.random.seed: put the global states back afterwards
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float64)  # merge its train/test parts
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_mnist1d_pool(n_needed: int, seed: int) -> tuple[Tensor, np.ndarray, tuple[int, ...]]:
    """The mnist1d generator (Greydanus 2020) with seed ``seed``: x (N, 40) float64, classes (N,) in 0..9,
    N = ``mnist1d_pool_size(n_needed)`` (N/10 per class). Returns (x, classes, shape (40,)).
    Generation costs ~0.6 ms per sample; the last four pools are cached in memory.
    """
    x, y = _mnist1d_arrays(mnist1d_pool_size(n_needed), int(seed))
    return torch.tensor(x), y.copy(), (40,)


def warm_cache(data: dict | None) -> bool:
    """Generate, in this process, the generated pool that a run with ``data`` (a config's ``data:`` section,
    missing keys at their defaults) would generate, so that processes forked later (sweep workers and their
    trials) find it in the in-memory cache instead of regenerating it (mnist1d: ~3 s for 5000 samples).
    Pure numpy, no torch work before the fork. Returns True when something was generated (or, for digits,
    read: ~50 ms a trial otherwise)."""
    data = dict(data or {})
    if data.get("dataset", "digits") == "digits":
        _digits_arrays()
        return True
    if data.get("dataset") != "mnist1d":
        return False
    n = sum(int(data.get(key, default)) for key, default in (("n_train", 500), ("n_test", 500), ("n_kernel", 0)))
    _mnist1d_arrays(mnist1d_pool_size(n), int(data.get("data_seed", 0)))
    return True


# ---------------------------------------------------------------------------------------- synthetic sets
_BLOCK = 1024  # synthetic samples are drawn in blocks, each from its own stream


def _blocks(n: int, seed: int, stream: tuple[int, ...], draw) -> Tensor:
    """The first n rows of draw(_BLOCK, generator) concatenated over blocks, block b from stream
    (*stream, b). Whole blocks are always drawn (torch's vectorised samplers give different values for
    different sizes), so the first m rows are the same for every n ≥ m: a larger set extends a smaller one."""
    n_blocks = -(-n // _BLOCK)
    blocks = [draw(_BLOCK, generator(seed, *stream, b)) for b in range(n_blocks)]
    return torch.cat([draw(0, None), *blocks])[:n]


def gaussian_inputs(n: int, dim: int, seed: int, part: int) -> Tensor:
    """x ~ N(0, I_dim), shape (n, dim) float64, from stream ``part`` of ``seed``.

    Test, kernel and train sets are separate streams (part 0, 1, 2), so the test set does not depend on
    n_train, a larger train set extends a smaller one, and the sets are disjoint with probability one.
    """
    return _blocks(n, seed, (1, part), lambda m, g: torch.randn(m, dim, generator=g, dtype=torch.float64))


def random_labels(n: int, seed: int, part: int) -> Tensor:
    """y_μ = ±1 with probability 1/2 each, independent of x ([JAM] random data); shape (n,) float64."""
    bits = _blocks(n, seed, (2, part), lambda m, g: torch.randint(0, 2, (m,), generator=g, dtype=torch.int64))
    return (2 * bits - 1).to(torch.float64)


def stripe_labels(x: Tensor) -> Tensor:
    """Stripe model: y = −1 if −0.3 < x₁ < 1.18549 else +1, x₁ = x[:, 0]; shape (n,) float64."""
    inside = (x[:, 0] > STRIPE_LOW) & (x[:, 0] < STRIPE_HIGH)
    return torch.where(inside, -1.0, 1.0).to(torch.float64)


def make_teacher(dim: int, width: int, depth: int, seed: int) -> torch.nn.Module:
    """The teacher: a float64 ``FullyConnected(width, depth, input_dim=dim)`` with w drawn from stream 3."""
    from lightning_phase.nets import FullyConnected

    net = FullyConnected(width=width, depth=depth, input_dim=dim, seed=derived_seed(seed, 3))
    return net.double().requires_grad_(False)


def teacher_labels(x: Tensor, teacher: torch.nn.Module) -> Tensor:
    """y = sign f_teacher(x) (sign 0 → +1); x (n, d) float64 → (n,) float64."""
    with torch.no_grad():
        f = teacher(x)
    return torch.where(f >= 0, 1.0, -1.0).to(torch.float64)


def synthetic_part(name: str, n: int, dim: int, seed: int, part: int, teacher=None) -> tuple[Tensor, Tensor]:
    """(x, y) for part 0 (test), 1 (kernel) or 2 (train) of synthetic set ``name``; x (n, dim), y (n,)."""
    x = gaussian_inputs(n, dim, seed, part)
    if name == "random":
        return x, random_labels(n, seed, part)
    if name == "stripe":
        return x, stripe_labels(x)
    return x, teacher_labels(x, teacher)
