"""A sweep runner for the resume test: the real ``run.fit``, except that a trial's first attempt (no
``--ckpt_path``) SIGKILLs its own process at step ``KILL_STEP`` — the OOM killer, after a checkpoint."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lightning_phase.sweep.runner import run_fit

KILL_STEP = 14


class KillAt(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def run_fit_killed_once(base_yaml: Path, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    if any(o.startswith("--ckpt_path=") for o in overrides):
        return run_fit(base_yaml, overrides, run_dir)   # the retry: exactly the default runner
    from lightning_phase.run import build

    run = build(base_yaml, overrides)
    run.trainer.callbacks.append(KillAt(KILL_STEP))    # after the checkpoint callback
    run.trainer.fit(run.module, datamodule=run.datamodule)
    raise AssertionError(f"not killed at step {KILL_STEP}")
