"""Hessian of the training loss and its spectrum (SCIENCE.md §4, [JAM]).

L(w) = (1/(α²P)) Σ_μ ℓ(z_μ), z_μ = y_μ F(w, x_μ), F = α(f(w, x) − f₀(x)), w = all parameters of the net.

    H   = ∇²L = H₀ + H_p
    H₀  = (1/(α²P)) Σ_μ ℓ''(z_μ) ∇z_μ ∇z_μᵀ = (1/P) Σ_μ ℓ''(z_μ) ∇f_μ ∇f_μᵀ     (Gauss–Newton part)
    H_p = H − H₀ = (1/(α²P)) Σ_μ ℓ'(z_μ) ∇²z_μ

For the quadratic hinge ℓ = ½(1−z)₊², ℓ'' = θ(Δ) and ℓ' = −Δθ(Δ) with Δ = 1 − z, so
α²H₀ = (1/P)Σ_{Δ>0}∇Δ∇Δᵀ and α²H_p = (1/P)Σ_{Δ>0}Δ∇²Δ: [JAM]'s H₀ and H_p (their loss has no 1/α²; at α = 1
they are identical). For the soft hinge ℓ'' > 0 everywhere (a smooth θ(Δ)); for the plain hinge ℓ'' = 0
almost everywhere, so H₀ = 0.

``hessian`` gives the dense (N, N) matrices for small N (``torch.func.hessian``, exact); ``hessian_spectrum``
gives all eigenvalues by ``eigvalsh`` when N ≤ ``max_dense``, else the extreme eigenvalues by Lanczos
(scipy ``eigsh`` on Hessian-vector products, never forming H) and a density by stochastic Lanczos
quadrature. Everything in the dtype of the net (use float64).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, vmap

LossFn = Callable[[Tensor], Tensor]


class _Problem:
    """L(w), f(w) and ℓ'' as functions of the flat parameter vector w (N,)."""

    def __init__(self, net: nn.Module, x: Tensor, y: Tensor, alpha: float, loss_fn: LossFn,
                 f0: Tensor | None):
        self.names = [k for k, _ in net.named_parameters()]
        params = [p.detach() for _, p in net.named_parameters()]
        self.shapes = [p.shape for p in params]
        self.w = torch.cat([p.reshape(-1) for p in params])  # (N,)
        self.net, self.x, self.y, self.alpha, self.loss_fn = net, x, y, float(alpha), loss_fn
        self.f0 = torch.zeros_like(y) if f0 is None else f0.detach()

    def f(self, w: Tensor) -> Tensor:
        """f(w, x): (N,) → (P,)."""
        chunks = torch.split(w, [int(np.prod(s)) for s in self.shapes])
        params = {k: c.reshape(s) for k, c, s in zip(self.names, chunks, self.shapes, strict=True)}
        return functional_call(self.net, params, (self.x,)).reshape(-1)

    def z(self, w: Tensor) -> Tensor:
        return self.y * self.alpha * (self.f(w) - self.f0)  # z_μ = y_μ F_μ, (P,)

    def loss(self, w: Tensor) -> Tensor:
        return self.loss_fn(self.z(w)).mean() / self.alpha**2  # L(w), scalar

    def ell2(self) -> Tensor:
        """ℓ''(z_μ) at the current w, (P,)."""
        return vmap(grad(grad(self.loss_fn)))(self.z(self.w).detach())


def hessian(net: nn.Module, x: Tensor, y: Tensor, alpha: float, loss_fn: LossFn,
            f0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Dense (H, H₀), each (N, N) with N = number of parameters; H_p = H − H₀ (module docstring).

    x (P, ...), y (P,) ±1, f0 (P,) = f(w₀, x) (None: zeros, i.e. F = αf), ``loss_fn`` elementwise ℓ.
    Memory O(N² + P·N): for small nets only.
    """
    pb = _Problem(net, x, y, alpha, loss_fn, f0)
    H = torch.func.hessian(pb.loss)(pb.w)
    J = jacrev(pb.f)(pb.w)  # (P, N) rows ∇f_μ
    H0 = (J.T * pb.ell2()) @ J / len(y)
    return H, H0


