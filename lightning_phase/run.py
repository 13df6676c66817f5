"""The one config → objects path: ``build_run`` and ``fit``; the ``fit`` / ``validate`` / ``test`` commands.

Every run — from the command line, a sweep trial, a test or a notebook — is built here from one config
plus overrides the jsonargparse way (``--model.alpha_tilde=100``), so any run's ``config.yaml`` is a sweep
base and any trial re-runs alone with ``lightning-phase fit --config <its config.yaml>``::

    from lightning_phase.run import build_run, fit
    dm, module, trainer = build_run("configs/quickstart.yaml", ["--trainer.max_steps=50"])
    summary = fit("configs/quickstart.yaml", ["--model.alpha_tilde=100"])   # the summary.json record

Trainer callbacks are assembled in :meth:`PhaseCLI._instantiate_trainer` (the progress bar, the run
summary; the stop rules come from the config's ``stop:`` section).
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import yaml
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lightning_phase.callbacks import RunSummary, StepProgressBar, StopRules
from lightning_phase.callbacks.checkpoint import PeriodicCheckpoint
from lightning_phase.callbacks.flow_time import FlowTimeScalars
from lightning_phase.callbacks.summary import run_dir
from lightning_phase.contracts import ChecksData, trainer_callbacks
from lightning_phase.data import PhaseDataModule
from lightning_phase.errors import ConfigError
from lightning_phase.module import PhaseModule
from lightning_phase.run_name import name_run

Config = str | Path | dict[str, Any] | None

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
_PARSERS: dict[tuple, Any] = {}


class BadInput(ConfigError):
    """A refused command line or config (jsonargparse's message, on one line)."""

    def __init__(self, message: str):
        self.field, self.value, self.expected = "", None, ""
        ValueError.__init__(self, message)


class ResultNotWritten(OSError):
    """The run finished but its summary.json could not be written (an environment failure: ENOSPC ...);
    ``record`` holds what it would have contained. Exit status 3; a sweep retries such a trial."""

    def __init__(self, reason: str, record: dict[str, Any]):
        super().__init__(f"summary.json could not be written: {reason}")
        self.record = record


EXIT_ENVIRONMENT = 3


class PhaseCLI(LightningCLI):
    """LightningCLI (``run=False``: it only builds) with the data → net input-dimension link, the stop rules,
    ``ckpt_path`` and the run summary. ``model`` is PhaseModule or a subclass named by ``class_path``."""

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any],
                     subparser_kwargs: dict[str, Any]) -> None:
        key = (add_subcommands, repr(main_kwargs), repr(subparser_kwargs))
        if key not in _PARSERS:
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
            _PARSERS[key] = self.parser
        self.parser = _PARSERS[key]

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.input_dim", "model.init_args.net.init_args.input_dim", apply_on="instantiate")
        parser.link_arguments("data.out_dim", "model.init_args.net.init_args.out_dim", apply_on="instantiate")
        parser.add_lightning_class_args(StopRules, "stop")
        parser.add_lightning_class_args(PeriodicCheckpoint, "checkpoint")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="checkpoint to resume `fit` from (or to evaluate in validate/test)")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> pl.Trainer:
        callbacks = list(callbacks)
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in list(callbacks) + list(config.get("callbacks") or [])
        ):
            # First in the list: its on_train_end shows the final values and "measuring" before the
            # end-of-run measurements (Hessian, margins) run.
            given = config.get("callbacks")
            config["callbacks"] = [StepProgressBar()] + (list(given) if isinstance(given, list)
                                                        else [] if given is None else [given])
        resolved = self.config.clone()
        resolved.pop("config", None)
        # fit --ckpt_path <run>/checkpoints/last.ckpt continues in <run>, not in a new folder
        resume_in_run_dir(config.get("logger"), resolved.get("ckpt_path"))
        # runs/<name>/a~1_h64_L2_P500_s0 rather than version_N: TensorBoard's run selector shows the coordinates
        name_run(config.get("logger"), self.model, self.datamodule, resolved.get("seed_everything"))
        callbacks.append(FlowTimeScalars())  # TensorBoard curves against t (no-op without a TensorBoardLogger)
        callbacks.append(RunSummary(config=resolved.as_dict(), seed=resolved.get("seed_everything")))
        return super()._instantiate_trainer(config, callbacks)


