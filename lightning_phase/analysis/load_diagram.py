"""The [SB] phase diagram: a grid of small load curves over test-accuracy cells, read from run summaries.

``lightning-phase load-diagram RUNS --x KEY --y KEY --out FIG.png``: every summary.json under RUNS that
holds ``load_log_d`` (written by the LoadCurve callback) is one run; its coordinates are read from the
run's config by dotted keys (``init_args`` levels may be left out: ``model.net.dropout`` finds
``model.init_args.net.init_args.dropout``). Runs with the same (x, y) — seeds — are averaged. Each cell
shows the normalised load curve ỹ_ℓ = (log D_ℓ − log D_L)/(log D_0 − log D_L) against ℓ/L in red over a
grey level giving the test accuracy (1 − test_error), and its curvature c. A side panel draws the
spring–block model's rest profiles (BEYOND.md §A.4) in the same normalisation. No Lightning, no training.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lightning_phase.errors import ConfigError

SUMMARY_FILE = "summary.json"


def config_value(config: dict[str, Any], key: str) -> Any:
    """The value at dotted ``key`` in a nested run config, descending through ``init_args`` where the key
    itself is absent. KeyError if not found."""
    node: Any = config
    for part in key.split("."):
        while isinstance(node, dict) and part not in node and "init_args" in node:
            node = node["init_args"]
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    while isinstance(node, dict) and "init_args" in node and len(node) <= 2:
        node = node["init_args"]
    return node


@dataclass(frozen=True)
class Cell:
    """One (x, y) point: n runs, mean log D_ℓ, mean load curvature c and its spread, mean test error."""

    x: float
    y: float
    n: int
    log_d: tuple[float, ...]
    curvature: float
    curvature_std: float
    test_error: float


def collect(path: str | Path, x_key: str, y_key: str) -> list[Cell]:
    """Cells of the diagram from every summary.json under ``path`` holding ``load_log_d``, sorted by (y, x).
    ConfigError naming ``path`` when none, or naming the key a run's config lacks."""
    root = Path(path)
    if not root.exists():
        raise ConfigError("path", str(path), "an existing folder of runs (summary.json files)")
    groups: dict[tuple[float, float], list[dict[str, Any]]] = {}
    for f in sorted(root.rglob(SUMMARY_FILE)):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not rec.get("load_log_d"):
            continue
        coords = []
        for flag, key in (("--x", x_key), ("--y", y_key)):
            try:
                coords.append(float(config_value(rec.get("config") or {}, key)))
            except (KeyError, TypeError, ValueError):
                raise ConfigError(flag, key, f"a numeric config key of the runs (missing in {f.parent})") from None
        groups.setdefault((coords[0], coords[1]), []).append(rec)
    if not groups:
        raise ConfigError("path", str(path), "a folder holding runs with a LoadCurve summary (load_log_d)")
    cells = []
    for (x, y), recs in groups.items():
        curves = [r["load_log_d"] for r in recs]
        if len({len(c) for c in curves}) != 1:
            raise ConfigError("path", str(path), f"runs of one depth per cell (x={x}, y={y})")
        c = np.array([r.get("load_curvature", math.nan) for r in recs], dtype=float)
        err = np.array([r.get("test_error", math.nan) if r.get("test_error") is not None else math.nan
                        for r in recs], dtype=float)
        cells.append(Cell(x, y, len(recs), tuple(np.mean(curves, axis=0).tolist()), float(np.mean(c)),
                          float(np.std(c)), float(np.mean(err))))
    return sorted(cells, key=lambda cl: (cl.y, cl.x))


