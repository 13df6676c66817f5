"""Observables of K members at once (``model.members``): the single-net definitions with a leading member axis.

Member k of a :class:`~lightning_phase.nets.members.Members` net is the single net its run would build with
init seed + k; every function here returns, in slot k, what the single-net observable gives for member k
(tests/test_members_observables.py checks each against ``ntk``/``weights_change``/``margins`` of
``Members.member(k)`` in float64).

Example (float64, FC net, K = 4 members, P = 50)::

    m = Members.from_net(FullyConnected(width=16, depth=2, input_dim=10, seed=0).double(), 4)
    theta = ntk_members(m, x)                    # (4, 50, 50): Θ of each member
    kernel_change_members(theta0, theta)         # (4,)  ‖Θ_k − Θ₀_k‖_F/‖Θ₀_k‖_F
    weights_change_members(m, m0)["total"]       # (4,)  √h‖w_k − w₀_k‖/‖w₀_k‖
    delta_stats(margins(F, y))                   # F (4, P): n_delta, min, median, each (4,)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_phase.losses import n_delta
from lightning_phase.nets.fc import FullyConnected
from lightning_phase.nets.members import Members
from lightning_phase.observables.ntk import Method, ntk

__all__ = ["delta_stats", "kernel_change_members", "kernel_stats_members", "ntk_members",
           "weights_change_members"]


# ---- NTK ------------------------------------------------------------------------------------------------
def _members_fc_signals(net: Members, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """The layer-wise signals of ``observables.ntk`` with a member axis: A_ℓ = (layer input)/√n_in
    (K, P, n_in) and B_ℓ = ∂f_k/∂z_ℓ (K, P, C·n_out), C outputs stacked on the feature axis. One backward
    per output gives every member's and sample's gradient (members and samples do not interact)."""
    template = net.template
    assert isinstance(template, FullyConnected)  # the caller checked it
    layers = template.linear_layers()
    k_all = net.members
    params = dict(zip(net.param_names, net.stacked, strict=True))
    n_layers = len(layers)
    with torch.enable_grad():
        a = x.flatten(1).detach().expand(k_all, -1, -1)  # (K, P, d), shared input
        A, Z = [], []
        for i, layer in enumerate(layers):
            w = params[f"layers.{i}.weight"].detach().requires_grad_(False)  # (K, n_out, n_in)
            A.append(a.detach() / math.sqrt(layer.n_in))
            if i == 0:
                a = a.detach().requires_grad_(True)  # the graph reaches Z even for a frozen net
            z = a @ (w.transpose(1, 2) / math.sqrt(layer.n_in))  # (K, P, n_out)
            if layer.bias_scale != 0.0:
                z = z + layer.bias_scale * params[f"layers.{i}.bias"].detach().unsqueeze(1)
            Z.append(z)
            a = template.act(z) if i < n_layers - 1 else z
        f = a  # (K, P, C)
        Bc = [torch.autograd.grad(f[..., c].sum(), Z, retain_graph=c + 1 < f.shape[-1]) for c in range(f.shape[-1])]
    return A, [torch.cat([b[ell] for b in Bc], dim=-1).detach() for ell in range(n_layers)]


def ntk_members(net: Members, x: Tensor, method: Method = "auto") -> Tensor:
    """Θ_k(x_μ, x_ν) = ∇_{w_k} f_k(x_μ)·∇_{w_k} f_k(x_ν) of every member k: x (P, ...) → (K, P, P), the dtype
    of the net; slot k equals ``ntk(net.member(k), x, method=method)`` (no α, gradients not tracked).

    ``FullyConnected`` members with ``method`` "auto" or "layerwise": the layer-wise formula
    Θ_k = Σ_ℓ (B_ℓk B_ℓkᵀ) ∘ (A_ℓk A_ℓkᵀ + b_ℓ²) as batched matmuls over k (one forward, one backward per
    output). Any other net or method: a Python loop over the members, each through ``ntk`` (O(K) calls).
    """
    template = net.template
    if isinstance(template, FullyConnected) and method in ("auto", "layerwise"):
        A, B = _members_fc_signals(net, x)
        theta = None
        for layer, a, b in zip(template.linear_layers(), A, B, strict=True):
            aa = a @ a.transpose(1, 2)  # (K, P, P)
            if layer.bias is not None:
                aa += layer.bias_scale**2
            term = (b @ b.transpose(1, 2)).mul_(aa)
            theta = term if theta is None else theta.add_(term)
        assert theta is not None  # a FullyConnected net has at least two layers
        return theta
    return torch.stack([ntk(net.member(k), x, method=method) for k in range(net.members)])


def kernel_change_members(k0: Tensor, kt: Tensor) -> Tensor:
    """‖Θ_t,k − Θ₀,k‖_F / ‖Θ₀,k‖_F per member: k0, kt (K, P, P') → (K,) (``kernel_change`` of each slot)."""
    return torch.linalg.matrix_norm(kt - k0) / torch.linalg.matrix_norm(k0)


def kernel_stats_members(theta: Tensor) -> dict[str, Tensor]:
    """norm = ‖Θ_k‖_F, trace = Tr Θ_k, top_eig = λ_max(Θ_k) of symmetric (K, P, P) kernels, each (K,)."""
    return {
        "norm": torch.linalg.matrix_norm(theta),
        "trace": theta.diagonal(dim1=-2, dim2=-1).sum(-1),
        "top_eig": torch.linalg.eigvalsh(theta)[..., -1],
    }


# ---- weights ----------------------------------------------------------------------------------------------
@torch.no_grad()
def weights_change_members(net: Members, net0: Members, width: int | None = None) -> dict[str, Tensor]:
    """√h‖w_k − w₀,k‖/‖w₀,k‖ per member, total (key "total") and per layer (the template's module path,
    e.g. "layers.0"), each (K,); slot k equals ``weights_change(net.member(k), net0.member(k))``.

    h = ``width`` or ``net.width`` (1 without an integer width). A layer whose w₀ is all zero reports inf.
    """
    h = width if width is not None else getattr(net, "width", None)
    scale = math.sqrt(h) if isinstance(h, int) and h > 0 else 1.0
    num: dict[str, Tensor] = {}
    den: dict[str, Tensor] = {}
    for name, w, w0 in zip(net.param_names, net.stacked, net0.stacked, strict=True):
        layer = name.rsplit(".", 1)[0] if "." in name else name
        num[layer] = num.get(layer, 0) + (w - w0).pow(2).flatten(1).sum(1)  # (K,)
        den[layer] = den.get(layer, 0) + w0.pow(2).flatten(1).sum(1)
    total = torch.stack(list(num.values())).sum(0) / torch.stack(list(den.values())).sum(0)  # (K,)
    out = {"total": scale * total.sqrt()}
    for layer in num:
        out[layer] = torch.where(den[layer] > 0, scale * (num[layer] / den[layer]).sqrt(),
                                 torch.full_like(den[layer], math.inf))
    return out


# ---- margins ---------------------------------------------------------------------------------------------
def delta_stats(delta: Tensor) -> dict[str, Tensor]:
    """N_Δ = #{Δ_μ > 0}, N_Δ/P, min and median of Δ over the last axis: Δ (..., P) → each (...,), float64.

    A row with a non-finite Δ (a diverged net) gives NaN everywhere: a NaN margin would count as met.
    The median is the lower of the two middle values for even P (``torch.median``, as for one net).
    """
    finite = torch.isfinite(delta).all(-1)
    nan = torch.tensor(math.nan, dtype=torch.float64, device=delta.device)
    nd = n_delta(delta).double()
    out = {"n_delta": nd, "n_delta_over_p": nd / delta.shape[-1], "min": delta.amin(-1).double(),
           "median": delta.median(-1).values.double()}
    return {k: torch.where(finite, v, nan) for k, v in out.items()}
