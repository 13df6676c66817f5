"""Figures of a study, as matplotlib Figures (saved as PNG and SVG by :func:`save`). Headless (Agg).

Every figure has a title, labelled axes with their units and scales, and says which α each axis shows:
α̃ = √h·α (the crossover sits at α̃ = O(1)) or the article's α. Inputs are the DataFrames of
:mod:`.tables` with the summary fields ``width``, ``alpha_tilde``, ``alpha``, ``test_error``, ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lightning_phase.analysis.stats import PowerLawFit  # noqa: E402

FIGSIZE = (6.4, 4.8)
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_of_ten(value: float, _pos=None) -> str:
    """Log-axis tick label 10ⁿ in plain Unicode (matplotlib's default parses mathtext, ~10× slower)."""
    if value <= 0:
        return ""
    n = math.log10(value)
    return "10" + str(round(n)).translate(_SUPERSCRIPT) if abs(n - round(n)) < 1e-9 else ""


def _figure(ncols: int = 1, size: tuple[float, float] = FIGSIZE, sharey: bool = False):
    """A figure with fixed margins (no layout engine: constrained layout tripled the drawing time)."""
    fig, axes = plt.subplots(1, ncols, figsize=size, sharey=sharey)
    fig.subplots_adjust(left=0.12 / ncols**0.5, right=0.97, bottom=0.12, top=0.9, wspace=0.12)
    return fig, axes


def _log(ax, x: bool = True, y: bool = True) -> None:
    """Log scales with plain-Unicode 10ⁿ labels on the chosen axes, no minor ticks (they were half the
    drawing time)."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    for on, axis, set_scale in ((x, ax.xaxis, ax.set_xscale), (y, ax.yaxis, ax.set_yscale)):
        if on:
            set_scale("log")
            axis.set_major_formatter(FuncFormatter(_power_of_ten))
            axis.set_minor_locator(NullLocator())


def _label(ax, xlabel: str, ylabel: str, title: str, logy: bool = True) -> None:
    """Log x (and y unless ``logy=False``) axes, the axis labels, the title and a small legend."""
    _log(ax, y=logy)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """``out_dir/name.png`` (150 dpi) and ``out_dir/name.svg``; closes the figure."""
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def _edges(v: np.ndarray) -> np.ndarray:
    """Cell edges around sorted positive centres on a log axis (geometric midpoints)."""
    v = np.asarray(v, dtype=np.float64)
    if v.size == 1:
        return np.array([v[0] / 2, v[0] * 2])
    mid = np.sqrt(v[1:] * v[:-1])
    return np.concatenate([[v[0] ** 2 / mid[0]], mid, [v[-1] ** 2 / mid[-1]]])


def phase_diagram(cells: pd.DataFrame, crossover: pd.DataFrame | None = None,
                  jamming: pd.DataFrame | None = None, value: str = "mean") -> Figure:
    """[PD]'s figure: mean test error (colour) over width h (x, log) and α̃ (y, log), with the crossover
    line α̃*(h) (points with their grid brackets) and the jamming line (between the widest unfitted and the
    narrowest fitted width at each α̃).

    cells: columns width, alpha_tilde, ``value``; crossover: crossover_line; jamming: jamming_line."""
    fig, ax = _figure(size=(7.2, 4.8))
    hs = np.sort(cells["width"].unique())
    als = np.sort(cells["alpha_tilde"].unique())
    grid = cells.pivot_table(index="alpha_tilde", columns="width", values=value).reindex(index=als, columns=hs)
    mesh = ax.pcolormesh(_edges(hs), _edges(als), grid.to_numpy(), cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax, label="test error (fraction, mean over seeds)")
    if jamming is not None and len(jamming):
        j = jamming.dropna(subset=["width_star"])
        ax.plot(j["width_star"], j["alpha_tilde"], "w--o", ms=4, lw=2,
                label="jamming line: N_Δ > 0 at the end on its left")
    if crossover is not None and len(crossover):
        c = crossover[crossover["crossed"]]
        yerr = np.array([c["alpha_tilde_star"] - c["bracket_lo"], c["bracket_hi"] - c["alpha_tilde_star"]])
        ax.errorbar(c["width"], c["alpha_tilde_star"], yerr=yerr, fmt="s-", color="tab:red", ms=5, lw=2,
                    capsize=3, label="crossover α̃*(h): ‖ΔΘ‖/‖Θ₀‖ = 1")
    _log(ax)
    ax.set_xlim(_edges(hs)[0], _edges(hs)[-1])
    ax.set_ylim(_edges(als)[0], _edges(als)[-1])
    ax.set_xlabel("width h (log scale)")
    ax.set_ylabel("α̃ = √h·α (log scale)")
    ax.set_title("Phase diagram: test error over (h, α̃)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8, framealpha=0.7)
    return fig


def _fit_line(ax, fit: PowerLawFit, color, label: str) -> None:
    x = np.geomspace(*fit.x_range, 20)
    ax.plot(x, fit.prefactor * x**fit.exponent, "--", color=color, lw=1.5,
            label=f"{label}: slope {fit.exponent:+.2f} [{fit.interval[0]:+.2f}, {fit.interval[1]:+.2f}]")


def change_vs_alpha(curves: pd.DataFrame, fits: dict[float, dict[str, PowerLawFit | None]], column: str,
                    ylabel: str, title: str, c: float | None = 1.0) -> Figure:
    """Two panels, log–log: ``column`` (mean over seeds, bars = bootstrap interval) per width against α̃
    (left, with the fitted slopes over their ranges) and against the article's α = α̃/√h (right): curves
    that collapse on the left and not on the right put the crossover at α̃ = O(1), i.e. α* ∝ h^{-1/2}.

    curves: columns width, alpha_tilde, mean, lo, hi; fits: width → {"lazy": fit, "feature": fit}."""
    fig, (ax1, ax2) = _figure(2, size=(12, 4.8), sharey=True)
    cmap = plt.get_cmap("plasma")
    widths = np.sort(curves["width"].unique())
    for i, h in enumerate(widths):
        g = curves[curves["width"] == h].sort_values("alpha_tilde")
        color = cmap(0.85 * i / max(len(widths) - 1, 1))
        yerr = np.array([g["mean"] - g["lo"], g["hi"] - g["mean"]]).clip(min=0)
        ax1.errorbar(g["alpha_tilde"], g["mean"], yerr=yerr, fmt="o-", ms=3, color=color, label=f"h = {h:g}")
        ax2.errorbar(g["alpha_tilde"] / math.sqrt(h), g["mean"], yerr=yerr, fmt="o-", ms=3, color=color,
                     label=f"h = {h:g}")
        for side, fit in (fits.get(h) or {}).items():
            if fit is not None:
                _fit_line(ax1, fit, color, f"h = {h:g} {side}")
    for ax, xlabel in ((ax1, "α̃ = √h·α (log scale)"), (ax2, "α, the article's scale = α̃/√h (log scale)")):
        _log(ax)
        ax.set_xlabel(xlabel)
        if c is not None:
            ax.axhline(c, color="grey", lw=0.8, ls=":")
        ax.legend(fontsize=7)
    ax1.set_ylabel(ylabel)
    ax1.set_title(f"{title} vs α̃ (collapse expected)")
    ax2.set_title(f"{title} vs α (no collapse expected)")
    return fig


def test_error_vs_width(cells: pd.DataFrame, alphas: Sequence[float], ensemble: pd.DataFrame | None = None) -> Figure:
    """Test error (mean over seeds, bootstrap bars) against width h (log x, linear y) at the given α̃;
    with ``ensemble`` (fluctuations rows), the error of the output-averaged ensemble of the seeds, dashed."""
    fig, ax = _figure()
    cmap = plt.get_cmap("viridis")
    for i, a in enumerate(alphas):
        g = cells[np.isclose(cells["alpha_tilde"], a)].sort_values("width")
        color = cmap(0.85 * i / max(len(alphas) - 1, 1))
        yerr = np.array([g["mean"] - g["lo"], g["hi"] - g["mean"]]).clip(min=0)
        ax.errorbar(g["width"], g["mean"], yerr=yerr, fmt="o-", color=color, ms=4, capsize=2, label=f"α̃ = {a:.3g}")
        if ensemble is not None and len(ensemble):
            e = ensemble[np.isclose(ensemble["alpha_tilde"], a) & (ensemble["n_seeds"] > 1)].sort_values("width")
            if len(e):
                ax.plot(e["width"], e["ensemble_error"], "s--", color=color, ms=4,
                        label=f"α̃ = {a:.3g}, ensemble of {int(e['n_seeds'].max())} seeds")
    _label(ax, "width h (log scale)", "test error (fraction, linear scale)", "Test error vs width", logy=False)
    return fig


def power_law_points(x: np.ndarray, y: np.ndarray, fit: PowerLawFit | None, xlabel: str, ylabel: str, title: str,
                     yerr: np.ndarray | None = None) -> Figure:
    """y against x on log–log axes with the fitted power law over its range (label: slope and interval)."""
    fig, ax = _figure()
    ax.errorbar(x, y, yerr=yerr, fmt="o", ms=5, capsize=3, color="tab:blue", label="measured")
    if fit is not None:
        _fit_line(ax, fit, "tab:red", "fit")
    _label(ax, xlabel, ylabel, title)
    return fig


def n_delta_vs_load(df: pd.DataFrame) -> Figure:
    """N_Δ/P (linear) against P/N (log), one curve per depth: the jamming transition where N_Δ/P → 0."""
    fig, ax = _figure()
    d = df.dropna(subset=["n_delta", "n_train", "n_params"]).copy()
    d["load"] = d["n_train"] / d["n_params"]
    d["frac"] = d["n_delta"] / d["n_train"]
    for depth, g in d.groupby(d["depth"] if "depth" in d.columns else pd.Series(0, index=d.index)):
        m = g.groupby("load")["frac"].mean()
        ax.plot(m.index, m.to_numpy(), "o-", ms=4, label=f"depth L = {depth}")
    _label(ax, "P/N, samples per parameter (log scale)", "N_Δ/P, fraction of unfitted points (linear scale)",
           "Jamming: unfitted fraction vs load", logy=False)
    return fig


def dynamics(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]) -> Figure:
    """Loss α²L, N_Δ and kernel change against flow time t (all log axes), one line per run.

    curves: run label → {"train/loss" | "train/n_delta" | "ntk/rel_change": (t, values)}."""
    fig, axes = _figure(3, size=(15, 4.6))
    fig.subplots_adjust(wspace=0.3)
    panels = (("train/loss", "α²L, training loss"), ("train/n_delta", "N_Δ, unfitted points"),
              ("ntk/rel_change", "‖Θ_t − Θ₀‖/‖Θ₀‖"))
    for ax, (tag, label) in zip(axes, panels, strict=True):
        for name, tags in curves.items():
            if tag in tags:
                t, v = tags[tag]
                keep = (t > 0) & (v > 0)
                ax.plot(t[keep], v[keep], lw=1.2, label=name)
        _log(ax)
        ax.set_xlabel("flow time t = Σ dt (log scale)")
        ax.set_ylabel(f"{label} (log scale)")
        ax.set_title(f"{label.split(',')[0]} vs t")
    axes[0].legend(fontsize=7)
    fig.suptitle("Dynamics against flow time")
    return fig
