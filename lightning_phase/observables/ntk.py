"""Empirical neural tangent kernel Θ(x, x') = ∇_w f(x)·∇_w f(x') (SCIENCE.md §4), and its change.

Example (float64, FC net, P = 100 points)::

    net = FullyConnected(width=64, depth=2, input_dim=10, seed=0).double()
    theta0 = ntk(net, x)                      # (100, 100) Gram matrix, layer-wise exact path
    theta_xt = ntk(net, x, x_test)            # (100, P_test) cross kernel
    kernel_change(theta0, ntk(net_t, x))      # ‖Θ_t − Θ₀‖_F / ‖Θ₀‖_F

Three implementations behind ``ntk``. ``method="auto"``: layerwise for `FullyConnected`; modules when every
parameter-owning module is linear (one forward + one backward + small GEMMs); else jacobian — measured
faster than "modules" for CNNs, whose per-sample conv gradients cost about what vmap(jacrev) does
(benchmarks/ntk.py):

- ``"layerwise"`` — `FullyConnected` only. Θ = Σ_ℓ (B_ℓB'_ℓᵀ) ∘ (A_ℓA'_ℓᵀ + b²), A_ℓ = layer input/√n_in
  (P, n_in), B_ℓ = ∂f/∂z_ℓ at the layer's pre-activation (P, n_out), b the bias scale (term only when the
  layer has a bias). All B_ℓ come from ONE ``autograd.grad(f.sum(), [z_1..z_{L+1}])`` (the samples are
  independent, so the gradient of the sum is the per-sample gradient). Cost O(P²·Σ_ℓ(n_in+n_out)) in
  GEMMs; the P×N Jacobian is never formed. Exact (same floating-point sums as J·Jᵀ up to rounding).
- ``"modules"`` — any ``nn.Module`` whose parameter-owning submodules are each called once on a batch
  tensor (``_ntk_modules``): the same structure module by module — linear modules by the layer-wise formula,
  others (convolutions, a bare readout parameter, ...) by per-sample gradients of that module alone (vmap
  of its vjp) and Θ_m = G_m G_mᵀ. One forward and one backward for the whole net; O(P²·N_other) GEMMs.
- ``"jacobian"`` — any ``nn.Module`` mapping (P, ...) → (P,): per-sample Jacobian rows by
  ``vmap(jacrev(functional_call))`` on chunks of ``chunk`` samples, Θ accumulated block by block as
  J_i J_jᵀ. Memory O(chunk·N) per block (plus the P×P result); cost O(P²·N), the J·Jᵀ product.

K outputs (a net returning (P, K)): Θ is the trace over outputs, Θ_{μν} = Σ_k ∇_w f_k(x_μ)·∇_w f_k(x_ν), in
every path (the per-output signals are stacked along the feature axis); ``output=k`` takes the NTK of f_k
alone (through the generic paths).

``ntk_loop`` is the brute-force reference (one autograd backward per sample, then J·Jᵀ — the approach of
the original authors' code); tests and ``benchmarks/ntk.py`` compare both paths against it.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from lightning_phase.nets.fc import FullyConnected
from lightning_phase.observables._ntk_modules import Unsupported, all_linear, gram_blocks, ntk_modules

Method = Literal["auto", "layerwise", "modules", "jacobian"]
NTK_METHODS: tuple[str, ...] = get_args(Method)


class _OneOutput(nn.Module):
    """f_k of a net with K outputs: (P, ...) → (P,)."""

    def __init__(self, net: nn.Module, k: int):
        super().__init__()
        self.net, self.k = net, k

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[:, self.k]


def ntk(net: nn.Module, x: Tensor, x2: Tensor | None = None, method: Method = "auto",
        chunk: int | None = None, output: int | None = None) -> Tensor:
    """Empirical NTK of f (no α): Θ_{μν} = Σ_p ∂f(x_μ)/∂w_p · ∂f(x2_ν)/∂w_p over all parameters of the net.

    For K outputs the trace Σ_k over outputs (default), or the NTK of output ``output`` alone.

    ``requires_grad`` is ignored, so the frozen initial net (``PhaseModule.net0``) gives Θ₀ directly.

    x: (P, ...), x2: (P', ...) or None (then x2 = x and Θ is symmetric) → Θ: (P, P'), the dtype of the net.
    ``chunk``: samples per block of Jacobian rows ("jacobian") or of per-sample gradients of the non-linear
    modules ("modules"); default: as many as keep a block at ≤ 2²⁴ entries (128 MB in float64).
    Gradients are not tracked through the result.
    """
    if output is not None:
        net = _OneOutput(net, int(output))
    if method == "auto":
        if isinstance(net, FullyConnected):
            method = "layerwise"
        elif all_linear(net):
            try:
                return ntk_modules(net, x, x2, chunk)
            except Unsupported:  # e.g. a Linear used twice (shared weights)
                method = "jacobian"
        else:
            method = "jacobian"
    if method == "layerwise":
        if not isinstance(net, FullyConnected):
            raise TypeError(f"method='layerwise' needs a FullyConnected net, got {type(net).__name__}")
        return _ntk_fc(net, x, x2)
    if method == "modules":
        return ntk_modules(net, x, x2, chunk)
    if method == "jacobian":
        return _ntk_jacobian(net, x, x2, chunk)
    raise ValueError(f"method: got {method!r}; expected one of {', '.join(map(repr, NTK_METHODS))}")


# ---- layer-wise exact path for FullyConnected -------------------------------------------------------
def _fc_signals(net: FullyConnected, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """A_ℓ = (layer input)/√n_in (P, n_in) and B_ℓ = ∂f/∂z_ℓ (P, n_out) for every layer ℓ of the net."""
    with torch.enable_grad():
        a = x.flatten(1).detach().requires_grad_(True)  # (P, d); the graph reaches Z even for a frozen net
        A, Z = [], []
        layers = net.linear_layers()
        for i, layer in enumerate(layers):
            A.append(a.detach() / layer.n_in**0.5)  # ∂z_ℓ/∂W_ℓ = a/√n_in
            z = layer(a)  # (P, n_out)
            Z.append(z)
            a = net.act(z) if i < len(layers) - 1 else z
        f = a  # (P, K)
        # per-sample ∂f_k/∂z_ℓ (samples do not interact), outputs stacked on the feature axis: (P, K·n_out)
        Bk = [torch.autograd.grad(f[:, k].sum(), Z, retain_graph=k + 1 < f.shape[1]) for k in range(f.shape[1])]
    return A, [torch.cat([b[ell] for b in Bk], dim=1).detach() for ell in range(len(Z))]


def _fc_gram(net: FullyConnected, A1, B1, A2, B2) -> Tensor:
    """Σ_ℓ (B_ℓB'_ℓᵀ)∘(A_ℓA'_ℓᵀ + b_ℓ²) for one block of rows (A1, B1) and columns (A2, B2)."""
    theta = None
    for layer, a1, b1, a2, b2 in zip(net.linear_layers(), A1, B1, A2, B2, strict=True):
        aa = a1 @ a2.T  # (P, P') weight part: (BBᵀ)∘(AAᵀ)
        if layer.bias is not None:
            aa += layer.bias_scale**2  # bias part: b²·BBᵀ
        term = (b1 @ b2.T).mul_(aa)
        theta = term if theta is None else theta.add_(term)
    assert theta is not None  # a FullyConnected net has at least two layers
    return theta


def _ntk_fc(net: FullyConnected, x: Tensor, x2: Tensor | None, block: int = 256) -> Tensor:
    A1, B1 = _fc_signals(net, x)
    if x2 is not None:
        return _fc_gram(net, A1, B1, *_fc_signals(net, x2))
    # Symmetric: compute the blocks on and above the diagonal only (≈ half the GEMM flops for large P).
    P = len(x)
    theta = torch.empty(P, P, dtype=A1[0].dtype, device=x.device)
    starts = range(0, P, block)
    for i in starts:
        rows = ([a[i : i + block] for a in A1], [b[i : i + block] for b in B1])
        for j in starts:
            if j < i:
                theta[i : i + block, j : j + block] = theta[j : j + block, i : i + block].T
            else:
                cols = ([a[j : j + block] for a in A1], [b[j : j + block] for b in B1])
                theta[i : i + block, j : j + block] = _fc_gram(net, *rows, *cols)
    return theta


# ---- generic path: chunked per-sample Jacobians -----------------------------------------------------
def _jacobian_fn(net: nn.Module):
    """Returns jac(xc) → J (c, K·N): rows ∂f_k(x_μ)/∂w for the chunk xc (c, ...), params flattened in order,
    the K outputs side by side (so J Jᵀ is the trace over outputs)."""
    params = {k: v.detach() for k, v in net.named_parameters()}

    def f_single(p, xi):  # xi (...) → f(xi) (K,)
        return functional_call(net, p, (xi.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f_single), in_dims=(None, 0))

    def rows(xc: Tensor) -> Tensor:
        J = jac(params, xc)  # dict name → (c, K, *param.shape)
        return torch.cat([J[k].reshape(xc.shape[0], J[k].shape[1], -1) for k in params], dim=2).flatten(1)

    return rows, sum(p.numel() for p in params.values())


def _ntk_jacobian(net: nn.Module, x: Tensor, x2: Tensor | None, chunk: int | None) -> Tensor:
    rows, n_params = _jacobian_fn(net)
    with torch.no_grad():
        n_params *= net(x[:1]).reshape(-1).numel()  # K·N columns
    xb = x if x2 is None else x2
    return gram_blocks(lambda i, j: rows(x[i:j]), len(x), lambda i, j: rows(xb[i:j]), len(xb), n_params,
                       chunk, x2 is None, next(net.parameters()).dtype, x.device)


# ---- the diagonal Θ(x_μ, x_μ) = ‖∇_w f(x_μ)‖² ----------------------------------------------------------
def ntk_diagonal(net: nn.Module, x: Tensor, chunk: int | None = None) -> Tensor:
    """Θ(x_μ, x_μ) = ‖∇_w f(x_μ)‖² for every sample: x (P, ...) → (P,), the dtype of the net, no P×P matrix.

    FullyConnected: Σ_ℓ ‖B_ℓ,μ‖² (‖A_ℓ,μ‖² + b_ℓ²) from the layer-wise signals, O(P·N). Any other module:
    squared norms of the per-sample Jacobian rows (``chunk`` samples at a time, as in ``ntk``).
    Exactly 0 for a point whose every path to the output is off (a dead point of a ReLU net).
    """
    if isinstance(net, FullyConnected):
        A, B = _fc_signals(net, x)
        diag = torch.zeros(len(x), dtype=A[0].dtype, device=x.device)
        for layer, a, b in zip(net.linear_layers(), A, B, strict=True):
            aa = a.pow(2).sum(1)  # (P,)
            if layer.bias is not None:
                aa = aa + layer.bias_scale**2
            diag += b.pow(2).sum(1) * aa
        return diag
    rows, n_params = _jacobian_fn(net)
    if chunk is None:
        chunk = max(1, min(len(x), 2**24 // max(n_params, 1)))
    with torch.no_grad():
        return torch.cat([rows(x[i : i + chunk]).pow(2).sum(1) for i in range(0, len(x), chunk)])


# ---- brute-force reference ----------------------------------------------------------------------------
def ntk_loop(net: nn.Module, x: Tensor, x2: Tensor | None = None) -> Tensor:
    """Θ = J Jᵀ with J built row by row: one ``autograd.grad`` of f(x_μ) per sample μ (the reference code's
    approach). Slow — O(P·K) backward passes and a P×KN Jacobian in memory; for tests and benchmarks.
    K outputs: the trace over outputs (row μ holds ∂f_1/∂w, …, ∂f_K/∂w side by side)."""
    params = list(net.parameters())  # must require grad here

    def jac(xs: Tensor) -> Tensor:
        out = []
        for xi in xs:
            row = []
            with torch.enable_grad():
                fi = net(xi.unsqueeze(0)).reshape(-1)  # (K,)
                for k in range(len(fi)):
                    g = torch.autograd.grad(fi[k], params, allow_unused=True, retain_graph=True)
                    row += [(gi if gi is not None else torch.zeros_like(p)).reshape(-1)
                            for gi, p in zip(g, params, strict=True)]
            out.append(torch.cat(row))
        return torch.stack(out)  # (P, K·N)

    J1 = jac(x)
    J2 = J1 if x2 is None else jac(x2)
    return J1 @ J2.T


# ---- derived quantities -----------------------------------------------------------------------------
def kernel_change(k0: Tensor, kt: Tensor) -> float:
    """‖Θ_t − Θ₀‖_F / ‖Θ₀‖_F (SCIENCE.md §4); k0, kt of the same shape (P, P'). α-free."""
    return float(torch.linalg.matrix_norm(kt - k0) / torch.linalg.matrix_norm(k0))


def kernel_stats(theta: Tensor) -> dict[str, float]:
    """norm = ‖Θ‖_F, trace = Tr Θ, top_eig = λ_max(Θ) of a symmetric (P, P) kernel."""
    return {
        "norm": float(torch.linalg.matrix_norm(theta)),
        "trace": float(theta.diagonal().sum()),
        "top_eig": float(torch.linalg.eigvalsh(theta)[-1]),
    }
