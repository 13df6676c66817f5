"""Activations normalised so that E_{z~N(0,1)}[σ(z)²] = 1 (SCIENCE.md §1).

σ(z) = c·φ(z) with c = E[φ(z)²]^{-1/2}, computed once per (name, β) by Gauss–Legendre quadrature
(no Monte Carlo, no global RNG). ReLU has the exact constant c = √2.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_phase.errors import ConfigError, check_choice

ACTIVATIONS = ("relu", "softplus", "swish", "tanh", "linear", "leaky_relu")


def _raw(name: str, beta: float):
    """The un-normalised φ(z) as a torch function."""
    if name == "relu":
        return F.relu
    if name == "softplus":  # softplus_β(z) = log(1 + e^{βz})/β
        return lambda z: F.softplus(z, beta=beta)
    if name == "swish":  # swish_β(z) = z·sigmoid(βz)
        return lambda z: z * torch.sigmoid(beta * z)
    if name == "tanh":
        return torch.tanh
    if name == "leaky_relu":  # slope β for z < 0 ([SB]: β = 0 is ReLU, β = 1 linear)
        return lambda z: F.leaky_relu(z, negative_slope=beta)
    return lambda z: z


@cache
def second_moment(name: str, beta: float = 1.0) -> float:
    """E_{z~N(0,1)}[φ(z)²] of the raw activation, by quadrature in float64.

    ReLU, linear and leaky ReLU are exact (1/2, 1, (1 + β²)/2). Others: 400-point Gauss–Legendre on [−12, 0] and [0, 12]
    (the tails beyond contribute < 1e-30); splitting at 0 keeps softplus/swish with a large β, which
    bend sharply there, accurate to ~1e-12.
    """
    if name == "relu":
        return 0.5
    if name == "linear":
        return 1.0
    if name == "leaky_relu":
        return 0.5 * (1 + beta * beta)
    phi = _raw(name, beta)
    nodes, weights = np.polynomial.legendre.leggauss(400)
    total = 0.0
    for lo, hi in ((-12.0, 0.0), (0.0, 12.0)):  # |z| > 12 contributes < 1e-30
        z = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
        zt = torch.as_tensor(z, dtype=torch.float64)
        f2 = phi(zt).pow(2).numpy() * np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
        total += 0.5 * (hi - lo) * float(np.dot(weights, f2))
    return total


class Activation(nn.Module):
    """σ(z) = c·φ_β(z), normalised so that E[σ(z)²] = 1 for z ~ N(0,1).

    name: relu | softplus (softplus_β) | swish (z·sigmoid(βz)) | tanh | linear | leaky_relu (max(z, βz),
    β ∈ [0, 1] the negative slope); beta: β for softplus/swish/leaky_relu, None = 1 (leaky_relu: 0.01).
    """

    def __init__(self, name: str = "relu", beta: float | None = None):
        super().__init__()
        check_choice("model.net.init_args.activation", name, ACTIVATIONS)
        if beta is None:  # 1 for softplus/swish (unused by relu, tanh, linear), 0.01 (torch's) for leaky_relu
            beta = 0.01 if name == "leaky_relu" else 1.0
        if name == "leaky_relu":
            if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not 0 <= beta <= 1:
                raise ConfigError("model.net.init_args.activation_beta", beta, "the negative slope, a number in [0, 1]")
        elif not isinstance(beta, (int, float)) or isinstance(beta, bool) or not beta > 0:
            raise ConfigError("model.net.init_args.activation_beta", beta, "a number > 0")
        self.name, self.beta = name, float(beta)
        self.scale = 1.0 / math.sqrt(second_moment(name, self.beta))
        self._phi = _raw(name, self.beta)

    def forward(self, z: Tensor) -> Tensor:
        return self.scale * self._phi(z)

    def extra_repr(self) -> str:
        return f"{self.name}, beta={self.beta:g}, scale={self.scale:.6f}"