def normalised(log_d: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(ℓ/L, (log D_ℓ − log D_L)/(log D_0 − log D_L)): every curve from (0, 1) to (1, 0)."""
    y = np.asarray(log_d, dtype=float)
    span = y[0] - y[-1]
    return np.linspace(0, 1, len(y)), (y - y[-1]) / (span if span != 0 else 1.0)


def spring_profiles(n_blocks: int = 7) -> list[tuple[str, np.ndarray]]:
    """Normalised spring–block rest profiles 1 − x_ℓ (ℓ = 0…L) for μ = 0.1 without noise (concave), μ = 0
    (straight) and μ = 0.1 with noise 0.3 (nearly straight), from ``observables.spring_block``."""
    import torch

    from lightning_phase.observables.spring_block import spring_block

    out = []
    for label, mu, noise in (("μ=0.1, no noise", 0.1, 0.0), ("μ=0", 0.0, 0.0), ("μ=0.1, noise 0.3", 0.1, 0.3)):
        d = spring_block(n_blocks, mu_forward=mu, noise=noise, n_chains=8,
                         generator=torch.Generator().manual_seed(0)).mean(0).numpy()
        x = np.concatenate([[0.0], np.cumsum(d)[:-1]])  # block positions x_0 = 0 … x_L
        out.append((label, 1 - x / x[-1] if x[-1] else 1 - x))
    return out


def figure(cells: list[Cell], x_key: str, y_key: str, springs: list[tuple[str, np.ndarray]] | None = None):
    """The diagram as a matplotlib Figure (object-oriented, no pyplot state)."""
    from matplotlib.figure import Figure

    xs, ys = sorted({c.x for c in cells}), sorted({c.y for c in cells})
    ncols = len(xs) + (1 if springs else 0)
    fig = Figure(figsize=(1.6 * ncols + 1, 1.4 * len(ys) + 1))
    grid = fig.add_gridspec(len(ys), ncols, wspace=0.08, hspace=0.08)
    errs = [c.test_error for c in cells if math.isfinite(c.test_error)]
    lo, hi = (min(errs), max(errs)) if errs else (0.0, 1.0)
    by = {(c.x, c.y): c for c in cells}
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            ax = fig.add_subplot(grid[i, j])
            ax.set_xticks([])
            ax.set_yticks([])
            c = by.get((xv, yv))
            if c is None:
                continue
            shade = 0.5 if hi == lo or not math.isfinite(c.test_error) else (c.test_error - lo) / (hi - lo)
            ax.set_facecolor(str(0.15 + 0.8 * (1 - shade)))  # light = low test error
            u, v = normalised(c.log_d)
            ax.plot(u, v, "-o", color="red", ms=2, lw=1.2)
            ink = "white" if shade > 0.5 else "black"
            ax.plot([0, 1], [1, 0], ":", color=ink, lw=0.6)
            ax.text(0.97, 0.95, f"c={c.curvature:+.2f}\nerr={c.test_error:.3f}", ha="right", va="top",
                    fontsize=6, color=ink, transform=ax.transAxes)
            ax.set_xlim(-0.05, 1.05)
            ax.set_ylim(-0.15, 1.15)
            if i == len(ys) - 1:
                ax.set_xlabel(f"{xv:g}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{yv:g}", fontsize=8)
    if springs:
        ax = fig.add_subplot(grid[:, -1])
        for label, prof in springs:
            ax.plot(np.linspace(0, 1, len(prof)), prof, "-o", ms=2, label=label)
        ax.set_title("spring–block", fontsize=8)
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=6)
    fig.supxlabel(f"{x_key}   (cells: normalised load curve; grey: test error {lo:.3f} light … {hi:.3f} dark)",
                  fontsize=8)
    fig.supylabel(y_key, fontsize=8)
    return fig


def table(cells: list[Cell]) -> str:
    lines = [f"{'x':>8} {'y':>8} {'n':>3} {'curvature':>10} {'±':>6} {'test_error':>10}  log D_ℓ"]
    for c in cells:
        lines.append(f"{c.x:>8g} {c.y:>8g} {c.n:>3d} {c.curvature:>+10.3f} {c.curvature_std:>6.3f} "
                     f"{c.test_error:>10.4f}  " + " ".join(f"{v:.2f}" for v in c.log_d))
    return "\n".join(lines)


def main_load_diagram(argv: list[str]) -> int:
    """``lightning-phase load-diagram``: print the cells and (with --out) draw the diagram. Exit 0, or 2 for
    bad input (one line on stderr, nothing written)."""
    parser = argparse.ArgumentParser(prog="lightning-phase load-diagram", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="folder of runs (e.g. runs/<study>) with LoadCurve summaries")
    parser.add_argument("--x", required=True, help="config key of the columns, e.g. model.net.dropout")
    parser.add_argument("--y", required=True, help="config key of the rows, e.g. model.net.activation_beta")
    parser.add_argument("--out", help="figure file to write (png, pdf, svg)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    parser.add_argument("--no-springs", action="store_true", help="leave out the spring–block panel")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.out is not None:
            out = Path(args.out)
            if out.exists() and not args.force:
                raise ConfigError("--out", args.out, "a file that does not exist yet (or --force)")
            if out.suffix.lower() not in (".png", ".pdf", ".svg"):
                raise ConfigError("--out", args.out, "a .png, .pdf or .svg file name")
        cells = collect(args.path, args.x, args.y)
    except ConfigError as exc:
        print(f"lightning-phase load-diagram: error: {exc}", file=sys.stderr)
        return 2
    print(table(cells))
    if args.out is not None:
        fig = figure(cells, args.x, args.y, None if args.no_springs else spring_profiles())
        fig.savefig(args.out, dpi=130, bbox_inches="tight")
        print(f"figure: {args.out}")
    return 0
