"""`lightning-phase results`: every trial of a study as one row (params, summary fields, state)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from optuna.storages import BaseStorage

# Summary fields shown in the terminal table (the CSV has every scalar field of summary.json).
SHOWN = ("n_params", "alpha_tilde", "n_delta", "train_error", "test_error", "steps", "stop_reason", "wall_seconds")


def rows(storage: BaseStorage, study_name: str) -> list[dict[str, Any]]:
    """One dict per trial: number, state, value, params (dotted keys), summary scalars, fail reason, run_dir."""
    sid = storage.get_study_id_from_name(study_name)
    out = []
    for t in storage.get_all_trials(sid, deepcopy=False):
        summary = t.user_attrs.get("summary") or {}
        params = t.params or dict(t.system_attrs.get("fixed_params") or {})
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name,
                               "value": t.values[0] if t.values else None}
        row.update(params)
        row.update({k: v for k, v in sorted(summary.items()) if not isinstance(v, (dict, list))})
        row["fail_reason"] = t.user_attrs.get("fail_reason")
        row["error"] = t.user_attrs.get("error")
        row["retry_of"] = t.system_attrs.get("failed_trial")
        row["run_dir"] = t.user_attrs.get("run_dir")
        out.append(row)
    return out


def to_csv(table: list[dict[str, Any]]) -> str:
    cols: list[str] = []
    for r in table:
        cols += [c for c in r if c not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in table:
        w.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()})
    return buf.getvalue()


def to_text(table: list[dict[str, Any]], params: list[str]) -> str:
    """Aligned columns: trial, state, the grid params (last dotted part), value, a few summary fields."""
    short = {p.split(".")[-1] for p in params}
    shown = [c for c in SHOWN if c not in short and any(c in r for r in table)]
    cols = ["trial", "state", *params, "value", *shown, "fail_reason"]
    head = [c.split(".")[-1] if c in params else c for c in cols]
    cells = [[_fmt(r.get(c)) for c in cols] for r in table]
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=False))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=False)) for row in cells]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
