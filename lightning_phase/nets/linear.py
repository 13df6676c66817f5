"""The NTK-parametrised linear layer shared by every network."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class NTKLinear(nn.Module):
    """z = x Wᵀ/√n_in + b·β, with W ~ N(0,1) of shape (n_out, n_in) and β zero-initialised.

    ``bias`` is the scale factor b of SCIENCE.md §1; with b = 0 the layer has no bias parameter at all,
    so the parameter count is n_in·n_out. Input (P, n_in) → output (P, n_out).
    """

    def __init__(self, n_in: int, n_out: int, bias: float = 0.0, generator: torch.Generator | None = None):
        super().__init__()
        self.n_in, self.n_out, self.bias_scale = n_in, n_out, float(bias)
        self.weight = nn.Parameter(torch.randn(n_out, n_in, generator=generator))
        self.bias = nn.Parameter(torch.zeros(n_out)) if self.bias_scale != 0.0 else None

    def forward(self, x: Tensor) -> Tensor:
        z = x @ (self.weight.t() / math.sqrt(self.n_in))  # scale the (small) weight, not the batch
        if self.bias is not None:
            z = z + self.bias_scale * self.bias
        return z

    def extra_repr(self) -> str:
        return f"n_in={self.n_in}, n_out={self.n_out}, bias={self.bias_scale:g}"