def checkpoint_run_dir(ckpt_path: str | None) -> Path | None:
    """The run dir of a checkpoint ``<run dir>/checkpoints/<file>.ckpt`` (None for a checkpoint elsewhere)."""
    if not ckpt_path:
        return None
    path = Path(ckpt_path)  # as given (a relative run dir stays relative), resolved only where it must be
    if path.parent.name != "checkpoints":
        path = path.resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def resume_in_run_dir(logger: Any, ckpt_path: str | None) -> None:
    """Point a TensorBoardLogger whose version is not set in the config at the run dir of ``ckpt_path``, so
    that a resumed run writes into its own folder: TensorBoard reads the new events file beside the old
    ones, summary.json and config.yaml are overwritten at the end, checkpoints/last.ckpt is updated. A
    version set in the config (sweep trials: ``trial_NNNNN_<grid point>``) is kept."""
    from pytorch_lightning.loggers import TensorBoardLogger

    run = checkpoint_run_dir(ckpt_path)
    loggers = logger if isinstance(logger, (list, tuple)) else [logger]
    for lg in loggers:
        if run is not None and isinstance(lg, TensorBoardLogger) and lg._version is None:
            lg._root_dir, lg._name, lg._version = str(run.parent.parent), run.parent.name, run.name


class _SaveChecked:
    """The CLI's parser whose ``save`` skips re-validating the config that parsing has just validated
    (jsonargparse re-checks every typed value when it dumps: ~0.1 s of each run's set-up)."""

    def __init__(self, parser: Any):
        self._parser = parser

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)

    def save(self, *args: Any, **kwargs: Any) -> None:
        self._parser.save(*args, skip_validation=True, **kwargs)


class SaveResolvedConfig(SaveConfigCallback):
    """Lightning's ``config.yaml`` writer, without the second validation (see :class:`_SaveChecked`)."""

    def __init__(self, parser: Any, config: Any, *args: Any, **kwargs: Any):
        # a proxy with the parser's interface (only its save differs)
        super().__init__(cast(LightningArgumentParser, _SaveChecked(parser)), config, *args, **kwargs)


@dataclass
class Run:
    """A built run: the three Lightning objects and the resolved config (``ckpt_path`` included)."""

    datamodule: PhaseDataModule
    module: PhaseModule
    trainer: pl.Trainer
    config: dict[str, Any]

    @property
    def ckpt_path(self) -> str | None:
        return self.config.get("ckpt_path")


def config_args(config: Config = None, overrides: Sequence[str] = ()) -> list[str]:
    """The argument list of a run: ``--config <file or YAML text>`` then the overrides, in order (a nested
    ``--key=null`` as a config fragment: :func:`null_overrides`)."""
    args: list[str] = []
    if isinstance(config, dict):
        args += ["--config", yaml.safe_dump(config, sort_keys=False)]
    elif config is not None:
        args += ["--config", str(config)]
    return args + null_overrides([str(a) for a in overrides])


_NULLS = ("null", "Null", "NULL", "~")


