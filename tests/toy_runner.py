"""A sweep runner for tests that trains nothing: it reads the trial's base config and overrides and
writes a summary.json at once.

It exercises the sweep machinery (storage, workers, heartbeats, restarts, the threshold search) in
milliseconds. Its "jamming": the net of N = d·h + (L−1)·h² + h parameters fits P points (N_Δ = 0) when
N ≥ P/2 · (1 + 0.1·u), u ∈ [−1, 1] a fixed function of the seed, so N* ∝ P as for random data [JAM].
``model.loss`` = toy_crash / toy_diverge / toy_kill / toy_segv makes a trial raise / diverge / SIGKILL /
SIGSEGV itself;
toy_slow: a fitting run is UNDECIDED below 400 steps (``trainer.max_steps``), SAT from there; toy_undecided:
the runs that do not fit are UNDECIDED (never UNSAT). Otherwise ``fit_state`` is SAT iff N_Δ = 0, else UNSAT;
the environment variable LP_TOY_SLEEP (seconds) makes each trial last that long.
"""

from __future__ import annotations

import faulthandler
import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from lightning_phase.summary import SUMMARY_FILE, config_hash, write_json_atomic


def get_dotted(cfg: dict[str, Any], key: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--a.b.c=value`` → cfg[a][b][c] = YAML value (the test double's stand-in for jsonargparse)."""
    for arg in overrides:
        key, _, text = arg.removeprefix("--").partition("=")
        *parents, last = key.split(".")
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(text)
    return cfg


def toy_n_params(width: int, depth: int, input_dim: int) -> int:
    """N = d·h + (L−1)·h² + h: FC net, no biases (SCIENCE.md §1)."""
    return input_dim * width + (depth - 1) * width**2 + width


def run_toy(base_yaml: Path, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    cfg = apply_overrides(yaml.safe_load(Path(base_yaml).read_text()) or {}, overrides)
    time.sleep(float(os.environ.get("LP_TOY_SLEEP", "0")))
    loss = get_dotted(cfg, "model.loss", "soft_hinge")
    if loss == "toy_crash":
        raise RuntimeError("toy crash requested by model.loss")
    if loss == "toy_kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if loss == "toy_segv":
        faulthandler.disable()   # pytest's handler would print every thread's stack into the test output
        os.kill(os.getpid(), signal.SIGSEGV)
    width = int(get_dotted(cfg, "model.net.init_args.width", 8))
    depth = int(get_dotted(cfg, "model.net.init_args.depth", 2))
    d = int(get_dotted(cfg, "data.input_dim", 10))
    p = int(get_dotted(cfg, "data.n_train", 100))
    seed = int(cfg.get("seed_everything", 0))
    u = int(hashlib.sha256(str(seed).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF * 2 - 1
    n = toy_n_params(width, depth, d)
    n_star = p / 2 * (1 + 0.1 * u)
    n_delta = 0 if n >= n_star else max(1, round(p * (1 - n / n_star)))
    fit_state = "SAT" if n_delta == 0 else "UNSAT"
    budget = int(get_dotted(cfg, "trainer.max_steps", 100))
    if loss == "toy_slow" and n_delta == 0 and budget < 400:
        fit_state = "UNDECIDED"  # fits, but only with ≥ 400 steps
    if loss == "toy_undecided" and n_delta > 0:
        fit_state = "UNDECIDED"  # never converges: the unfitted runs are UNDECIDED at any budget
    summary = {"schema_version": 1, "config": cfg, "config_hash": config_hash(cfg), "n_params": n,
               "width": width, "depth": depth, "fit_state": fit_state,
               "seed": seed, "n_train": p, "n_delta": n_delta, "n_delta_tol": n_delta, "train_loss": n_delta / p,
               "train_error": n_delta / (2 * p), "test_error": 0.5 - 0.4 * min(1.0, n / (4 * p)),
               "steps": 1, "flow_time": 1.0, "wall_seconds": 0.0,
               "stop_reason": "DIVERGED" if loss == "toy_diverge" else
               ("ALL_MARGINS_MET" if n_delta == 0 else "LOSS_STALLED")}
    write_json_atomic(Path(run_dir, SUMMARY_FILE), summary)
    return summary
