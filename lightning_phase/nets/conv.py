"""The convolutional network of [FL] (SCIENCE.md §1), in the NTK parametrisation."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_phase.errors import ConfigError, check_positive_int
from lightning_phase.nets.activations import Activation
from lightning_phase.nets.members import RecordsInitArgs


class NTKConv2d(nn.Module):
    """z = conv(x, W)/√(c_in·k²), W ~ N(0,1) of shape (c_out, c_in, k, k), no bias, padding k//2."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, generator: torch.Generator | None):
        super().__init__()
        self.c_in, self.kernel_size, self.stride = c_in, kernel_size, stride
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel_size, kernel_size, generator=generator))

    def forward(self, x: Tensor) -> Tensor:
        scale = 1.0 / math.sqrt(self.c_in * self.kernel_size**2)
        return F.conv2d(x, self.weight * scale, stride=self.stride, padding=self.kernel_size // 2)


class ConvNet(RecordsInitArgs, nn.Module):
    """[FL] CNN: 2 stages × 2 convs (k×k, h channels, stride 2 on each stage's first conv), no bias,
    1/√(c_in·k²) scaling, σ after every conv, global average pool, readout f = w·pool/√h, w ~ N(0,1).

    Input (P, C, H, W) images; a flat input (P, D) is reshaped to (P, C, √(D/C), √(D/C)) with
    C = ``in_channels``. ``input_dim`` is accepted (and checked) so that the CLI can fill it from
    the data like for FullyConnected. Output (P,), or (P, K) for ``out_dim`` K > 1 (readout W (h, K)).
    """

    def __init__(
        self,
        width: int,
        in_channels: int = 1,
        kernel_size: int = 5,
        activation: str = "relu",
        activation_beta: float | None = None,
        input_dim: int | None = None,
        seed: int | None = None,
        out_dim: int = 1,
    ):
        super().__init__()
        self.width = check_positive_int("model.net.init_args.width", width)
        self.in_channels = check_positive_int("model.net.init_args.in_channels", in_channels)
        self.kernel_size = check_positive_int("model.net.init_args.kernel_size", kernel_size)
        if input_dim is not None:
            side = math.isqrt(max(int(input_dim) // self.in_channels, 0))
            if self.in_channels * side * side != input_dim:
                raise ConfigError(
                    "model.net.init_args.input_dim", input_dim,
                    f"in_channels·s² for a square s×s image (in_channels={in_channels})"
                )
        self.input_dim = input_dim
        self.out_dim = check_positive_int("model.net.init_args.out_dim", out_dim)
        self.act = Activation(activation, activation_beta)
        g = None if seed is None else torch.Generator().manual_seed(int(seed))
        chans = [self.in_channels, width, width, width, width]
        strides = [2, 1, 2, 1]
        self.convs = nn.ModuleList(
            NTKConv2d(a, b, self.kernel_size, s, g) for a, b, s in zip(chans[:-1], chans[1:], strides)
        )
        shape = (width,) if self.out_dim == 1 else (width, self.out_dim)
        self.readout = nn.Parameter(torch.randn(*shape, generator=g))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:  # (P, D) → (P, C, s, s)
            side = math.isqrt(x.shape[1] // self.in_channels)
            x = x.reshape(x.shape[0], self.in_channels, side, side)
        for conv in self.convs:
            x = self.act(conv(x))  # (P, h, H', W')
        return x.mean(dim=(2, 3)) @ self.readout / math.sqrt(self.width)  # (P,) or (P, K)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
