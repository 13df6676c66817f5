"""Run folders named by their phase-diagram coordinates instead of ``version_N``.

A run's folder under ``<save_dir>/<name>/`` is what TensorBoard's run selector shows, so it carries the
coordinates of the run: ``a~<α̃>_h<width>_L<depth>_P<n_train>_s<seed>`` (``a~`` reads "α̃"), plus
``_K<members>`` for K > 1 members (``a~1-10-100`` when the members differ in α̃); parts the run does
not have (a net without width) are left out. The same coordinates run again get ``_v1``, ``_v2``, … so
no run overwrites another. A version set in the config (``trainer.logger.init_args.version``, as sweep
trials do with ``trial_NNNNN_<grid point>``, see :func:`trial_name`) is kept.

    >>> coordinates_name(alpha_tilde=100.0, width=64, depth=2, n_train=500, seed=0)
    'a~100_h64_L2_P500_s0'
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9.+~_-]")


def _num(x: float) -> str:
    """A short exact-enough spelling: 100 → "100", 31.6227766 → "31.6228", 1e6 → "1e+06", ∞ → 'inf'."""
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.6g}"


def coordinates_name(alpha_tilde: float | list[float | None] | None = None, width: int | None = None,
                     depth: int | None = None, n_train: int | None = None, seed: int | None = None,
                     members: int = 1) -> str:
    """``a~<α̃>_h<width>_L<depth>_P<n_train>_s<seed>[_K<members>]``, the parts that are not None, reduced to
    the characters ``[A-Za-z0-9.+~_-]`` (safe as a folder name); ``run`` when no part is known."""
    values = list(alpha_tilde) if isinstance(alpha_tilde, (list, tuple)) else [alpha_tilde]
    known = list(dict.fromkeys(_num(a) for a in values if a is not None))  # distinct α̃, in member order
    a_part = "-".join(known) if known else None
    parts = [f"{tag}{v if tag == 'a~' else int(v)}"
             for tag, v in (("a~", a_part), ("h", width), ("L", depth), ("P", n_train), ("s", seed))
             if v is not None and not isinstance(v, bool)]
    if members and members > 1:
        parts.append(f"K{int(members)}")
    return _UNSAFE.sub("_", "_".join(parts)) or "run"


def free_version(root: str | Path, base: str) -> str:
    """``base`` if ``root/base`` does not exist, else ``base_v1``, ``base_v2``, … (the first free one)."""
    root = Path(root)
    if not (root / base).exists():
        return base
    k = 1
    while (root / f"{base}_v{k}").exists():
        k += 1
    return f"{base}_v{k}"


def name_run(logger: Any, module: Any, datamodule: Any, seed: int | None) -> None:
    """Give ``logger`` (or each logger of a list) whose version is unset the coordinates name of the run.

    Reads α̃, width, depth from the module and its net, n_train from the data module, K from
    ``module.members``; loggers without a ``_version`` attribute (or with one set) are left alone."""
    from lightning_phase.contracts import data_record, phase_module

    loggers = logger if isinstance(logger, (list, tuple)) else [logger]
    m = phase_module(module, "name_run")
    base = coordinates_name(list(m.member_alpha_tilde), m.shape.width, m.shape.depth,
                            data_record(datamodule)["n_train"], seed, m.members)
    for lg in loggers:
        if getattr(lg, "_version", "set") is None and hasattr(lg, "root_dir"):
            lg._version = free_version(lg.root_dir, base)


_TAGS = {"alpha_tilde": "a~", "width": "h", "depth": "L", "n_train": "P", "seed_everything": "s", "seed": "s"}
_ORDER = list(dict.fromkeys(_TAGS.values()))


def trial_name(number: int, params: dict[str, Any]) -> str:
    """A sweep trial's folder: ``trial_<NNNNN>`` and its grid point in the run-name spelling, e.g.
    ``trial_00003_a~10_h8`` for ``{"model.alpha_tilde": 10, "model.net.init_args.width": 8}``; other keys
    as ``<last part of the key><value>``. Unique by the trial number; readable in TensorBoard's run selector."""
    parts: list[tuple[int, str]] = []
    for key, value in params.items():
        last = key.rsplit(".", 1)[-1]
        tag = _TAGS.get(last)
        text = _num(value) if isinstance(value, float) else str(value)
        parts.append((_ORDER.index(tag), tag + text) if tag else (len(_ORDER), f"{last}{text}"))
    tail = "_".join(p for _, p in sorted(parts))
    return _UNSAFE.sub("_", f"trial_{number:05d}" + (f"_{tail}" if tail else ""))


def trial_folder(study_dir: Path, number: int) -> Path | None:
    """The folder of trial ``number`` under a study's run folder (see :func:`trial_name`), or None."""
    exact = study_dir / f"trial_{number:05d}"
    found = [exact] if exact.is_dir() else sorted(study_dir.glob(f"trial_{number:05d}_*"))
    return found[0] if found else None
