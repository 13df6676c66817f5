"""Figures for TensorBoard (display only; no physics). Object-oriented matplotlib: no pyplot state."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from lightning_phase.observables import Spectrum, TailFit, log_histogram


def tails_figure(delta: np.ndarray, fit: TailFit) -> Figure:
    """Log–log densities of Δ>0 and −Δ (Δ<0) on log-spaced bins (1e-9…1e4), each normalised by P, with the
    fitted laws (k/P)(a+1)v^a/u^{a+1} on (0, u): a = θ resp. −γ, u the cutoff, k the values used."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for values, a, k, u, label, color in (
        (delta[delta > 0], fit.theta, fit.k_pos, fit.cut_pos, "Δ > 0", "C0"),
        (-delta[delta < 0], None if fit.gamma is None else -fit.gamma, fit.k_neg, fit.cut_neg, "−Δ (Δ < 0)",
         "C1"),
    ):
        centres, dens = log_histogram(values, n_total=len(delta))
        ok = dens > 0
        ax.loglog(centres[ok], dens[ok], "o", ms=3, color=color, label=label)
        if a is not None and len(values):
            v = np.geomspace(values.min(), u, 50)
            ax.loglog(v, (k / len(delta)) * (a + 1) * v**a / u ** (a + 1), "-", color=color,
                      label=f"fit: exponent {a:+.2f}")
    ax.set_xlabel("|Δ|")
    ax.set_ylabel("density")
    ax.set_title(_fmt("θ", fit.theta, fit.theta_err) + ",  " + _fmt("γ", fit.gamma, fit.gamma_err))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def spectrum_figure(spec: Spectrum) -> Figure:
    """Spectral density of H (broadened eigenvalues or SLQ) on a symlog x axis; H₀ and H_p too when dense."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    lo, hi = spec.lambda_min, spec.lambda_max
    width = max(hi - lo, 1e-12)
    grid = np.linspace(lo - 0.05 * width, hi + 0.05 * width, 800)
    ax.plot(grid, spec.density(grid, sigma=0.01 * width), color="C0", label="H")
    if spec.method == "dense":
        for eig, name, color in ((spec.eig_h0, "H₀", "C1"), (spec.eig_hp, "H_p", "C2")):
            w = np.full(len(eig), 1 / len(eig))
            dens = Spectrum("dense", spec.n_params, eig, eig, eig, eig, w)
            ax.plot(grid, dens.density(grid, sigma=0.01 * width), color=color, label=name)
    ax.set_xscale("symlog", linthresh=max(1e-6, 1e-3 * max(abs(lo), abs(hi))))
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-3 / width)
    ax.set_xlabel("λ")
    ax.set_ylabel("ρ(λ)")
    ax.set_title(f"Hessian spectrum ({spec.method}, N = {spec.n_params}): λ ∈ [{lo:.2e}, {hi:.2e}]")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fmt(name: str, value: float | None, err: float | None) -> str:
    if value is None:
        return f"{name} = n/a"
    return f"{name} = {value:.3f} ± {err:.3f}" if err is not None else f"{name} = {value:.3f}"


def load_curve_figure(history: list[tuple[int, list[float]]]) -> Figure:
    """log D_ℓ against layer ℓ ([SB] load curves), one line per measured step, coloured from early to late."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"]
    n = len(history)
    for i, (step, log_d) in enumerate(history):
        ax.plot(range(len(log_d)), log_d, "o-", ms=3, color=cmap(i / max(n - 1, 1)),
                label=f"step {step}" if i in (0, n - 1) else None)
    ax.set_xlabel("layer ℓ (0 = input)")
    ax.set_ylabel("log D_ℓ = log Tr(Σ_w Σ_b⁺)")
    ax.set_title("load curve")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