def null_overrides(args: list[str]) -> list[str]:
    """``--a.b.c=null`` (or ``--a.b.c null``) with two dots or more → ``--config '{a: {b: {c: null}}}'``.

    jsonargparse (4.53) passes a nested override into a class argument on as ``--c=<value>`` formatted with
    ``str``, so an already parsed null arrives as the string 'None' and ``--model.net.init_args.seed=null``
    fails ("got 'None'; expected an int or null"). A config fragment carries a real null and is merged in
    order, like the override it replaces."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        key, value, used = None, None, 1
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif arg.startswith("--") and i + 1 < len(args) and args[i + 1] in _NULLS:
            key, value, used = arg[2:], args[i + 1], 2
        if key is not None and value is not None and value.strip() in _NULLS and key.count(".") >= 2:
            fragment: Any = None
            for part in reversed(key.split(".")):
                fragment = {part: fragment}
            out += ["--config", yaml.safe_dump(fragment)]
        else:
            out += args[i:i + used]
        i += used
    return out


def _cli(args: list[str], prog: str = "lightning-phase fit", given: Sequence[str] | None = None) -> PhaseCLI:
    """The PhaseCLI of ``args``; ``given``: the arguments as the user wrote them (named in error messages)."""
    quiet_lightning()
    try:
        # load_from_checkpoint_support=False: it re-dumps the whole config per class (~0.3 s a run) so that
        # load_from_checkpoint could rebuild nested classes; runs are rebuilt from config.yaml instead.
        return PhaseCLI(PhaseModule, PhaseDataModule, args=args, run=False, trainer_defaults=TRAINER_DEFAULTS,
                        seed_everything_default=0, save_config_kwargs={"overwrite": True},
                        save_config_callback=SaveResolvedConfig,
                        parser_kwargs={"exit_on_error": False, "prog": prog, "allow_abbrev": False},
                        auto_configure_optimizers=False, subclass_mode_model=True, load_from_checkpoint_support=False)
    except argparse.ArgumentError as exc:
        raise BadInput(reshape_error(one_line(exc), args if given is None else list(given))) from None
    except (ConfigError, SystemExit):
        raise
    except Exception as exc:
        cause = config_error_cause(exc)  # jsonargparse wraps errors raised while it instantiates a subclass
        if cause is not None:
            raise cause from None
        if isinstance(exc, (ValueError, TypeError)) or type(exc).__name__ == "MisconfigurationException":
            # raised by a class the config names (Trainer, seed_everything, an optimiser) while it is built
            raise BadInput(f"the config could not be built: {one_line(exc)}") from None
        raise


def build(config: Config = None, overrides: Sequence[str] = (), prog: str = "lightning-phase fit") -> Run:
    """:func:`build_run`, keeping the resolved config. Raises ConfigError on bad input, before any run dir."""
    cli = _cli(config_args(config, overrides), prog, given=[str(a) for a in overrides])
    ckpt = cli.config.get("ckpt_path")
    if ckpt is not None and not Path(ckpt).is_file():
        raise ConfigError("ckpt_path", ckpt, "an existing checkpoint file")
    if ckpt is not None:   # Lightning loads the weights before it converts the module to the run's precision:
        from lightning_phase.data.datamodule import precision_dtype  # float64 weights into float32 would round

        cli.model.to(precision_dtype(cli.trainer.precision))
    # A net of the wrong shape, an optimiser refusing its arguments, or data a callback cannot use must fail
    # before any run directory exists.
    cli.model.check_net(cli.datamodule.x_train[:4], cli.datamodule.y_train)
    check_optimizer(cli.model)
    for callback in trainer_callbacks(cli.trainer):
        if isinstance(callback, ChecksData):
            callback.check_data(cli.datamodule)
    resolved = cli.config.clone()
    resolved.pop("config", None)
    return Run(cli.datamodule, cli.model, cli.trainer, resolved.as_dict())


def check_optimizer(module: pl.LightningModule) -> None:
    """Build the module's optimiser once on a dummy parameter (then drop it): torch's own argument checks
    (lr < 0, betas, eps, ...) run here, not after the run dir exists; a learning rate of 0 (which trains
    nothing) is refused too. The module's own parameters may not exist yet (KernelFlow builds at setup)."""
    import torch

    if not isinstance(module, PhaseModule):
        return
    factory = module.optimizer_factory
    try:
        opt = factory([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))])
    except (ValueError, TypeError) as exc:
        raise ConfigError("model.optimizer", one_line(exc), "arguments the optimiser accepts") from None
    for group in getattr(opt, "param_groups", []):
        lr = group.get("lr")
        if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr == 0:
            raise ConfigError("model.optimizer.init_args.lr", lr, "a learning rate > 0 (0 trains nothing)")


