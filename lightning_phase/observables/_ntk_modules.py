"""The module-wise NTK path for any ``nn.Module``: one forward with hooks, one backward, per-module Grams.

Θ = Σ_m Θ_m over the modules m that own parameters directly. With a_μ the input of m and B_μ = ∂f_μ/∂(output
of m) (all B from ONE ``autograd.grad(f.sum(), outputs)`` per output; K outputs: Θ = Σ_k Θ^{(k)}; samples
must not interact, e.g. no BatchNorm in training mode):
- linear modules (``NTKLinear``, ``nn.Linear``, input (P, n_in)): Θ_m = (BB'ᵀ)∘(c²AA'ᵀ + b²), c the weight
  scale (1/√n_in resp. 1), b the bias scale (term only with a bias) — never forming a gradient;
- any other module: per-sample gradients g_μ = vjp_θ(m(a_μ; θ))[B_μ] by ``vmap`` over samples of that
  module alone (O(P·N_m) memory in chunks), Θ_m = G G'ᵀ. (Measured: for convolutions this beat per-sample
  gradients from unfolded patches + bmm in float32 and was within 20% in float64, so it is the one way.)
A module called more than once per forward (weight sharing), or with inputs/outputs that are not one
tensor with the batch in front, makes ``module_signals`` raise ``Unsupported`` (callers fall back to the
full Jacobian path).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

from lightning_phase.nets.linear import NTKLinear


class Unsupported(Exception):
    """The net does not have the structure the module-wise path needs."""


def _owners(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if next(m.parameters(recurse=False), None) is not None]


def module_signals(net: nn.Module, x: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Per parameter-owning module (``net.modules()`` order): (input a (P, ...), B = ∂f/∂output (P, ...))."""
    owners = _owners(net)
    calls: dict[int, list] = {id(m): [] for m in owners}

    def hook(mod, args, out):
        calls[id(mod)].append((args, out))

    handles = [m.register_forward_hook(hook) for m in owners]
    try:
        with torch.enable_grad():
            xin = x.detach().requires_grad_(True)  # the graph reaches every output even for a frozen net
            f = net(xin).reshape(len(x), -1)  # (P, K)
    finally:
        for h in handles:
            h.remove()
    P = len(x)
    for m in owners:
        c = calls[id(m)]
        ok = len(c) == 1 and len(c[0][0]) == 1 and isinstance(c[0][0][0], Tensor)
        ok = ok and isinstance(c[0][1], Tensor) and c[0][1].requires_grad
        if not ok or c[0][0][0].shape[:1] != (P,) or c[0][1].shape[:1] != (P,):
            raise Unsupported(type(m).__name__)
    outs = [calls[id(m)][0][1] for m in owners]
    K = f.shape[1]
    with torch.enable_grad():  # per output k: B_k = ∂f_k/∂(output of m), stacked as (P, K, ...)
        Bk = [torch.autograd.grad(f[:, k].sum(), outs, allow_unused=True, materialize_grads=True,
                                  retain_graph=k + 1 < K) for k in range(K)]
    return [(calls[id(m)][0][0][0].detach(), torch.stack([b[i] for b in Bk], dim=1).detach())
            for i, m in enumerate(owners)]


def _linear_scales(m: nn.Module, a: Tensor) -> tuple[float, float] | None:
    """(c, b) of z = c·a Wᵀ + b·β for the linear modules with a 2-d input, else None."""
    if a.dim() != 2:
        return None
    if isinstance(m, NTKLinear):
        return m.n_in**-0.5, (m.bias_scale if m.bias is not None else 0.0)
    if type(m) is nn.Linear:
        return 1.0, (1.0 if m.bias is not None else 0.0)
    return None


