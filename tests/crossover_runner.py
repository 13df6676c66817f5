"""A crossover test double: the kernel change of a run is (α̃/α̃*(h))^-1 on the lazy side and ^-4/3 on the
feature side, with α̃*(h) = 6 (h < 1000) or 10⁶ (h ≥ 1000: never crosses in a search up to 10⁴)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from toy_runner import apply_overrides, get_dotted

from lightning_phase.summary import SUMMARY_FILE, config_hash, write_json_atomic


def star(width: int) -> float:
    return 6.0 if width < 1000 else 1e6


def run_kernel(base_yaml: Path, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    cfg = apply_overrides(yaml.safe_load(Path(base_yaml).read_text()) or {}, overrides)
    h = int(get_dotted(cfg, "model.net.init_args.width"))
    a = float(get_dotted(cfg, "model.alpha_tilde"))
    x = a / star(h)
    summary = {"schema_version": 1, "config": cfg, "config_hash": config_hash(cfg), "width": h, "alpha_tilde": a,
               "ntk_rel_change": x ** (-1.0 if x >= 1 else -4 / 3), "stop_reason": "ALL_MARGINS_MET"}
    write_json_atomic(Path(run_dir, SUMMARY_FILE), summary)
    return summary