def build_run(config: Config = None, overrides: Sequence[str] = ()) -> tuple[PhaseDataModule, PhaseModule, pl.Trainer]:
    """(datamodule, module, trainer) of the run described by ``config`` (a YAML path, a mapping or None)
    with ``overrides`` (``["--model.alpha_tilde=100", ...]``) applied on top, in order. Nothing is written.
    Raises :class:`ConfigError` (one line: field, value, accepted) on bad input."""
    run = build(config, overrides)
    return run.datamodule, run.module, run.trainer


def _execute(run: Run, stage: str) -> dict[str, Any]:
    """trainer.<stage>(module, datamodule); a run refused for bad input leaves nothing behind."""
    log_dir = run_dir(run.trainer)
    existed = log_dir is None or Path(log_dir).exists()
    try:
        getattr(run.trainer, stage)(run.module, datamodule=run.datamodule, ckpt_path=run.ckpt_path)
    except ConfigError:
        if not existed and log_dir is not None:
            shutil.rmtree(log_dir, ignore_errors=True)
        raise
    summary = next((c for c in trainer_callbacks(run.trainer) if isinstance(c, RunSummary)), None)
    if summary is not None and summary.write_error is not None:
        raise ResultNotWritten(summary.write_error, dict(summary.record or {}))
    return dict(summary.record or {}) if summary is not None else {}


