"""Studies and run directories as pandas DataFrames: one row per trial (or run), every summary field flat.

    >>> df = load_study("phase_diagram", storage="runs/sweeps.journal")      # doctest: +SKIP
    >>> df[["model.net.init_args.width", "model.alpha_tilde", "test_error"]]  # numeric grid columns

Reads only: a storage that does not exist is an error (``ConfigError`` naming ``--storage``), never
created. Imports optuna and pandas, never torch or Lightning.

Trial records. Both formats a sweep has written are read:
- v1: the whole summary.json as one user attribute ``summary`` (a dict, with the config inside);
- v2 (:func:`lightning_phase.summary.trial_attrs`): every scalar of summary.json as its own user
  attribute (same name), the ``config_hash`` instead of the config, grid values as numeric distributions.
Columns: ``trial``, ``state``, ``value``, the grid keys (dotted, as in the spec), every scalar summary
field, ``fail_reason``, ``error``, ``retry_of``, ``run_dir``. ``df.attrs`` holds ``study``, ``grid_keys``
(the sweep's keys, sorted), ``objective`` and, for a threshold study, ``threshold`` (its results).
A trial or run that trained members (``model.members``; a ``members: seed`` sweep) gives one row per
member, read as its single run's (its seed in the seed column, its fields, its ``value``; ``member`` k).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from lightning_phase.errors import ConfigError
from lightning_phase.summary import SUMMARY_FILE, flat_scalars, member_rows, objective_value, trial_attrs

SPEC_ATTR = "lp_spec"             # study user attr: the sweep spec's fingerprint (sweep.launch)
THRESHOLD_ATTR = "lp_threshold"   # study user attr: the threshold search's results
META_ATTRS = ("run_dir", "fail_reason", "error", "timing", "summary", "config_hash")
# Leading columns of every table, in this order.
LEAD = ("trial", "state", "value")
TAIL = ("fail_reason", "error", "retry_of", "run_dir")


def open_existing_storage(url: str | os.PathLike | None):
    """An Optuna storage that already exists, opened for reading (journal file path or database URL).

    Unlike the sweep's ``open_storage`` it creates nothing: a missing journal file or SQLite database is a
    ConfigError naming ``--storage``; a PostgreSQL database is opened without creating tables."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage

    from lightning_phase.storage import DEFAULT_STORAGE, FencedJournalFileBackend, describe

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = str(url) if url is not None else DEFAULT_STORAGE
    if "://" not in url:
        if not Path(url).is_file():
            raise ConfigError("--storage", url, "an existing journal file (a sweep writes one; nothing to read here)")
        return JournalStorage(FencedJournalFileBackend(url))   # a damaged line: JournalDamaged (ConfigError)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise ConfigError("--storage", url, "an existing SQLite database file")
    try:
        return RDBStorage(url, skip_table_creation=True, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # driver missing, unreachable host, no such database
        msg = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise ConfigError("--storage", describe(url), f"a reachable database ({msg})") from None


def study_names(storage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def load_study(name: str, storage: Any = None) -> pd.DataFrame:
    """One row per trial of study ``name`` (columns: module doc), sorted by the grid keys then trial.

    ``storage``: a URL or journal path (default ``runs/sweeps.journal``), or an open Optuna storage."""
    st = storage if hasattr(storage, "get_all_trials") else open_existing_storage(storage)
    try:
        sid = st.get_study_id_from_name(name)
    except KeyError:
        names = ", ".join(study_names(st)) or "none"
        raise ConfigError("study", name, f"a study in this storage (there: {names})") from None
    attrs = st.get_study_user_attrs(sid)
    spec = attrs.get(SPEC_ATTR) or {}
    grid_keys = sorted(spec.get("grid") or {})
    thr = spec.get("threshold")
    if thr:
        grid_keys += [k for k in (thr.get("width_key"), thr.get("seed_key")) if k and k not in grid_keys]
    rows = [trial_row(t) for t in st.get_all_trials(sid, deepcopy=False)]
    for r in rows:
        grid_keys += [k for k in r.pop("_params") if k not in grid_keys]
    rows = _expand_members(rows, spec.get("objective"))
    df = _frame(rows, grid_keys)
    df.attrs.update(study=name, grid_keys=grid_keys, objective=spec.get("objective"))
    if THRESHOLD_ATTR in attrs:
        df.attrs["threshold"] = attrs[THRESHOLD_ATTR]
    return df


def _expand_members(rows: list[dict[str, Any]], objective: str | None) -> list[dict[str, Any]]:
    """A trial that trained members (``members: seed`` sweeps) → one row per member, as its single run's
    trial would read: the member's fields and seed (in the grid's seed column) and its own ``value``."""
    out = []
    for r in rows:
        members = r.pop("_members", None)
        if not members:
            out.append(r)
            continue
        for m in member_rows({**r, "members": members}, SEED_COLUMNS):
            if objective and r.get("state") == "COMPLETE":
                m["value"] = objective_value(m, objective)
            out.append(m)
    return out


SEED_COLUMNS = {"seed_everything": "seed_everything", "net.seed": "model.net.init_args.seed"}  # grid key per source


def trial_row(t) -> dict[str, Any]:
    """A FrozenTrial as one flat row (v1 or v2 record); its params also under ``_params`` (the keys)."""
    params = dict(t.params or t.system_attrs.get("fixed_params") or {})
    row: dict[str, Any] = {"trial": t.number, "state": t.state.name, "value": t.values[0] if t.values else None}
    row.update(params)
    ua = t.user_attrs
    summary = ua.get("summary")
    if isinstance(summary, dict):                       # v1: one blob
        row.update(flat_scalars(summary))
    row.update({k: v for k, v in ua.items() if k not in META_ATTRS and _scalar(v)})   # v2: one attr each
    if ua.get("config_hash") is not None:
        row["config_hash"] = ua["config_hash"]
    row["fail_reason"] = ua.get("fail_reason")
    row["error"] = ua.get("error")
    row["retry_of"] = t.system_attrs.get("failed_trial")
    row["run_dir"] = ua.get("run_dir")
    row["_params"] = list(params)
    row["_members"] = ua.get("members") if isinstance(ua.get("members"), list) else (
        summary.get("members") if isinstance(summary, dict) else None)
    return row


def load_runs(path: str | os.PathLike) -> pd.DataFrame:
    """One row per run directory under ``path`` (any depth) holding a summary.json — one per member for a
    run with members (``summary.member_rows``) —: every scalar summary field flat, plus ``run_dir``;
    sorted by width, alpha_tilde, seed where present. ``path`` may also be
    a single run directory. ConfigError naming ``path`` if it holds no summary.json."""
    root = Path(path)
    files = [root / SUMMARY_FILE] if (root / SUMMARY_FILE).is_file() else sorted(root.rglob(SUMMARY_FILE))
    if not files:
        raise ConfigError("path", str(path), f"a run directory, or a folder of run directories, with {SUMMARY_FILE}")
    rows = []
    for f in files:
        try:
            summary = json.loads(f.read_text())
        except (OSError, ValueError):
            continue   # being written, or torn: summary.json is atomic, so this is someone else's file
        rows += [{**r, "run_dir": str(f.parent)}   # members: one row per member (its seed, its fields)
                 for r in member_rows({**flat_scalars(summary), "members": summary.get("members")})]
    keys = [k for k in ("width", "alpha_tilde", "seed") if any(k in r for r in rows)]
    df = _frame(rows, keys, lead=(), tail=("run_dir",))
    df.attrs.update(grid_keys=keys)
    return df


def sort_by_grid(df: pd.DataFrame, keys: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """Rows sorted by ``keys`` (numbers numerically, missing last), then by trial number when present."""
    by = [k for k in keys if k in df.columns] + [c for c in ("trial",) if c in df.columns]
    if not by or df.empty:
        return df.reset_index(drop=True)
    return df.sort_values(by, kind="stable", na_position="last").reset_index(drop=True)


def _frame(rows: list[dict[str, Any]], keys: list[str], lead=LEAD, tail=TAIL) -> pd.DataFrame:
    cols: list[str] = [c for c in lead if any(c in r for r in rows) or c in ("trial", "state")] if rows else []
    cols += [k for k in keys if k not in cols]
    for r in rows:
        cols += [c for c in r if c not in cols and c not in tail and c != "_params"]
    cols += [c for c in tail if c not in cols]
    df = pd.DataFrame(rows, columns=cols)
    for c in df.columns:   # a column of numbers (with None for missing) as a numeric dtype
        if df[c].dtype == object and df[c].map(lambda v: v is None or _number(v)).all() and df[c].notna().any():
            df[c] = pd.to_numeric(df[c])
    return sort_by_grid(df, keys)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


__all__ = ["flat_scalars", "load_runs", "load_study", "open_existing_storage", "sort_by_grid", "trial_attrs",
           "trial_row"]
