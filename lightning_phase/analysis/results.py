"""`lightning-phase results STUDY`: every trial of a study as one row, sorted by the grid keys.

    lightning-phase results phase_diagram_small                       # aligned table on stdout
    lightning-phase results phase_diagram_small --format csv --out trials.csv
    lightning-phase results phase_diagram_small --format json         # list of records, NaN → null

Columns (load_study): trial, state, value, the grid keys, every scalar summary.json field, fail_reason,
error, retry_of, run_dir; the table shows the grid keys (last dotted part) and a few summary fields.
Reads only: the storage is never created; ``--out``/``--csv`` refuse an existing file without ``--force``.
Exit status 0, or 2 on bad input (one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from lightning_phase.errors import ConfigError

FORMATS = ("table", "csv", "json")
# Summary fields shown in the terminal table beside the grid keys (csv/json have every field).
SHOWN = ("n_params", "alpha_tilde", "n_delta", "train_error", "test_error", "ntk_rel_change", "steps",
         "stop_reason", "wall_seconds")


def to_table(df: pd.DataFrame, grid_keys: list[str]) -> str:
    """Aligned columns: trial, state, the grid keys (last dotted part), value, SHOWN fields, fail_reason."""
    short = {k.split(".")[-1] for k in grid_keys}
    shown = [c for c in SHOWN if c not in short and c in df.columns and df[c].notna().any()]
    cols = ["trial", "state", *grid_keys, "value", *shown, "fail_reason"]
    cols = [c for c in cols if c in df.columns]
    head = [c.split(".")[-1] if c in grid_keys else c for c in cols]
    cells = [[_fmt(v) for v in row] for row in df[cols].itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def to_csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False)


def to_json(df: pd.DataFrame) -> str:
    """A JSON list of one object per trial; NaN and missing values as null."""
    records = [{k: _plain(v) for k, v in r.items()} for r in df.to_dict(orient="records")]
    return json.dumps(records, indent=1) + "\n"


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _fmt(v: Any) -> str:
    v = _plain(v)
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError("arguments", " ".join(sys.argv[2:]) or "(none)", f"valid arguments ({message})")


def build_parser() -> argparse.ArgumentParser:
    from lightning_phase.storage import DEFAULT_STORAGE

    p = _Parser(prog="lightning-phase results", description="every trial of a study, sorted by the grid keys")
    p.add_argument("study")
    p.add_argument("--storage", default=None, help=f"journal file or database URL (default {DEFAULT_STORAGE})")
    p.add_argument("--format", default="table", help="table (default), csv or json")
    p.add_argument("--out", default=None, help="write to this file instead of the terminal")
    p.add_argument("--csv", default=None, help="also write every column to this CSV file")
    p.add_argument("--force", action="store_true", help="overwrite --out/--csv files that exist")
    return p


def main_results(argv: list[str]) -> int:
    """Entry point of ``lightning-phase results``; returns the exit status."""
    from lightning_phase.analysis.tables import load_study

    try:
        args = build_parser().parse_args(argv)
        if args.format not in FORMATS:
            raise ConfigError("--format", args.format, "one of " + ", ".join(FORMATS))
        for flag, path in (("--out", args.out), ("--csv", args.csv)):
            if path is not None and Path(path).exists() and not args.force:
                raise ConfigError(flag, path, "a file that does not exist yet (or add --force to overwrite)")
            if path is not None and not Path(path).parent.is_dir():
                raise ConfigError(flag, path, "a file in an existing directory")
        df = load_study(args.study, args.storage)
    except ConfigError as exc:
        print(f"lightning-phase: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    keys = df.attrs.get("grid_keys", [])
    text = {"table": lambda: to_table(df, keys), "csv": lambda: to_csv(df), "json": lambda: to_json(df)}[args.format]()
    if args.format == "table" and df.attrs.get("threshold"):
        from lightning_phase.analysis.jamming_line import format_results

        text += "\n\n" + format_results(df.attrs["threshold"])
    if args.out:
        Path(args.out).write_text(text if text.endswith("\n") else text + "\n")
        print(f"wrote {len(df)} rows to {args.out}", file=sys.stderr)
    else:
        print(text.rstrip("\n"))
    if args.csv:
        Path(args.csv).write_text(to_csv(df))
        print(f"wrote {len(df)} rows to {args.csv}", file=sys.stderr)
    return 0
