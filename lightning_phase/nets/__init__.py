"""Networks f(w, x) in the NTK parametrisation; any ``nn.Module`` mapping (P, ...) → (P,) also works."""

from lightning_phase.nets.activations import ACTIVATIONS, Activation, second_moment
from lightning_phase.nets.conv import ConvNet
from lightning_phase.nets.fc import FullyConnected
from lightning_phase.nets.linear import NTKLinear
from lightning_phase.nets.members import Members
from lightning_phase.nets.mlp import MLP

__all__ = ["ACTIVATIONS", "Activation", "ConvNet", "FullyConnected", "MLP", "Members", "NTKLinear", "second_moment"]
