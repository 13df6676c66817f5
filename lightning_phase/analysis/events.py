"""TensorBoard event files of a run, read back as numpy arrays (for dynamics figures).

Scalars are stored as float32 by TensorBoard: good for figures, not for fits that need float64 (those
read summary.json and outputs.npz). Imports tensorboard's reader only (≈1.5 s), never torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FLOW_TIME_TAGS = ("time/flow_time", "dynamics/time")   # step → t, logged by TimeScale / DynamicsLogger


Curves = dict[str, tuple[np.ndarray, np.ndarray]]


def read_scalars(run_dir: str | os.PathLike, tags: Sequence[str] | None = None) -> Curves:
    """tag → (steps (n,) int64, values (n,) float64) of every scalar (or of ``tags``) in ``run_dir``'s
    event files (last value kept where a step was logged twice). {} where there are no event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for f in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tags is None or tag in tags:
                out.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return {tag: (np.array(sorted(d), dtype=np.int64), np.array([d[s] for s in sorted(d)], dtype=np.float64))
            for tag, d in out.items()}


def against_flow_time(scalars: Curves, tags: Sequence[str]) -> Curves:
    """tag → (t, values): each tag's steps mapped to flow time t by interpolating the run's own step → t
    record (``time/flow_time`` or ``dynamics/time``). {} when the run logged no flow time."""
    clock = next((scalars[k] for k in FLOW_TIME_TAGS if k in scalars and len(scalars[k][0]) > 1), None)
    if clock is None:
        return {}
    steps, t = clock
    return {tag: (np.interp(scalars[tag][0], steps, t), scalars[tag][1]) for tag in tags if tag in scalars}
