"""Members: K nets of one architecture trained as one batched computation (``model.members: K``).

Member k is the net its single run would build with an init seed larger by k: the net's own ``seed`` + k
when the net has one, else the global seed (``seed_everything``) + k, drawn in a forked RNG so the
process's global generator is left as it was. Its parameters are stacked along a leading member axis:
a parameter of shape S becomes one (K, *S) tensor, so an elementwise optimiser (SGD, Adam) updates every
member exactly as K separate runs would, and the loss Σ_k L_k has ∂/∂w_k = ∂L_k/∂w_k.

Shapes: input x (P, ...) shared by all members; output (K, P) (DESIGN.md: members add a LEADING axis).
Forward: batched matmuls for ``FullyConnected`` (z_k = a_k W_kᵀ/√n_in, one ``matmul`` over k), else
``torch.func.vmap`` of ``functional_call`` over the stacked parameters (any ``nn.Module``).

Example::

    net = FullyConnected(width=16, depth=2, input_dim=8, seed=3)
    m = Members.from_net(net, 4)          # seeds 3, 4, 5, 6
    m(torch.randn(10, 8)).shape           # (4, 10)
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from lightning_phase.errors import ConfigError


class RecordsInitArgs:
    """Mixin: remembers the constructor arguments as ``init_call = (args, kwargs)``, so that the net can be
    rebuilt with another seed (``respawn``). Put it first among the bases of an ``nn.Module``."""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        object.__setattr__(obj, "init_call", (args, dict(kwargs)))
        return obj


def member_seeds(net: nn.Module, k: int) -> list[tuple[str, int]]:
    """The init seed of members 0…k−1: ("net.seed", s + i) for a net with its own seed s, else
    ("seed_everything", s + i) with s = ``torch.initial_seed()`` (what ``seed_everything`` set)."""
    _, kwargs = _init_call(net)
    own = kwargs.get("seed")
    if own is not None:
        return [("net.seed", int(own) + i) for i in range(k)]
    base = torch.initial_seed()
    return [("seed_everything", base + i) for i in range(k)]


def _init_call(net: nn.Module) -> tuple[tuple, dict]:
    call = getattr(net, "init_call", None)
    if call is None:
        raise ConfigError("model.members", "a net without recorded constructor arguments",
                          f"1 for {type(net).__name__} (members need a net built from lightning_phase.nets, "
                          "or one that inherits lightning_phase.nets.members.RecordsInitArgs)")
    return call


def respawn(net: nn.Module, source: str, seed: int) -> nn.Module:
    """The same architecture built again with init seed ``seed`` (see :func:`member_seeds`), same dtype."""
    args, kwargs = _init_call(net)
    dtype = next(net.parameters()).dtype
    if source == "net.seed":
        return type(net)(*args, **{**kwargs, "seed": seed}).to(dtype)
    with torch.random.fork_rng(devices=[]):  # leaves the caller's global generator untouched
        torch.manual_seed(seed)
        return type(net)(*args, **kwargs).to(dtype)


class Members(nn.Module):
    """K nets of one architecture with stacked parameters; forward x (P, ...) → (K, P).

    Attributes: ``members`` K, ``seeds`` [(source, seed)] per member, ``width``/``depth`` of the
    architecture (when it has them), ``n_params_per_member`` N. Parameters are registered under
    ``stacked.<i>`` in the order of the template's ``named_parameters()`` (names in ``param_names``).
    """

    def __init__(self, nets: list[nn.Module], seeds: list[tuple[str, int]] | None = None):
        super().__init__()
        if not nets:
            raise ConfigError("model.members", 0, "an integer >= 1")
        base = nets[0]
        self.members = len(nets)
        self.seeds = seeds
        self.param_names = [n for n, _ in base.named_parameters()]
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.stack([dict(net.named_parameters())[n].detach() for net in nets]).clone())
            for n in self.param_names)
        self.buffer_names = [n for n, _ in base.named_buffers()]
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"stacked_buffer_{i}", torch.stack([dict(net.named_buffers())[n] for net in nets]))
        self._template = [copy.deepcopy(base)]  # a list: not a registered submodule (not counted, not moved)
        self.width = getattr(base, "width", None)
        self.depth = getattr(base, "depth", None)
        self.n_params_per_member = sum(p.numel() for p in base.parameters())
        from lightning_phase.nets.fc import FullyConnected  # here: fc.py imports this module's mixin

        self._fc = type(base) is FullyConnected

    @classmethod
    def from_net(cls, net: nn.Module, k: int, same_seed: bool = False) -> Members:
        """Members 0…k−1 of ``net``: member 0 is ``net`` itself, member i is ``respawn(net, seed + i)`` —
        or, with ``same_seed`` (members that differ in α only), a copy of ``net`` (every member seed + 0)."""
        if same_seed:
            seeds = member_seeds(net, 1) * k
            return cls([net] + [copy.deepcopy(net) for _ in range(k - 1)], seeds)
        seeds = member_seeds(net, k)
        nets = [net] + [respawn(net, src, s) for src, s in seeds[1:]]
        return cls(nets, seeds)

    @property
    def template(self) -> nn.Module:
        return self._template[0]

    def member(self, k: int) -> nn.Module:
        """A detached copy of member k as a plain net (same class as the template)."""
        net = copy.deepcopy(self.template)
        with torch.no_grad():
            params = dict(net.named_parameters())
            for name, p in zip(self.param_names, self.stacked):
                params[name].data = p[k].detach().clone()
        return net

    def forward(self, x: Tensor) -> Tensor:
        if self._fc:
            return self._forward_fc(x)
        params = dict(zip(self.param_names, self.stacked))
        buffers = {n: getattr(self, f"stacked_buffer_{i}") for i, n in enumerate(self.buffer_names)}

        def one(p: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
            return torch.func.functional_call(self.template, (p, b), (x,))

        out = torch.func.vmap(one, in_dims=(0, 0), randomness="different")(params, buffers)  # (K, P) or (K, P, 1)
        return out.squeeze(-1) if out.dim() == 3 and out.shape[-1] == 1 else out

    def _forward_fc(self, x: Tensor) -> Tensor:
        """The FullyConnected forward with a member axis: a (P, d) → z (K, P, h) → … → (K, P)."""
        net: Any = self.template  # a FullyConnected (self._fc): its layers and act are read
        params = dict(zip(self.param_names, self.stacked))
        a = x.flatten(1)  # (P, d), shared by the members
        n_layers = len(net.layers)
        for i, layer in enumerate(net.layers):
            w = params[f"layers.{i}.weight"]  # (K, n_out, n_in)
            a = a @ (w.transpose(1, 2) / math.sqrt(layer.n_in))  # (K, P, n_out)
            if layer.bias_scale != 0.0:
                a = a + layer.bias_scale * params[f"layers.{i}.bias"].unsqueeze(1)
            if i < n_layers - 1:
                a = net.act(a)
        return a.squeeze(-1)  # (K, P)
