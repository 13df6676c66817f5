"""`lightning-phase`: fit / validate / test one run from YAML (LightningCLI); sweep, threshold, results.

Every run — from the command line, a sweep trial or a test — is built here, from one config, so any
trial can be re-run alone with ``lightning-phase fit --config <its config.yaml>``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.cli import LightningCLI

from lightning_phase.callbacks import RunSummary, StepProgressBar, StopRules
from lightning_phase.data import PhaseDataModule
from lightning_phase.errors import ConfigError
from lightning_phase.module import PhaseModule

SWEEP_COMMANDS = ("sweep", "threshold", "results")

# Full batch means one step per epoch: per-epoch machinery (checkpoints, validation, sanity checks)
# would otherwise run every step. Validation every 100 steps; the summary measures the final test error.
TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": -1,
    "max_steps": 10_000,
    "precision": "64-true",
    "enable_checkpointing": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
    "check_val_every_n_epoch": 100,
    "log_every_n_steps": 10,
    "logger": {
        "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "lightning_phase", "default_hp_metric": False},
    },
}


class PhaseCLI(LightningCLI):
    """LightningCLI with the data → net input-dimension link, the stop rules and the run summary."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.input_dim", "model.net.init_args.input_dim", apply_on="instantiate")
        parser.add_lightning_class_args(StopRules, "stop")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        callbacks = list(callbacks)
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in list(callbacks) + list(config.get("callbacks") or [])
        ):
            callbacks.append(StepProgressBar())
        resolved = self.config[self.subcommand].clone()
        resolved.pop("config", None)
        callbacks.append(RunSummary(config=resolved.as_dict(), seed=resolved.get("seed_everything")))
        return super()._instantiate_trainer(config, callbacks)

    def _check_before_run(self) -> None:
        # A net of the wrong shape must fail before any run directory exists.
        self.model.check_net(self.datamodule.x_train[:4])
        self.log_dir_existed = self.trainer.log_dir is not None and Path(self.trainer.log_dir).exists()

    before_fit = before_validate = before_test = _check_before_run

    def _run_subcommand(self, subcommand: str) -> None:
        self.log_dir_existed = True
        try:
            super()._run_subcommand(subcommand)
        except ConfigError:
            # A run refused for bad input leaves nothing behind (only a directory this run created goes).
            if not self.log_dir_existed and self.trainer.log_dir is not None:
                shutil.rmtree(self.trainer.log_dir, ignore_errors=True)
            raise

    def after_fit(self) -> None:
        summary = next((c for c in self.trainer.callbacks if isinstance(c, RunSummary)), None)
        if summary is not None and summary.path is not None and self.trainer.is_global_zero:
            rec = summary.record or {}
            print(f"\nstop_reason={rec.get('stop_reason')}  n_delta={rec.get('n_delta')}  "
                  f"train_error={rec.get('train_error', float('nan')):.4f}  "
                  f"test_error={rec.get('test_error', float('nan')):.4f}  steps={rec.get('steps')}")
            print(f"summary:     {summary.path}")
            print(f"tensorboard: tensorboard --logdir {Path(self.trainer.log_dir).parent}")


def _one_line(exc: BaseException) -> str:
    """jsonargparse nests its messages over several lines: keep them on one."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def _quiet_lightning() -> None:
    """Silence start-up chatter and the warnings that full-batch training triggers by design."""
    for name in ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda",
                 "lightning_fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
    warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lightning-phase``; returns the exit code (2: bad input, 1: crash)."""
    given = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SWEEP_COMMANDS:
        from lightning_phase.sweep.commands import main as sweep_main

        return sweep_main(argv)
    _quiet_lightning()
    try:
        PhaseCLI(PhaseModule, PhaseDataModule, args=argv if given else None, trainer_defaults=TRAINER_DEFAULTS,
                       seed_everything_default=0, save_config_kwargs={"overwrite": True},
                       parser_kwargs={"exit_on_error": False}, auto_configure_optimizers=False)
    except SystemExit as exc:  # --help, --print_config
        return int(exc.code or 0)
    except (ConfigError, argparse.ArgumentError) as exc:
        print(f"lightning-phase: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
