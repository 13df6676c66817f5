"""The spring–block model of feature learning ([SB] 2407.19353, first-order rule; BEYOND.md §A.4).

A wall at x_0 ≡ 0 (the input), blocks at x_1…x_L (the layers), the last block pulled toward the target
x_{L+1} ≡ y through one more spring. Spring elongations d_ℓ = x_ℓ − x_{ℓ−1} (ℓ = 1…L+1) play the loads
of a network's layers, 1 − x_ℓ its normalised load curve. Each step, synchronously for every block,

    F_ℓ = k (x_{ℓ+1} − 2x_ℓ + x_{ℓ−1}) + ε ξ_ℓ,     ξ_ℓ ~ N(0, 1) independent per block and step,
    F_ℓ ↦ sign(F_ℓ) · max(|F_ℓ| − μ_{dir}, 0)        (dry friction as a dead zone; μ_→ for F > 0, μ_← for F < 0),
    x_ℓ ← x_ℓ + η F_ℓ.

Without noise a block stops once |k(d_{ℓ+1} − d_ℓ)| ≤ μ: with L = 7, k = 1, μ = 0.1 the rest state is
d = (0, 0, 0, 0, 0.1, 0.2, 0.3, 0.4) (concave: the shallow layers never move); μ = 0 gives d = 1/(L+1).
Friction ↔ non-linearity, noise ↔ dropout / label noise / learning rate.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["spring_block"]


def spring_block(
    n_blocks: int = 7,
    k: float = 1.0,
    mu_forward: float = 0.1,
    mu_backward: float | None = None,
    noise: float = 0.0,
    eta: float = 0.01,
    n_steps: int = 20_000,
    target: float = 1.0,
    n_chains: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Elongations d (n_chains, L+1) float64 of the spring–block chain after ``n_steps`` first-order steps.

    L = ``n_blocks``; start at rest at x = 0; ``noise`` = ε (std of the force noise), ``mu_backward``
    defaults to ``mu_forward``; chains are independent (vectorised). d sums to ``target`` for every chain.
    """
    if n_blocks < 1 or n_steps < 0 or n_chains < 1 or eta <= 0:
        raise ValueError("spring_block: n_blocks >= 1, n_steps >= 0, n_chains >= 1 and eta > 0 expected")
    mu_b = mu_forward if mu_backward is None else mu_backward
    x = torch.zeros(n_chains, n_blocks + 2, dtype=torch.float64)  # (chains, wall + L blocks + target)
    x[:, -1] = target
    for _ in range(n_steps):
        force = k * (x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2])  # (chains, L)
        if noise:
            force = force + noise * torch.randn(force.shape, generator=generator, dtype=torch.float64)
        mu = torch.where(force > 0, mu_forward, mu_b)
        force = torch.sign(force) * (force.abs() - mu).clamp_min(0)
        x[:, 1:-1] += eta * force
    return x[:, 1:] - x[:, :-1]
