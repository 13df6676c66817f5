"""`lightning-phase report STUDY [STUDY ...] --out DIR`: report.md, fits.json and figures of studies.

    lightning-phase report phase_diagram_small --out report/
    lightning-phase report runs/my_runs --out report/      # a folder of run directories works too

Writes ``DIR/report.md`` (tables, fitted numbers with intervals, the published value beside each),
``DIR/fits.json`` (the same, machine-readable) and each figure as PNG and SVG. Reads only: the storage is
never created or changed; an existing DIR/report.md is not overwritten without ``--force``.
Exit status 0, or 2 on bad input (one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_phase.errors import ConfigError

FIGURES = ("phase_diagram", "kernel_change", "weights_change", "test_error_vs_width", "t1_vs_alpha_tilde",
           "fluctuations", "n_delta_vs_load", "threshold", "dynamics")


def load_sources(sources: list[str], storage: str | None) -> pd.DataFrame:
    """One table of every source: a study name in ``storage``, or a folder of run directories."""
    from lightning_phase.analysis.tables import load_runs, load_study, open_existing_storage

    frames, st, attrs = [], None, {}
    for src in sources:
        if Path(src).is_dir():
            df = load_runs(src)
        else:
            st = st or open_existing_storage(storage)
            df = load_study(src, st)
            attrs.update({k: v for k, v in df.attrs.items() if k == "threshold"})
        frames.append(df.assign(source=src))
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    out.attrs.update(attrs, sources=list(sources))
    return out


def build_report(df: pd.DataFrame, out: Path, c: float = 1.0, lazy_factor: float = 10.0,
                 n_boot: int = 2000, dynamics_runs: int = 4) -> dict[str, Any]:
    """Analyse ``df`` (analysis.science), draw what it allows, write report.md and fits.json into ``out``
    (created). Returns the fits."""
    from lightning_phase.analysis import figures as F
    from lightning_phase.analysis.science import analyse, threshold_fits

    out.mkdir(parents=True, exist_ok=True)
    an = analyse(df, c=c, lazy_factor=lazy_factor, n_boot=n_boot)
    fits = an.fits
    fits["sources"] = df.attrs.get("sources", [])
    drawn: dict[str, str] = {}

    def save(fig, name, caption):
        F.save(fig, out, name)
        drawn[name] = caption

    if an.cells is not None and len(an.cells):
        save(F.phase_diagram(an.cells, an.crossover, an.jamming), "phase_diagram",
             "Test error over (h, α̃), with the jamming line (white) and the crossover line α̃*(h) (red).")
        lazy, mid, feat = _three_alphas(an)
        save(F.test_error_vs_width(an.cells, [a for a in (feat, mid, lazy) if a is not None], an.fluct),
             "test_error_vs_width", "Test error vs width at the feature end, the crossover and the lazy end of α̃.")
    for col, name, ylabel, title in (("ntk_rel_change", "kernel_change", "‖Θ_t − Θ₀‖_F/‖Θ₀‖_F (log scale)",
                                      "Kernel change"),
                                     ("weights_change", "weights_change", "√h‖w − w₀‖/‖w₀‖ (log scale)",
                                      "Weights change")):
        if col in an.curves:
            save(F.change_vs_alpha(an.curves[col], an.side_fits.get(col, {}), "mean", ylabel, title,
                                   c=c if col == "ntk_rel_change" else None), name,
                 f"{title} per width against α̃ (left, fitted slopes dashed) and against α = α̃/√h (right).")
    if "t1" in an.curves:
        save(F.change_vs_alpha(an.curves["t1"], an.side_fits.get("t1", {}), "mean",
                               "t₁, flow time (log scale)", "Time scale t₁", c=None), "t1_vs_alpha_tilde",
             "t₁ (first time α²L falls below half its start) against α̃ and α.")
    if an.fluct_fit is not None and an.fluct is not None and an.fluct_alpha is not None:
        g = an.fluct[np.isclose(an.fluct["alpha_tilde"], an.fluct_alpha)].sort_values("width")
        save(F.power_law_points(g["width"].to_numpy(), g["variance"].to_numpy(), an.fluct_fit,
                                "width h (log scale)", "Var over seeds of test outputs F (log scale)",
                                f"Fluctuations at α̃ = {an.fluct_alpha:.3g}"), "fluctuations",
             "Variance of the test outputs over init seeds against width, with the fitted power law.")
    d = df
    if {"n_delta", "n_train", "n_params"} <= set(d.columns) and d["n_delta"].notna().any():
        save(F.n_delta_vs_load(d), "n_delta_vs_load", "Fraction of unfitted training points vs P/N, per depth.")
    if df.attrs.get("threshold"):
        fits["threshold"] = threshold_fits(df.attrs["threshold"], n_boot=n_boot)
        rows = [r for r in fits["threshold"]["groups"] if r["n_train"] and r["n_star"]]
        if rows:
            fit = _fit_obj(fits["threshold"]["n_star_exponent"])
            save(F.power_law_points(np.array([r["n_train"] for r in rows], float),
                                    np.array([r["n_star"] for r in rows], float), fit,
                                    "P, training samples (log scale)", "N*, parameters at h* (log scale)",
                                    "Jamming threshold N*(P)"), "threshold", "N* = N(h*) against P with the fit.")
    curves = _dynamics_curves(df, an, dynamics_runs)
    if curves:
        save(F.dynamics(curves), "dynamics", "Loss, N_Δ and kernel change against flow time t for a few runs.")
    fits["figures"] = {k: [f"{k}.png", f"{k}.svg"] for k in drawn}
    (out / "fits.json").write_text(json.dumps(_clean(fits), indent=2, sort_keys=True) + "\n")
    (out / "report.md").write_text(render(fits, an, drawn))
    return fits


def _fit_obj(d: dict[str, Any] | None):
    from lightning_phase.analysis.stats import PowerLawFit

    if not d:
        return None
    keys = PowerLawFit.__dataclass_fields__
    args: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in keys}
    return PowerLawFit(**args)


def _three_alphas(an) -> tuple[float | None, float | None, float | None]:
    als = np.sort(an.cells["alpha_tilde"].unique())
    mid = None
    if an.crossover is not None and an.crossover["crossed"].any():
        star = float(np.exp(np.log(an.crossover.loc[an.crossover["crossed"], "alpha_tilde_star"]).mean()))
        mid = float(als[np.argmin(np.abs(np.log(als) - math.log(star)))])
    lazy, feat = float(als[-1]), float(als[0])
    return lazy, (mid if mid not in (lazy, feat) else None), (feat if feat != lazy else None)


def _dynamics_curves(df: pd.DataFrame, an, n: int) -> dict[str, Any]:
    """A few runs (median width; smallest, crossover and largest α̃) read from their event files."""
    if n <= 0 or "run_dir" not in df.columns or an.cells is None or not len(an.cells):
        return {}
    from lightning_phase.analysis.events import against_flow_time, read_scalars

    widths = np.sort(df["width"].dropna().unique())
    h = widths[len(widths) // 2]
    lazy, mid, feat = _three_alphas(an)
    out = {}
    for a in [x for x in (feat, mid, lazy) if x is not None][:n]:
        rows = df[(df["width"] == h) & np.isclose(df["alpha_tilde"], a) & df["run_dir"].notna()]
        if rows.empty:
            continue
        tags = ("train/loss", "train/n_delta", "ntk/rel_change")
        curves = against_flow_time(read_scalars(rows["run_dir"].iloc[0]), tags)
        if curves:
            out[f"h={h:g}, α̃={a:.3g}"] = curves
    return out


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN → None, inf → "inf", numpy scalars → Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def _interval(d: dict[str, Any] | None) -> str:
    if not d:
        return "–"
    lo, hi = d["interval"]
    return (f"{d['exponent']:+.2f} [{lo:+.2f}, {hi:+.2f}] over {d['x_range'][0]:.3g}–{d['x_range'][1]:.3g} "
            f"({d['n_points']} pts, {d['method']})")


def render(fits: dict[str, Any], an, drawn: dict[str, str]) -> str:
    """report.md: fitted numbers beside the published ones, then the tables, then the figures."""
    from lightning_phase.analysis.science import PUBLISHED

    level = f"{fits.get('level', 0.95):.0%}"
    lines = ["# lightning-phase report", "",
             f"Sources: {', '.join(map(str, fits.get('sources', [])))}; {fits.get('n_runs', 0)} finished runs. "
             f"Intervals: {level} bootstrap (or t-interval where stated); x-range = the points fitted.", "",
             "## Fitted numbers and published values", "",
             "| quantity | width | measured [interval] over range | published |", "|---|---|---|---|"]
    for name in ("kernel_change", "weights_change", "t1"):
        for side in ("lazy", "feature"):
            key = f"{name}.{side}_slope"
            for h, d in (fits.get(name, {}).get(f"{side}_slope") or {}).items():
                lines.append(f"| {name} {side} slope vs α̃ | {h} | {_interval(d)} | {PUBLISHED[key][1]} |")
    cr = fits.get("crossover")
    if cr:
        for h, v in cr["alpha_tilde_star"].items():
            lo, hi = cr["bracket"][h]
            val = f"{v:.3g}" if v is not None and v == v else "not crossed"
            lines.append(f"| α̃* (‖ΔΘ‖/‖Θ₀‖ = {fits['c']:g}) | {h} | {val}, bracket [{lo:.3g}, {hi:.3g}] | "
                         "O(1), same for every h |")
        lines.append(f"| exponent of α* = α̃*/√h vs h | all | {_interval(cr.get('exponent'))} | "
                     f"{PUBLISHED['crossover.exponent'][1]} |")
    fl = fits.get("fluctuations")
    if fl and fl.get("exponent"):
        lines.append(f"| Var over seeds vs h at α̃ = {fl['alpha_tilde']:.3g} | all | {_interval(fl['exponent'])} | "
                     f"{PUBLISHED['fluctuations.exponent'][1]} |")
    th = fits.get("threshold")
    if th and th.get("n_star_exponent"):
        lines.append(f"| N* vs P | all | {_interval(th['n_star_exponent'])} | "
                     f"{PUBLISHED['threshold.n_star_exponent'][1]} |")
    if an.cells is not None and len(an.cells):
        lines += ["", "## Test error per (h, α̃) (mean over seeds)", "", _table(an.cells, "mean")]
    if an.jamming is not None and len(an.jamming):
        lines += ["", "## Jamming line (per α̃: widest unfitted, narrowest fitted width)", "",
                  "| α̃ | h* | bracket |", "|---|---|---|"]
        lines += [f"| {r.alpha_tilde:.3g} | {r.width_star:.3g} | [{r.bracket_lo:g}, {r.bracket_hi:g}] |"
                  for r in an.jamming.itertuples()]
    if an.fluct is not None and len(an.fluct):
        lines += ["", "## Fluctuations and ensembles (from outputs.npz)", "",
                  "| h | α̃ | seeds | Var_seeds F | single-net error | ensemble error |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.width:g} | {r.alpha_tilde:.3g} | {r.n_seeds} | {r.variance:.4g} | {r.single_error:.4f} | "
                  f"{r.ensemble_error:.4f} |" for r in an.fluct.itertuples() if r.n_seeds >= 2]
    if th:
        lines += ["", "## Jamming threshold", "", "| P | h* | N* | bracket | finished |", "|---|---|---|---|---|"]
        lines += [f"| {r['n_train']} | {r['h_star']} | {r['n_star']} | {r['bracket']} | {r['finished']} |"
                  for r in th["groups"]]
    lines += ["", "## Figures", ""]
    lines += [f"- `{k}.png` / `{k}.svg`: {v}" for k, v in drawn.items()]
    lines += [f"\n![{k}]({k}.png)" for k in drawn]
    return "\n".join(lines) + "\n"


def _table(cells: pd.DataFrame, value: str) -> str:
    grid = cells.pivot_table(index="width", columns="alpha_tilde", values=value).sort_index()
    head = "| h \\ α̃ | " + " | ".join(f"{a:.3g}" for a in grid.columns) + " |"
    sep = "|---" * (len(grid.columns) + 1) + "|"
    body = ["| " + f"{h:g} | " + " | ".join("–" if v != v else f"{v:.3f}" for v in row) + " |"
            for h, row in zip(grid.index, grid.to_numpy(), strict=True)]
    return "\n".join([head, sep, *body])


# ---- the command ----------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError("arguments", " ".join(sys.argv[2:]) or "(none)", f"valid arguments ({message})")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lightning-phase report", description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="+", metavar="STUDY", help="study names in --storage, or folders of runs")
    p.add_argument("--out", required=True, help="output folder (report.md, fits.json, figures)")
    p.add_argument("--storage", default=None, help="journal file or database URL (default runs/sweeps.journal)")
    p.add_argument("--crossover-level", type=float, default=1.0, dest="c",
                   help="c: the crossover is where ‖ΔΘ‖/‖Θ₀‖ = c (default 1)")
    p.add_argument("--lazy-factor", type=float, default=10.0,
                   help="lazy-side fits use α̃ ≥ this × α̃*(h) (default 10)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap samples (default 2000)")
    p.add_argument("--force", action="store_true", help="overwrite an existing report in --out")
    return p


def main_report(argv: list[str]) -> int:
    """Entry point of ``lightning-phase report``; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        out = Path(args.out)
        if (out / "report.md").exists() and not args.force:
            raise ConfigError("--out", str(out), "a folder without report.md (or add --force to overwrite)")
        if out.exists() and not out.is_dir():
            raise ConfigError("--out", str(out), "a folder (it is a file)")
        for name, v, ok in (("--crossover-level", args.c, args.c > 0), ("--lazy-factor", args.lazy_factor,
                            args.lazy_factor >= 1), ("--bootstrap", args.bootstrap, args.bootstrap >= 100)):
            if not ok:
                raise ConfigError(name, v, {"--crossover-level": "a number > 0", "--lazy-factor": "a number >= 1",
                                            "--bootstrap": "an integer >= 100"}[name])
        t0 = time.perf_counter()
        df = load_sources(args.sources, args.storage)
        fits = build_report(df, out, c=args.c, lazy_factor=args.lazy_factor, n_boot=args.bootstrap)
    except ConfigError as exc:
        print(f"lightning-phase: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"report: {fits['n_runs']} runs, {len(fits['figures'])} figures in {time.perf_counter() - t0:.1f} s")
    for key, label in (("phase_diagram", "phase diagram"),):
        if key in fits["figures"]:
            print(f"{label}: {out / (key + '.png')}")
    print(f"report:  {out / 'report.md'}\nfits:    {out / 'fits.json'}")
    return 0
