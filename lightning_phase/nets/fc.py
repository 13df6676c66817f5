"""Fully connected network in the NTK parametrisation (SCIENCE.md §1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_phase.errors import ConfigError, check_positive_int
from lightning_phase.nets.activations import Activation
from lightning_phase.nets.linear import NTKLinear
from lightning_phase.nets.members import RecordsInitArgs


class FullyConnected(RecordsInitArgs, nn.Module):
    """f(x) = W^L a^L/√h, a^ℓ = σ(z^ℓ), z¹ = W⁰x/√d, z^{ℓ+1} = W^ℓ a^ℓ/√h; W ~ N(0,1); K = ``out_dim`` outputs.

    depth L = number of hidden layers (depth 1: d → h → 1; depth 2: d → h → h → 1).
    Without biases N = d·h + (L−1)·h² + h·K parameters. ``bias`` = b scales zero-initialised biases
    (b = 0: none). ``activation`` is normalised to E[σ(z)²] = 1; ``activation_beta`` is β of
    softplus_β / swish_β (negative slope of leaky_relu). ``input_dim`` d is filled from the data when left
    None by the CLI, ``out_dim`` K too (1 for ±1 labels, the number of classes for ``data.labels: class``).
    ``seed`` draws w₀ from its own generator; None uses torch's global generator (set by
    ``seed_everything``). w₀ never depends on α.

    Input (P, d) or (P, *shape) with prod(shape) = d (flattened); output (P,) for K = 1, else (P, K).
    """

    def __init__(
        self,
        width: int,
        depth: int = 2,
        activation: str = "relu",
        activation_beta: float | None = None,
        bias: float = 0.0,
        input_dim: int | None = None,
        seed: int | None = None,
        out_dim: int = 1,
    ):
        super().__init__()
        self.width = check_positive_int("model.net.init_args.width", width)
        self.depth = check_positive_int("model.net.init_args.depth", depth)
        if input_dim is None:
            raise ConfigError("model.net.init_args.input_dim", input_dim,
                              "an integer >= 1 (filled from the data by the CLI)")
        self.input_dim = check_positive_int("model.net.init_args.input_dim", input_dim)
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or bias != bias:
            raise ConfigError("model.net.init_args.bias", bias, "a number (0 = no biases)")
        self.out_dim = check_positive_int("model.net.init_args.out_dim", out_dim)
        self.act = Activation(activation, activation_beta)
        g = None if seed is None else torch.Generator().manual_seed(int(seed))
        sizes = [self.input_dim] + [self.width] * self.depth + [self.out_dim]
        self.layers = nn.ModuleList(NTKLinear(a, b, bias, generator=g) for a, b in zip(sizes[:-1], sizes[1:]))

    def linear_layers(self) -> list[NTKLinear]:
        """The L + 1 layers, input to readout (``self.layers`` typed for the checker)."""
        return [layer for layer in self.layers if isinstance(layer, NTKLinear)]

    def forward(self, x: Tensor) -> Tensor:
        a = x.flatten(1)  # (P, d)
        for layer in self.layers[:-1]:
            a = self.act(layer(a))  # (P, h)
        out = self.layers[-1](a)  # (P, K)
        return out.squeeze(-1) if self.out_dim == 1 else out

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
