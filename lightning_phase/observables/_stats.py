"""Bootstrap resampling shared by the observables (numpy only; ``observables/`` may not import ``analysis/``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def bootstrap(statistic: Callable[[np.ndarray], object], n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``statistic(idx)`` on ``n_boot`` resamples with replacement of the indices 0…n−1, in order.

    Each resample is ``rng.integers(0, n, n)`` (int64), the very draws ``rng.choice(v, n)`` makes for a
    length-n ``v``. Returns ``np.array`` of the n_boot results: (n_boot,) for scalar statistics,
    (n_boot, k) for statistics returning k numbers.
    """
    return np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)])
