"""Finding a run's folder the way a user would: from what the run wrote, never by guessing its name."""

from __future__ import annotations

import json
from pathlib import Path


def run_dir_in(parent: str | Path) -> Path:
    """The one run under ``parent`` (``runs/<name>``): the ``run_dir`` of its summary.json, checked to be that
    summary's own folder. Fails when ``parent`` holds no run or several."""
    (summary,) = Path(parent).glob("*/summary.json")
    run = Path(json.loads(summary.read_text())["run_dir"])
    assert run.resolve() == summary.parent.resolve(), (run, summary)
    return run
