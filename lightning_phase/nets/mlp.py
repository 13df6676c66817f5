"""The [SB] multilayer perceptron (2407.19353, BEYOND.md §A.5): standard parametrisation, BatchNorm, dropout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_phase.errors import ConfigError, check_bool, check_positive_int
from lightning_phase.nets.activations import Activation


class MLP(nn.Module):
    """[input BatchNorm →] depth × [Linear(width) → BatchNorm → σ → Dropout(p)] → Linear(K), PyTorch's default
    init law (weights and biases uniform in ±1/√fan_in; from ``seed``'s own generator when given), biases
    on; not the NTK parametrisation (use with ``model.alpha: 1`` and ``model.center: false`` to train f
    itself, as [SB] does).

    ``activation`` as in ``FullyConnected`` (normalised to E[σ²] = 1; [SB]: ``leaky_relu`` with slope
    ``activation_beta`` from 0 = ReLU to 1 = linear); ``dropout`` p after every activation (not after the
    last linear layer); ``batch_norm`` switches every BatchNorm on or off. ``input_dim`` d and ``out_dim`` K
    are filled from the data. The activation modules are separate per layer, so the load curve's hooks
    see one call each. Input (P, d) or (P, *shape) (flattened); output (P,) for K = 1, else (P, K).
    """

    def __init__(
        self,
        width: int = 100,
        depth: int = 7,
        activation: str = "leaky_relu",
        activation_beta: float | None = 0.0,
        dropout: float = 0.0,
        batch_norm: bool = True,
        input_dim: int | None = None,
        out_dim: int = 1,
        seed: int | None = None,
    ):
        super().__init__()
        self.width = check_positive_int("model.net.init_args.width", width)
        self.depth = check_positive_int("model.net.init_args.depth", depth)
        if input_dim is None:
            raise ConfigError("model.net.init_args.input_dim", input_dim, "an integer >= 1 (filled from the data)")
        self.input_dim = check_positive_int("model.net.init_args.input_dim", input_dim)
        self.out_dim = check_positive_int("model.net.init_args.out_dim", out_dim)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError("model.net.init_args.dropout", dropout, "a probability in [0, 1)")
        self.dropout, self.batch_norm = float(dropout), check_bool("model.net.init_args.batch_norm", batch_norm)
        Activation(activation, activation_beta)  # checks the name and β once, with their YAML keys
        with torch.random.fork_rng(enabled=seed is not None):  # with a seed, the global RNG is left as it was
            self.input_norm = nn.BatchNorm1d(self.input_dim) if self.batch_norm else nn.Identity()
            blocks = []
            for n_in in [self.input_dim] + [self.width] * (self.depth - 1):
                blocks.append(nn.Sequential(
                    nn.Linear(n_in, self.width),
                    nn.BatchNorm1d(self.width) if self.batch_norm else nn.Identity(),
                    Activation(activation, activation_beta),
                    nn.Dropout(self.dropout),
                ))  # fmt: skip
            self.blocks = nn.ModuleList(blocks)
            self.readout = nn.Linear(self.width, self.out_dim)
        if seed is not None:  # torch's default law U(±1/√fan_in) for weights and biases, from our own generator
            g = torch.Generator().manual_seed(int(seed))
            with torch.no_grad():
                for m in self.modules():
                    if isinstance(m, nn.Linear):
                        bound = m.in_features**-0.5
                        m.weight.uniform_(-bound, bound, generator=g)
                        m.bias.uniform_(-bound, bound, generator=g)

    def forward(self, x: Tensor) -> Tensor:
        a = self.input_norm(x.flatten(1))  # (P, d)
        for block in self.blocks:
            a = block(a)  # (P, h)
        out = self.readout(a)  # (P, K)
        return out.squeeze(-1) if self.out_dim == 1 else out