def fit(config: Config = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Build and train one run; returns its summary record (the content of summary.json; empty without a
    logger, which is where the run directory comes from)."""
    return _execute(build(config, overrides), "fit")


def warm_parser() -> None:
    """Build the parser now (``--help``, silently), so that forked sweep trials inherit it."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main_fit(["--help"])


# ---- the commands -------------------------------------------------------------------------------
def _command(stage: str, argv: list[str]) -> int:
    run = None
    try:
        run = build(None, argv, prog=f"lightning-phase {stage}")
        record = _execute(run, stage)
    except SystemExit as exc:  # --help, --print_config; Lightning's way out after Ctrl-C or SIGTERM
        if run is not None and run.trainer.interrupted:
            sigterm = type(exc).__name__ == "SIGTERMException"
            where = run_dir(run.trainer)
            print(f"lightning-phase: {stage} interrupted by {'SIGTERM' if sigterm else 'Ctrl-C'} "
                  f"(stop_reason INTERRUPTED{f' in {where}/summary.json' if where else ''})", file=sys.stderr)
            return 143 if sigterm else 130
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 2
    except ConfigError as exc:
        print(f"lightning-phase: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except ResultNotWritten as exc:   # the record itself was printed by RunSummary
        print(f"lightning-phase: error: {exc} (free space and run it again)", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except Exception:
        traceback.print_exc()
        return 1
    if stage == "fit" and record and run.trainer.is_global_zero:
        print(f"\nfit_state={record.get('fit_state')}  stop_reason={record.get('stop_reason')}  "
              f"n_delta={record.get('n_delta')}  n_delta_tol={record.get('n_delta_tol')}  "
              f"train_error={_num(record.get('train_error')):.4f}  test_error={_num(record.get('test_error')):.4f}  "
              f"steps={record.get('steps')}")
        path = Path(run_dir(run.trainer) or ".") / "summary.json"
        print(f"summary:     {path}")
        print(f"tensorboard: tensorboard --logdir {path.parent.parent}")
    return 0


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) else float("nan")


def main_fit(argv: list[str]) -> int:
    """``lightning-phase fit --config run.yaml [--key=value ...]``: train one run, write its run dir."""
    return _command("fit", argv)


def main_validate(argv: list[str]) -> int:
    """``lightning-phase validate --config run.yaml [--key=value ...]``."""
    return _command("validate", argv)


def main_test(argv: list[str]) -> int:
    """``lightning-phase test --config run.yaml [--key=value ...]``."""
    return _command("test", argv)


# ---- helpers ------------------------------------------------------------------------------------
def one_line(exc: BaseException) -> str:
    """jsonargparse nests its messages over several lines: keep them on one."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


_KEY_RE = re.compile(r"(?:Option|Key) '?\"?([\w.]+)'?\"? is not (?:accepted|expected)")
_GIVEN_RE = re.compile(r"Parser key \"([\w.]+)\": (?:(?!Parser key).)*?Expected a <class '(?!NoneType)(\w+)'>"
                       r".*?Given value: (\S+)")
_NO_CLASS_RE = re.compile(r"Parser key \"([\w.]+)\": (?:(?!Parser key).)*?must include a class_path")


def reshape_error(message: str, args: Sequence[str]) -> str:
    """jsonargparse's nested union message → ``field: got X; expected Y`` (+ did you mean), the field named
    by its YAML key as given on the command line or in the config; the raw message when no pattern fits."""
    import difflib

    overrides = [a.removeprefix("--").split("=", 1) for a in args if a.startswith("--") and "=" in a]
    unknown = _KEY_RE.search(message) or re.search(r"nrecognized arguments: --([\w.]+)", message)
    if unknown:
        name = unknown.group(1)
        field = next((k for k, _ in overrides if k == name or k.endswith("." + name)), name)
        section = field.rsplit(".", 1)[0] if "." in field else ""
        choices = _known_keys(section)
        close = difflib.get_close_matches(field.rsplit(".", 1)[-1], choices, n=1)
        hint = f" (did you mean {section + '.' if section else ''}{close[0]}?)" if close else ""
        return f"{field}: got an unknown key; expected one of the keys of {section or 'the config'}{hint}"
    no_class = _NO_CLASS_RE.search(message)
    if no_class:
        name = no_class.group(1)
        field = next((k for k, _ in overrides if k.split(".init_args.")[0].endswith(name)), name)
        section = field.split(".init_args.")[0]
        return (f"{field}: got init_args without a class; expected {section}'s class_path first "
                f"(e.g. --{section}=torch.optim.SGD)" if "optim" in section else
                f"{field}: got init_args without a class; expected {section}'s class_path first")
    given = _GIVEN_RE.search(message)
    if given:
        name, typ, value = given.groups()
        field = next((k for k, _ in overrides if k == name or k.endswith("." + name)), name)
        return f"{field}: got {value!r}; expected a {typ}" + (" or null" if "NoneType" in message else "")
    return message


def _known_keys(section: str) -> list[str]:
    """Parameter names of the class behind a config section (model, data, trainer, stop), for did-you-mean."""
    import inspect

    cls = {"model": PhaseModule, "data": PhaseDataModule, "trainer": pl.Trainer, "stop": StopRules}.get(section)
    if cls is None:
        return ["seed_everything", "trainer", "model", "data", "stop", "ckpt_path"] if not section else []
    return list(inspect.signature(cls).parameters)


def config_error_cause(exc: BaseException | None) -> ConfigError | None:
    """The ConfigError in the chain of causes of ``exc``, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ConfigError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def quiet_lightning() -> None:
    """Silence start-up chatter and the warnings that full-batch training triggers by design."""
    for name in ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda",
                 "lightning_fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # jsonargparse's null logger has no level and no parent, so each of its ~60 debug calls per parse builds a
    # log record for a NullHandler (~5 % of a parse): let it drop them at the door.
    logging.getLogger("jsonargparse_null_logger").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
    warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
