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
        if a is not None and u is not None and len(values):
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
    """Hessian spectrum in two panels that show the bulk and the outliers over all their decades.

    Left: how many eigenvalues fall in log-spaced bins of |λ| (λ > 0 and λ < 0 apart), from 1e-12·max|λ| up;
    the count of |λ| below that floor (numerically zero modes) is written in the legend. Right: |λ| against
    rank (largest first) on a log axis: the outliers stand apart at the top, the near-zero modes at the
    bottom. Dense: the N eigenvalues; Lanczos: the SLQ nodes weighted by N·w (an estimate of counts)."""
    nodes = np.asarray(spec.nodes, float)
    counts = np.asarray(spec.weights, float) * spec.n_params  # dense: 1 per eigenvalue
    scale = float(np.abs(nodes).max()) if len(nodes) else 1.0
    scale = scale if scale > 0 else 1.0
    floor = 1e-12 * scale
    pos, neg = nodes > floor, nodes < -floor
    n_zero = float(counts[~(pos | neg)].sum())
    fig = Figure(figsize=(9, 3.8))
    ax, ax_rank = fig.subplots(1, 2)
    bins = np.geomspace(floor, 1.5 * scale, 49)
    ax.hist(nodes[pos], bins=bins, weights=counts[pos], color="C0", alpha=0.7, label=f"λ > 0: {counts[pos].sum():.0f}")
    if neg.any():
        ax.hist(-nodes[neg], bins=bins, weights=counts[neg], histtype="step", lw=1.5, color="C3",
                label=f"λ < 0: {counts[neg].sum():.0f}")
    ax.plot([], [], " ", label=f"|λ| < 1e-12·max: {n_zero:.0f}")
    ax.set_xscale("log")
    ax.set_xlabel("|λ|")
    ax.set_ylabel("eigenvalues per bin" if spec.method == "dense" else "≈ eigenvalues per bin (SLQ)")
    ax.legend(fontsize=8, loc="upper left")
    order = np.argsort(-np.abs(nodes))
    mags = np.maximum(np.abs(nodes[order]), floor)
    rank = np.arange(1, len(nodes) + 1)
    sign_pos = nodes[order] >= 0
    ax_rank.semilogy(rank[sign_pos], mags[sign_pos], ".", ms=3, color="C0", label="λ ≥ 0")
    if (~sign_pos).any():
        ax_rank.semilogy(rank[~sign_pos], mags[~sign_pos], ".", ms=4, color="C3", label="λ < 0")
    ax_rank.set_ylim(floor / 2, 2 * scale)
    ax_rank.set_xlabel("rank (largest |λ| first)" if spec.method == "dense" else "SLQ node (by |λ|)")
    ax_rank.set_ylabel("|λ|")
    ax_rank.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"Hessian spectrum ({spec.method}, N = {spec.n_params}): λ_min = {spec.lambda_min:.3g}, "
                 f"λ_max = {spec.lambda_max:.3g}", fontsize=10)
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
