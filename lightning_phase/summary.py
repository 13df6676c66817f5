"""summary.json: one schema-versioned, atomically written record per run (DESIGN.md)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
SUMMARY_FILE = "summary.json"
OUTPUTS_FILE = "outputs.npz"


def write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    """Write JSON to ``path`` via a temporary file, fsync, os.replace, fsync of the folder: readers see the old
    or the new file, and after a power cut the new one is on disk. On failure (ENOSPC) nothing is left
    behind (no partial temporary file) and the OSError is raised."""
    path = Path(path)
    data = (json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """fsync a directory, so that a rename into it survives a crash (a no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_npz_atomic(path: Path, arrays: dict[str, Any]) -> None:
    """Write numpy arrays to ``path`` (.npz, uncompressed) via a temporary file and os.replace."""
    import numpy as np

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The summary.json of a run directory."""
    return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())


def config_hash(config: dict[str, Any] | None) -> str | None:
    """sha256 (first 16 hex digits) of the resolved config, keys sorted: equal configs, equal hashes."""
    if config is None:
        return None
    blob = json.dumps(_jsonable(config), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers."""
    out = {}
    for name in ("lightning_phase", "torch", "pytorch-lightning", "numpy", "scikit-learn", "optuna"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: tensors/numpy scalars → numbers, paths → str; NaN/inf → None (null)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None   # strict JSON: a NaN/inf metric is null (no value), never a number
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def flat_scalars(summary: dict[str, Any]) -> dict[str, Any]:
    """The scalar fields of a summary (numbers, strings, bools, None); the config and nested dicts dropped."""
    return {k: v for k, v in summary.items() if v is None or isinstance(v, (str, int, float, bool))}


def trial_attrs(summary: dict[str, Any]) -> dict[str, Any]:
    """A sweep trial's record of its run summary: each scalar field as its own Optuna user attribute (same
    name), ``config_hash`` among them — the config itself stays in the run directory. Non-finite floats
    become None (JSON storages and optuna-dashboard cannot hold NaN). A run with members also keeps
    ``members``: the list of each member's scalar fields (what ``member_rows`` expands)."""
    def finite(rec: dict[str, Any]) -> dict[str, Any]:
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in flat_scalars(rec).items()}

    out = finite(summary)
    if isinstance(summary.get("members"), list):
        out["members"] = [finite(m) for m in summary["members"] if isinstance(m, dict)]
    return out


def member_rows(record: dict[str, Any], seed_keys: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """A run's flat record → one record per member, each read as its single run's: the run's scalar fields
    overlaid with member k's (``members[k]``: losses, N_Δ, steps, α̃, measurements, …), plus ``member`` k.

    Member k's init seed goes where its single run has it: ``seed`` (and the ``seed_keys["seed_everything"]``
    column, e.g. a sweep's ``seed_everything``) when the seed source is seed_everything, else the
    ``seed_keys["net.seed"]`` column (e.g. ``model.net.init_args.seed``) with ``seed`` left as the run's.
    A record without members → [record] unchanged."""
    members = record.get("members")
    base = {k: v for k, v in record.items() if k != "members"}
    if not isinstance(members, list) or not members:
        return [base]
    rows = []
    for m in members:
        row = {**base, **{k: v for k, v in flat_scalars(m).items() if k not in ("seed", "seed_source")}}
        source, seed = m.get("seed_source"), m.get("seed")
        if source == "seed_everything":
            row["seed"] = seed
        key = (seed_keys or {}).get(source or "")
        if key is not None and seed is not None:
            row[key] = seed
        rows.append(row)
    return rows


def trial_record(user_attrs: dict[str, Any]) -> dict[str, Any]:
    """The run summary fields stored in a trial's user attributes: the ``summary`` dict of a study written
    before :func:`trial_attrs` (one blob), else the attributes themselves (one per field)."""
    blob = user_attrs.get("summary")
    return blob if isinstance(blob, dict) else user_attrs


def objective_value(summary: dict[str, Any], objective: str) -> float | None:
    """The trial value: a summary field, or N_Δ/P (``n_delta_over_p``) or N_Δ/N (``n_delta_over_n``)."""
    try:
        if objective == "n_delta_over_p":
            return float(summary["n_delta"]) / float(summary["n_train"])
        if objective == "n_delta_over_n":
            return float(summary["n_delta"]) / float(summary["n_params"])
        return float(summary[objective])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
