"""Maximum-entropy diffeomorphisms of images and relative stability R_f = D_f / G_f ([DIFF] 2105.02468;
BEYOND.md §B).

Example (float64, 8×8 images)::

    x = torch.rand(100, 1, 8, 8, dtype=torch.float64)               # (P, C, H, W)
    g = torch.Generator().manual_seed(0)
    T = temperature_for_displacement(1.0, n=8, cutoff=3)             # δ = 1 pixel
    tau = sample_displacement(100, (8, 8), T, 3, generator=g)        # (P, 2, H, W) in pixels
    x_def = apply_displacement(x, tau)                                # (τx)(s) = x(s − τ(s)), bilinear
    eta = matched_noise(x, x_def, generator=g)                        # ‖η‖ = ‖τx − x‖ per image
    relative_stability(net, x, T, 3, n_samples=10)                    # Stability(D, G, R, errors)

Displacement field (per image, independently): τ_u(u, v) = n_u √T Σ_{ij} C_ij sin(iπu) sin(jπv) and
τ_v likewise with D_ij, u, v ∈ [0, 1] spanning the image from the first to the last pixel, so τ = 0 on the
border; C_ij, D_ij ~ N(0, 1/(i² + j²)) for 1 ≤ i, j and √(i² + j²) < c + ½ (cut-off c), zero otherwise
(BEYOND.md §B.1, [B-diffeo] ``diff.py``). Multiplying by the side n turns the field into pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_phase.observables._stats import bootstrap

__all__ = [
    "Stability",
    "apply_displacement",
    "displacement_variance",
    "matched_noise",
    "relative_stability",
    "sample_displacement",
    "stabilities",
    "temperature_for_displacement",
    "temperature_range",
]


def _modes(cutoff: int, dtype: torch.dtype, device=None) -> Tensor:
    """1/√(i² + j²) for admitted modes (√(i²+j²) < c + ½), 0 otherwise; (c, c), index [i−1, j−1]."""
    k = torch.arange(1, cutoff + 1, dtype=dtype, device=device)
    r = (k[:, None] ** 2 + k[None, :] ** 2).sqrt()
    return torch.where(r < cutoff + 0.5, 1.0 / r, torch.zeros_like(r))


def _sines(n: int, cutoff: int, dtype: torch.dtype, device=None) -> Tensor:
    """sin(iπ u_x) at the n pixel positions u_x = x/(n − 1); (n, c)."""
    u = torch.linspace(0, 1, n, dtype=dtype, device=device)
    k = torch.arange(1, cutoff + 1, dtype=dtype, device=device)
    return torch.sin(math.pi * u[:, None] * k[None, :])


def sample_displacement(batch: int, size: tuple[int, int], temperature: float, cutoff: int,
                        generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                        device=None) -> Tensor:
    """τ (batch, 2, H, W) in pixels: channel 0 the horizontal (width) component, 1 the vertical one.

    τ[b, 0, y, x] = W √T Σ_ij C_bij sin(iπ x/(W−1)) sin(jπ y/(H−1)), channel 1 with H and D_bij; coefficients
    drawn on CPU from ``generator`` (reproducible on any device). T = 0 gives τ = 0.
    """
    if temperature < 0 or cutoff < 1:
        raise ValueError(f"temperature >= 0 and cutoff >= 1 expected; got {temperature}, {cutoff}")
    H, W = size
    coef = torch.randn(batch, 2, cutoff, cutoff, generator=generator, dtype=torch.float64)
    coef = (coef * _modes(cutoff, torch.float64)).to(dtype=dtype, device=device)  # (B, 2, c, c) index [i, j]
    sx, sy = _sines(W, cutoff, dtype, device), _sines(H, cutoff, dtype, device)  # (W, c), (H, c)
    tau = torch.einsum("bkij,xi,yj->bkyx", coef, sx, sy)  # (B, 2, H, W); i along x (u), j along y (v)
    scale = torch.tensor([W, H], dtype=dtype, device=device).view(1, 2, 1, 1)
    return tau * scale * math.sqrt(temperature)


def displacement_variance(size: tuple[int, int], temperature: float, cutoff: int) -> Tensor:
    """Exact E[τ_x² + τ_y²] per pixel (H, W) float64, in pixels²: T Σ_ij sin²(iπu) sin²(jπv)/(i²+j²)·(W² + H²)."""
    H, W = size
    m2 = _modes(cutoff, torch.float64) ** 2  # (c, c)
    sx, sy = _sines(W, cutoff, torch.float64), _sines(H, cutoff, torch.float64)
    per = torch.einsum("ij,xi,yj->yx", m2, sx**2, sy**2)  # (H, W)
    return temperature * per * (W**2 + H**2)


def temperature_for_displacement(delta: float, n: int, cutoff: int) -> float:
    """T(δ) = 4δ²/(π n² ln c): the temperature of a typical displacement δ pixels ([B-layer]); c ≥ 2.
    The ln c formula is asymptotic: at c = 3 the exact rms is ≈ 0.84 δ averaged over the image."""
    return 4 * delta**2 / (math.pi * n**2 * math.log(cutoff))


def temperature_range(n: int, cutoff: int) -> tuple[float, float]:
    """(T_min, T_max) = (1/(π n² ln c), 4/(π³ c² ln c)): δ = ½ pixel, and the largest T without folds."""
    return 1 / (math.pi * n**2 * math.log(cutoff)), 4 / (math.pi**3 * cutoff**2 * math.log(cutoff))


Interp = Literal["linear", "nearest"]


def apply_displacement(x: Tensor, tau: Tensor, interp: Interp = "linear") -> Tensor:
    """(τx)(p) = x(p − τ(p)): each pixel p = (x, y) takes the image value at (x − τ_x, y − τ_y), clamped to
    [0, W−1] × [0, H−1], by bilinear (``linear``) or nearest-pixel interpolation. x (B, C, H, W), τ (B, 2, H, W)
    in pixels → (B, C, H, W). Differentiable in x; works on any device (one ``grid_sample``)."""
    B, _, H, W = x.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=x.dtype, device=x.device),
                            torch.arange(W, dtype=x.dtype, device=x.device), indexing="ij")
    px = (xs - tau[:, 0]).clamp(0, W - 1)  # (B, H, W) source column
    py = (ys - tau[:, 1]).clamp(0, H - 1)
    grid = torch.stack([2 * px / max(W - 1, 1) - 1, 2 * py / max(H - 1, 1) - 1], dim=-1)  # (B, H, W, 2)
    mode = "bilinear" if interp == "linear" else "nearest"
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=True)


def matched_noise(x: Tensor, x_deformed: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """η = ‖τx − x‖ · g/‖g‖ per sample, g ~ N(0, I) over all pixels and channels; same shape as x.
    Drawn on CPU from ``generator``. A zero deformation gives η = 0."""
    g = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype=x.dtype, device=x.device)
    norm_d = (x_deformed - x).flatten(1).norm(dim=1)  # (B,)
    norm_g = g.flatten(1).norm(dim=1)
    return g * (norm_d / norm_g).view(-1, *([1] * (x.dim() - 1)))


# ---- the three stabilities ---------------------------------------------------------------------------
Agg = Literal["mean", "median"]


@dataclass(frozen=True)
class Stability:
    """D_f, G_f, R_f = D_f/G_f with bootstrap standard errors (resampling images); n = images × samples.
    R is nan when f does not move at all (D = G = 0)."""

    D: float
    G: float
    R: float
    D_err: float
    G_err: float
    R_err: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def _agg(v: np.ndarray, agg: Agg, axis=None):
    return np.median(v, axis=axis) if agg == "median" else np.mean(v, axis=axis)


def stabilities(f_x: Tensor, f_tau: Tensor, f_eta: Tensor, agg: Agg = "mean", n_boot: int = 200,
                seed: int = 0) -> Stability:
    """D_f = ⟨‖f(τx) − f(x)‖²⟩ / ⟨‖f(x) − f(z)‖²⟩, G_f likewise with f(x + η), R_f = D_f / G_f.

    f_x (P, K) or (P,): outputs on the clean images; f_tau, f_eta (S, P, K) or (S, P): on S deformations
    and S matched-noise copies of every image. The numerators average over the P·S pairs (``mean``), or
    (``median``, the 2021 analysis) take the median over the pairs of each output's squared change and sum
    over outputs; the denominator averages ‖f(x_μ) − f(x_ν)‖² over all P² ordered pairs, diagonal included
    (median: the median of those P² distances). Standard errors: bootstrap over images (``n_boot``).
    """
    fx = f_x.detach().to(torch.float64).reshape(f_x.shape[0], -1).cpu().numpy()  # (P, K)
    S, P = f_tau.shape[0], f_tau.shape[1]
    dt = (f_tau.detach().to(torch.float64).cpu().numpy().reshape(S, P, -1) - fx) ** 2  # (S, P, K)
    de = (f_eta.detach().to(torch.float64).cpu().numpy().reshape(S, P, -1) - fx) ** 2

    def one(idx: np.ndarray) -> tuple[float, float, float]:
        a, b, f = dt[:, idx], de[:, idx], fx[idx]
        if agg == "median":
            num_d = float(np.median(a.reshape(-1, a.shape[-1]), axis=0).sum())
            num_g = float(np.median(b.reshape(-1, b.shape[-1]), axis=0).sum())
            pair = ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)
            den = float(np.median(pair))
        else:
            num_d, num_g = float(a.sum(-1).mean()), float(b.sum(-1).mean())
            den = float(2 * f.var(axis=0).sum())  # mean over P² pairs of ‖f_μ − f_ν‖² = 2 Σ_k Var_k
        if den <= 0:
            return 0.0, 0.0, math.nan
        D, G = num_d / den, num_g / den
        return D, G, (D / G if G > 0 else math.nan)

    D, G, R = one(np.arange(P))
    rng = np.random.default_rng(seed)
    boots = bootstrap(one, P, n_boot, rng) if n_boot > 1 else np.full((1, 3), np.nan)
    with np.errstate(invalid="ignore"):
        err = np.nanstd(boots, axis=0, ddof=1) if np.isfinite(boots).sum(0).min() > 1 else np.full(3, math.nan)
    return Stability(D, G, R, float(err[0]), float(err[1]), float(err[2]), S * P)


@torch.no_grad()
def relative_stability(net: Callable[[Tensor], Tensor], x: Tensor, temperature: float, cutoff: int = 3,
                       n_samples: int = 1, interp: Interp = "linear", agg: Agg = "mean", seed: int = 0,
                       image_shape: tuple[int, int, int] | None = None, n_boot: int = 200) -> Stability:
    """D_f, G_f, R_f of ``net`` on images x (P, C, H, W) — or flat (P, D) with ``image_shape`` (C, H, W) — for
    ``n_samples`` deformations (temperature T, cut-off c) and as many matched-noise copies per image.

    The net is called on (P, ...) batches of the same layout as x, in its current mode (call ``eval()``
    first for dropout/BatchNorm nets); its output (P,) or (P, K) is f. Deformations and noise come from
    generators seeded by ``seed``: two nets measured with the same seed see the same τx and x + η.
    Cost: (1 + 2·n_samples) forward passes of P images.
    """
    flat = x.dim() == 2
    if flat:
        if image_shape is None:
            raise ValueError("image_shape: needed (C, H, W) for flat inputs (P, D)")
        imgs = x.reshape(len(x), *image_shape)
    else:
        imgs = x
    g = torch.Generator().manual_seed(int(seed))

    def call(batch: Tensor) -> Tensor:
        return net(batch.reshape(len(batch), -1) if flat else batch)

    f_x = call(imgs)
    f_tau, f_eta = [], []
    for _ in range(n_samples):
        hw = (int(imgs.shape[-2]), int(imgs.shape[-1]))
        tau = sample_displacement(len(imgs), hw, temperature, cutoff, g, imgs.dtype, imgs.device)
        x_def = apply_displacement(imgs, tau, interp)
        f_tau.append(call(x_def))
        f_eta.append(call(imgs + matched_noise(imgs, x_def, g)))
    return stabilities(f_x, torch.stack(f_tau), torch.stack(f_eta), agg, n_boot=n_boot, seed=seed)