@dataclass
class Spectrum:
    """Eigenvalues of H, H₀, H_p (all of them when ``method == "dense"``; the k lowest and k highest found by
    Lanczos otherwise, sorted) and the (nodes, weights) of a spectral density of H (dense: the eigenvalues
    with weight 1/N; Lanczos: stochastic Lanczos quadrature)."""

    method: str
    n_params: int
    eig_h: np.ndarray
    eig_h0: np.ndarray
    eig_hp: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray

    @property
    def lambda_min(self) -> float:
        return float(self.eig_h[0])

    @property
    def lambda_max(self) -> float:
        return float(self.eig_h[-1])

    def density(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """ρ(λ) = Σ_j w_j N(λ; node_j, σ²) on ``grid``; integrates to ≈ 1."""
        g = np.asarray(grid, float)[:, None]
        gauss = np.exp(-0.5 * ((g - self.nodes[None]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        return gauss @ self.weights


def hessian_spectrum(net: nn.Module, x: Tensor, y: Tensor, alpha: float, loss_fn: LossFn,
                     f0: Tensor | None = None, max_dense: int = 2000, k: int = 10, n_lanczos: int = 80,
                     n_vectors: int = 4, seed: int = 0, maxiter: int = 300) -> Spectrum:
    """Spectrum of H, H₀, H_p (module docstring) of the loss on (x, y).

    N ≤ ``max_dense``: exact ``eigvalsh`` of the dense matrices. Otherwise: the ``k`` lowest and ``k`` highest
    eigenvalues of each by ``eigsh`` on a Hessian-vector-product operator (H v = ∂/∂ε ∇L(w + εv), double
    backward; H₀ v = Jᵀ(ℓ''·Jv)/P), and a density of H from ``n_vectors`` Rademacher probes of ``n_lanczos``
    Lanczos steps each (stochastic Lanczos quadrature), random vectors from a numpy Generator(``seed``).
    ``maxiter``: ARPACK restarts per call (each ~ncv products); what has converged by then is returned.
    """
    pb = _Problem(net, x, y, alpha, loss_fn, f0)
    n = pb.w.numel()
    if n <= max_dense:
        H, H0 = hessian(net, x, y, alpha, loss_fn, f0)
        eh = torch.linalg.eigvalsh(H).cpu().numpy()
        return Spectrum("dense", n, eh, torch.linalg.eigvalsh(H0).cpu().numpy(),
                               torch.linalg.eigvalsh(H - H0).cpu().numpy(), eh, np.full(n, 1.0 / n))
    hvp, h0vp = _products(pb)
    rng = np.random.default_rng(seed)
    ops = {name: _operator(fn, pb.w) for name, fn in
           (("h", hvp), ("h0", h0vp), ("hp", lambda v: hvp(v) - h0vp(v)))}
    kk = min(k, n - 2)
    eig = {}
    for name, op in ops.items():
        v0 = rng.standard_normal(n)
        eig[name] = np.sort(_eigsh(op, kk, "both", v0, maxiter))  # k lowest, k highest (overlap if N < 2k)
    nodes, weights = _slq(ops["h"], n, min(n_lanczos, n), n_vectors, rng)
    return Spectrum("lanczos", n, eig["h"], eig["h0"], eig["hp"], nodes, weights)


def _products(pb: _Problem):
    """v ↦ Hv and v ↦ H₀v on torch vectors (N,), by plain autograd on graphs built once (double backward:
    much less per-call overhead than torch.func's jvp-of-grad). Jv uses the transpose trick: Jᵀu is linear
    in u, so J v = ∂(v·Jᵀu)/∂u."""
    with torch.enable_grad():
        w = pb.w.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(pb.loss(w), w, create_graph=True)  # ∇L(w), graph kept for H v
        f = pb.f(w)  # (P,)
        u = torch.zeros_like(f, requires_grad=True)
        (jtu,) = torch.autograd.grad(f, w, u, create_graph=True)  # Jᵀu, linear in u
    ell2 = pb.ell2()

    def hvp(v: Tensor) -> Tensor:
        with torch.enable_grad():
            return torch.autograd.grad(g, w, v, retain_graph=True)[0]

    def h0vp(v: Tensor) -> Tensor:
        with torch.enable_grad():
            jv = torch.autograd.grad(jtu, u, v, retain_graph=True)[0]  # (P,)
            return torch.autograd.grad(f, w, ell2 * jv, retain_graph=True)[0] / len(pb.y)

    return hvp, h0vp


def _eigsh(op: LinearOperator, k: int, which: str, v0: np.ndarray, maxiter: int) -> np.ndarray:
    """k extreme eigenvalues of a symmetric operator.

    ARPACK's tolerance is relative to |λ|, so eigenvalues in the cluster at 0 (the many soft modes near
    jamming) would never converge as "SA" (measured: > 10 minutes at N = 8256). The lowest ones are taken
    instead as the highest of σI − op with σ = λ_max (absolute accuracy ~ tol·λ_max). Krylov space of
    ≥ max(4k+1, 40) vectors; after ``maxiter`` restarts, keeps the converged ones with a warning.
    """
    n = op.shape[0]
    ncv = min(n, max(4 * k + 1, 40))
    opts = dict(k=k, which="LA", v0=v0, ncv=ncv, tol=1e-8, maxiter=maxiter, return_eigenvectors=False)
    try:
        top = eigsh(op, **opts)
    except ArpackNoConvergence as err:
        warnings.warn(f"eigsh(LA) converged {len(err.eigenvalues)}/{k} eigenvalues", RuntimeWarning)
        top = np.asarray(err.eigenvalues)
    if which == "LA" or len(top) == 0:
        return top
    sigma = float(np.max(top))
    shifted = LinearOperator(op.shape, matvec=lambda v: sigma * np.asarray(v).reshape(-1) - op.matvec(v),
                             dtype=np.float64)
    try:
        mu = eigsh(shifted, **opts)
    except ArpackNoConvergence as err:
        warnings.warn(f"eigsh(SA) converged {len(err.eigenvalues)}/{k} eigenvalues", RuntimeWarning)
        mu = np.asarray(err.eigenvalues)
    return np.concatenate([sigma - mu, top])


def _operator(fn, w: Tensor) -> LinearOperator:
    n = w.numel()

    def mv(v: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(np.asarray(v).reshape(-1), dtype=w.dtype, device=w.device)
        with torch.no_grad():
            return fn(t).cpu().numpy()

    return LinearOperator((n, n), matvec=mv, dtype=np.float64)


def _slq(op: LinearOperator, n: int, m: int, n_vectors: int, rng: np.random.Generator):
    """Stochastic Lanczos quadrature: Ritz values and weights τ_j²/n_vectors from m-step Lanczos runs with
    full reorthogonalisation, started at normalised Rademacher vectors. Returns (nodes, weights)."""
    nodes, weights = [], []
    for _ in range(n_vectors):
        q = rng.choice([-1.0, 1.0], n) / np.sqrt(n)
        Q = np.zeros((m, n))
        a, b = np.zeros(m), np.zeros(m)
        steps = m
        for j in range(m):
            Q[j] = q
            r = op.matvec(q)
            a[j] = q @ r
            r -= Q[: j + 1].T @ (Q[: j + 1] @ r)  # full reorthogonalisation (twice is enough)
            r -= Q[: j + 1].T @ (Q[: j + 1] @ r)
            b[j] = np.linalg.norm(r)
            if b[j] < 1e-12 or j == m - 1:
                steps = j + 1
                break
            q = r / b[j]
        T = np.diag(a[:steps]) + np.diag(b[: steps - 1], 1) + np.diag(b[: steps - 1], -1)
        theta, U = np.linalg.eigh(T)
        nodes.append(theta)
        weights.append(U[0] ** 2 / n_vectors)
    return np.concatenate(nodes), np.concatenate(weights)
