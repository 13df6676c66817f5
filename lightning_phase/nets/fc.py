"""Fully connected network in the NTK parametrisation (SCIENCE.md §1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_phase.errors import ConfigError, check_positive_int
from lightning_phase.nets.activations import Activation
from lightning_phase.nets.linear import NTKLinear
from lightning_phase.nets.members import RecordsInitArgs


class FullyConnected(RecordsInitArgs, nn.Module):
    """f(x) = W^L a^L/√h, a^ℓ = σ(z^ℓ), z¹ = W⁰x/√d, z^{ℓ+1} = W^ℓ a^ℓ/√h; W ~ N(0,1), scalar output.

    depth L = number of hidden layers (depth 1: d → h → 1; depth 2: d → h → h → 1).
    Without biases N = d·h + (L−1)·h² + h parameters. ``bias`` = b scales zero-initialised biases
    (b = 0: none). ``activation`` is normalised to E[σ(z)²] = 1; ``activation_beta`` is β of
    softplus_β / swish_β. ``input_dim`` d is filled from the data when left None by the CLI.
    ``seed`` draws w₀ from its own generator; None uses torch's global generator (set by
    ``seed_everything``). w₀ never depends on α.

    Input (P, d) or (P, *shape) with prod(shape) = d (flattened); output (P,).
    """

    def __init__(
        self,
        width: int,
        depth: int = 2,
        activation: str = "relu",
        activation_beta: float = 1.0,
        bias: float = 0.0,
        input_dim: int | None = None,
        seed: int | None = None,
    ):
        super().__init__()
        self.width = check_positive_int("net.width", width)
        self.depth = check_positive_int("net.depth", depth)
        if input_dim is None:
            raise ConfigError("net.input_dim", input_dim, "an integer >= 1 (filled from the data by the CLI)")
        self.input_dim = check_positive_int("net.input_dim", input_dim)
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or bias != bias:
            raise ConfigError("net.bias", bias, "a number (0 = no biases)")
        self.act = Activation(activation, activation_beta)
        g = None if seed is None else torch.Generator().manual_seed(int(seed))
        sizes = [self.input_dim] + [self.width] * self.depth + [1]
        self.layers = nn.ModuleList(NTKLinear(a, b, bias, generator=g) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: Tensor) -> Tensor:
        a = x.flatten(1)  # (P, d)
        for layer in self.layers[:-1]:
            a = self.act(layer(a))  # (P, h)
        return self.layers[-1](a).squeeze(-1)  # (P,)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
