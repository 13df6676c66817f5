"""`lightning-phase`: fit / validate / test one run from YAML (LightningCLI); sweep, threshold, results.

Every run — from the command line, a sweep trial or a test — is built here, from one config, so any
trial can be re-run alone with ``lightning-phase fit --config <its config.yaml>``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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
from lightning_phase.callbacks.summary import run_dir
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


# One parser per process, reused by every run: jsonargparse takes ~0.8 s to build it, as long as a short
# sweep trial's training. Sweep workers build it once before forking their trials (``warm_parser``).
_PARSERS: dict[tuple, tuple] = {}


class PhaseCLI(LightningCLI):
    """LightningCLI with the data → net input-dimension link, the stop rules and the run summary.

    ``model`` is PhaseModule by default, or a subclass named by ``class_path`` (e.g. KernelFlow).
    """

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any],
                     subparser_kwargs: dict[str, Any]) -> None:
        key = (add_subcommands, repr(main_kwargs), repr(subparser_kwargs))
        if key not in _PARSERS:
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
            _PARSERS[key] = (self.parser, self.__dict__.get("_subcommand_method_arguments"),
                             self.__dict__.get("_subcommand_parsers"))
        self.parser, method_arguments, subcommand_parsers = _PARSERS[key]
        if add_subcommands:
            self._subcommand_method_arguments, self._subcommand_parsers = method_arguments, subcommand_parsers

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.input_dim", "model.init_args.net.init_args.input_dim", apply_on="instantiate")
        parser.link_arguments("data.out_dim", "model.init_args.net.init_args.out_dim", apply_on="instantiate")
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
        # A net of the wrong shape, or data a callback cannot use, must fail before any run directory exists.
        self.model.check_net(self.datamodule.x_train[:4], self.datamodule.y_train)
        for callback in self.trainer.callbacks:
            if callable(getattr(callback, "check_data", None)):
                callback.check_data(self.datamodule)
        log_dir = run_dir(self.trainer)
        self.log_dir_existed = log_dir is not None and Path(log_dir).exists()

    before_fit = before_validate = before_test = _check_before_run

    def _run_subcommand(self, subcommand: str) -> None:
        self.log_dir_existed = True
        try:
            super()._run_subcommand(subcommand)
        except ConfigError:
            # A run refused for bad input leaves nothing behind (only a directory this run created goes).
            log_dir = run_dir(self.trainer)
            if not self.log_dir_existed and log_dir is not None:
                shutil.rmtree(log_dir, ignore_errors=True)
            raise

    def after_fit(self) -> None:
        summary = next((c for c in self.trainer.callbacks if isinstance(c, RunSummary)), None)
        if summary is not None and summary.path is not None and self.trainer.is_global_zero:
            rec = summary.record or {}
            print(f"\nstop_reason={rec.get('stop_reason')}  n_delta={rec.get('n_delta')}  "
                  f"train_error={rec.get('train_error', float('nan')):.4f}  "
                  f"test_error={rec.get('test_error', float('nan')):.4f}  steps={rec.get('steps')}")
            print(f"summary:     {summary.path}")
            print(f"tensorboard: tensorboard --logdir {summary.path.parent.parent}")


def warm_parser() -> None:
    """Build the CLI parser now (by asking for help, silently), so that forked sweep trials inherit it."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["fit", "--help"])


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
        # load_from_checkpoint_support=False: it re-dumps the whole config per class (~0.3 s a run) so that
        # load_from_checkpoint could rebuild nested classes; runs are rebuilt from config.yaml instead.
        PhaseCLI(PhaseModule, PhaseDataModule, args=argv if given else None, trainer_defaults=TRAINER_DEFAULTS,
                       seed_everything_default=0, save_config_kwargs={"overwrite": True},
                       parser_kwargs={"exit_on_error": False}, auto_configure_optimizers=False,
                       subclass_mode_model=True, load_from_checkpoint_support=False)
    except SystemExit as exc:  # --help, --print_config
        return int(exc.code or 0)
    except (ConfigError, argparse.ArgumentError) as exc:
        print(f"lightning-phase: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        cause = _config_error_cause(exc)  # jsonargparse wraps errors raised while it instantiates a subclass
        if cause is not None:
            print(f"lightning-phase: error: {_one_line(cause)}", file=sys.stderr)
            return 2
        traceback.print_exc()
        return 1
    return 0


def _config_error_cause(exc: BaseException) -> ConfigError | None:
    """The ConfigError in the chain of causes of ``exc``, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ConfigError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


if __name__ == "__main__":
    raise SystemExit(main())