def _per_sample_grads(m: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """(a (c, ...), B (c, K, ...)) ↦ G (c, K·N_m): per-sample gradients of m's own parameters, per output."""
    params = {k: p.detach() for k, p in m.named_parameters(recurse=False)}

    def one(a: Tensor, b: Tensor):
        pull = vjp(lambda p: functional_call(m, p, (a.unsqueeze(0),)), params)[1]
        return pull(b.unsqueeze(0))[0]  # dict name → param-shaped gradient

    batched = vmap(one)

    def rows(a: Tensor, b: Tensor) -> Tensor:
        out = []
        for j in range(b.shape[1]):
            g = batched(a, b[:, j])
            out += [g[k].reshape(len(a), -1) for k in params]
        return torch.cat(out, dim=1)

    return rows


def all_linear(net: nn.Module) -> bool:
    """True when every parameter-owning module is ``NTKLinear`` or ``nn.Linear`` (the fast case)."""
    return all(isinstance(m, NTKLinear) or type(m) is nn.Linear for m in _owners(net))


def ntk_modules(net: nn.Module, x: Tensor, x2: Tensor | None, chunk: int | None) -> Tensor:
    owners = _owners(net)
    s1 = module_signals(net, x)
    s2 = s1 if x2 is None else module_signals(net, x2)
    dtype = next(net.parameters()).dtype
    theta = torch.zeros(len(x), len(s2[0][0]), dtype=dtype, device=x.device)
    others = []
    for m, (a1, b1), (a2, b2) in zip(owners, s1, s2, strict=True):
        scales = _linear_scales(m, a1)
        if scales is None:
            others.append((m, a1, b1, a2, b2))
            continue
        c, bias = scales
        aa = (a1 @ a2.T).mul_(c * c)
        if bias:
            aa += bias * bias
        theta += (b1.flatten(1) @ b2.flatten(1).T).mul_(aa)
    if not others:
        return theta
    grads = [(_per_sample_grads(m), a1, b1, a2, b2) for m, a1, b1, a2, b2 in others]
    n_other = sum(p.numel() for m, *_ in others for p in m.parameters(recurse=False)) * s1[0][1].shape[1]

    def rows1(i: int, j: int) -> Tensor:
        return torch.cat([g(a1[i:j], b1[i:j]) for g, a1, b1, _, _ in grads], dim=1)  # (j−i, N_other)

    def rows2(i: int, j: int) -> Tensor:
        return torch.cat([g(a2[i:j], b2[i:j]) for g, _, _, a2, b2 in grads], dim=1)

    return theta.add_(gram_blocks(rows1, len(x), rows2, theta.shape[1], n_other, chunk, x2 is None, dtype,
                                  x.device))


def gram_blocks(rows1, n1: int, rows2, n2: int, n_cols: int, chunk: int | None, sym: bool, dtype,
                device) -> Tensor:
    """G₁G₂ᵀ (n1, n2) from row blocks rows(i, j) → (j − i, n_cols), ``chunk`` rows at a time (default: blocks
    of ≤ 2²⁴ entries). Column blocks are cached when there are at most 8, else recomputed; with ``sym``
    (rows1 = rows2) only the upper block triangle is computed."""
    if chunk is None:
        chunk = max(1, min(n1, 2**24 // max(n_cols, 1)))
    out = torch.empty(n1, n2, dtype=dtype, device=device)
    starts2 = range(0, n2, chunk)
    cache: dict[int, Tensor] | None = {} if len(starts2) <= 8 else None

    def col(j: int) -> Tensor:
        if cache is not None and j in cache:
            return cache[j]
        g = rows2(j, min(j + chunk, n2))
        if cache is not None:
            cache[j] = g
        return g

    with torch.no_grad():
        for i in range(0, n1, chunk):
            gi = rows1(i, min(i + chunk, n1))  # (c, n_cols)
            for j in starts2:
                if sym and j < i:
                    out[i : i + chunk, j : j + chunk] = out[j : j + chunk, i : i + chunk].T
                    continue
                out[i : i + chunk, j : j + chunk] = gi @ (gi if sym and j == i else col(j)).T
    return out
