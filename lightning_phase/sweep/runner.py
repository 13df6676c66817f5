"""Run one trial in its own forked child process, so that a crash, an OOM kill or a hung DDP run takes
down that trial only, never the worker or the study.

A *runner* is a function ``runner(base_yaml, overrides, run_dir) -> summary dict`` that executes in the
child and leaves ``summary.json`` in ``run_dir``; it raises ConfigError on bad input (exit status 2) and
anything else on a crash (1). The default, :func:`run_fit`, is :func:`lightning_phase.run.fit` in-process:
the worker has imported torch and Lightning once (≈5 s, DESIGN.md) and each fork starts with them loaded.
The tests' runner without training lives in ``tests/toy_runner.py``.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from enum import Enum
from multiprocessing.connection import Connection
from multiprocessing.context import ForkProcess
from pathlib import Path
from typing import Any

from lightning_phase.errors import ConfigError
from lightning_phase.summary import SUMMARY_FILE, objective_value

Runner = Callable[[Path, list[str], Path], dict[str, Any]]
LOG_FILE = "trial.log"
DEFAULT_RUNNER = "lightning_phase.sweep.runner:run_fit"


class Outcome(str, Enum):
    """How a trial ended; every FAIL in storage carries one of these as user attr ``fail_reason``."""

    OK = "OK"
    DIVERGED = "DIVERGED"            # summary.stop_reason == DIVERGED (NaN loss)
    BAD_CONFIG = "BAD_CONFIG"        # the run refused its config (exit 2)
    CRASHED = "CRASHED"              # the run raised (exit != 0)
    KILLED = "KILLED"                # the child died of a signal other than SIGKILL (segfault, abort ...)
    NO_SUMMARY = "NO_SUMMARY"        # exit 0 but no readable summary.json
    NO_OBJECTIVE = "NO_OBJECTIVE"    # the objective is missing or NaN in the summary
    STALE = "STALE"                  # the worker's heartbeat stopped (worker killed); retried once
    INTERRUPTED = "INTERRUPTED"      # Ctrl-C / SIGTERM of the sweep; retried on restart
    ENVIRONMENT = "ENVIRONMENT"      # not the run's fault: its result unwritable (disk full), or a SIGKILL
                                     # we did not send (the OOM killer); retried, and again on every rerun
    SURPLUS = "SURPLUS"              # created after the grid was exhausted (a race at the very end); nothing ran


def run_fit(base_yaml: Path, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """:func:`lightning_phase.run.fit` of the base config with the trial's overrides (which send its logs
    and summary.json to ``run_dir``)."""
    from lightning_phase.run import fit

    return fit(base_yaml, overrides)


def load_runner(ref: str) -> Runner:
    """'module:function' → the function (the default runner, or a test's)."""
    module, _, name = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name, None) if name else None
    except ImportError:
        fn = None
    if not callable(fn):
        from lightning_phase.errors import ConfigError

        raise ConfigError("--runner", ref, "module:function naming a callable")
    return fn


def preload(ref: str) -> None:
    """Import what the runner needs before forking, so each trial starts with it loaded."""
    if ref == DEFAULT_RUNNER:
        from lightning_phase.run import warm_parser  # torch, Lightning, the package: the ~5 s import

        warm_parser()  # and the ~0.8 s parser, built once here instead of in every trial


def warm_build(ref: str, base_yaml: Path, overrides: list[str]) -> None:
    """For the default runner: build one trial's run in this process (no logger, nothing written, no training;
    RNG states and ``PL_GLOBAL_SEED`` put back), so that the trials forked later inherit what a build caches —
    jsonargparse's parsers of the classes the config names, the modules they import — instead of each trial
    paying for it (~0.15 s a trial). A failure here is ignored: the config check reports bad input."""
    if ref != DEFAULT_RUNNER:
        return
    from pytorch_lightning.utilities.seed import isolate_rng

    from lightning_phase.run import build

    seed_env = os.environ.get("PL_GLOBAL_SEED")
    try:
        with isolate_rng():
            build(base_yaml, [*overrides, "--trainer.logger=false", "--trainer.enable_progress_bar=false"])
    except Exception:  # a warm-up only
        pass
    finally:
        if seed_env is None:
            os.environ.pop("PL_GLOBAL_SEED", None)
        else:
            os.environ["PL_GLOBAL_SEED"] = seed_env


def check_configs(ref: str, base_yaml: Path, trials: list[list[str]], log_path: Path) -> str | None:
    """For the default runner: build (without training, nothing written) the run of each trial's overrides,
    in a forked child; the one-line error of the first refused one, else None."""
    if ref != DEFAULT_RUNNER:
        return None
    proc = start_child(_build_all, base_yaml, trials, log_path.parent, threads=1, log_path=log_path)
    proc.join()
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    log_path.unlink(missing_ok=True)
    return None if proc.exitcode == 0 else (lines[-1] if lines else f"exit status {proc.exitcode}")


def _build_all(base_yaml: Path, trials: list[list[str]], run_dir: Path) -> dict[str, Any]:
    from lightning_phase.run import BadInput, build, one_line

    for overrides in trials:
        try:
            build(base_yaml, [*overrides, "--trainer.logger=false", "--trainer.enable_progress_bar=false"])
        except ConfigError as exc:
            point = " ".join(a for a in overrides if not a.startswith(("--trainer.logger=", "--trainer.enable_prog")))
            raise BadInput(f"{one_line(exc)} [trial {point}]") from None
    return {}


def _set_parent_death_signal() -> None:
    """Linux: the kernel SIGKILLs this process when its parent (the worker) dies, so no orphan runs on."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _child(runner: Runner, base_yaml: Path, overrides: list[str], run_dir: Path, log_path: str, threads: int,
           result=None) -> None:
    _set_parent_death_signal()
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the worker decides what Ctrl-C means for a trial
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)  # noqa: SIM115 (lives until _exit)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    code = 1
    try:
        runner(base_yaml, overrides, run_dir)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except ConfigError as exc:
        print(f"lightning-phase: error: {' '.join(str(exc).split())}")
        code = 2
    except OSError as exc:   # ResultNotWritten (its record goes to the worker), or ENOSPC elsewhere
        record = getattr(exc, "record", None)
        if result is not None and record:
            try:
                result.send(record)
            except (OSError, ValueError):
                pass
        print(f"lightning-phase: error: {type(exc).__name__}: {exc}")
        code = 3
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)  # no atexit, no finalisers: never touch the worker's inherited storage connections


class TrialProcess(ForkProcess):
    """A forked trial child; ``result`` receives the record of a run whose summary.json could not be written."""

    result: Connection


def start_child(runner: Callable, base_yaml: Path, overrides: Any, run_dir: Path, threads: int = 1,
                log_path: Path | None = None) -> TrialProcess:
    """Fork a child that runs ``runner(base_yaml, overrides, run_dir)``; returns the (started) Process."""
    log = str(log_path or run_dir / LOG_FILE)
    recv, send = multiprocessing.Pipe(duplex=False)
    proc = TrialProcess(target=_child, args=(runner, Path(base_yaml), overrides, Path(run_dir), log, threads, send),
                        daemon=False)
    proc.result = recv   # the record of a run whose summary.json could not be written (exit status 3)
    proc.start()
    send.close()
    return proc


def stop_child(proc) -> None:
    """SIGKILL the child and reap it."""
    if proc.is_alive():
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.join()


def classify(exitcode: int | None, run_dir: Path, objective: str) -> tuple[Outcome, dict[str, Any], float | None, str]:
    """(outcome, summary, objective value, one-line reason) of a finished child."""
    summary: dict[str, Any] = {}
    path = run_dir / SUMMARY_FILE
    if path.is_file():
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            summary = {}
    if exitcode is None or exitcode < 0:
        sig = -(exitcode or 0)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        # The worker SIGKILLs a child only when it is interrupted, and then records INTERRUPTED without
        # asking here: a SIGKILL seen here came from outside, in practice the kernel's OOM killer.
        outcome = Outcome.ENVIRONMENT if sig == signal.SIGKILL else Outcome.KILLED
        return outcome, summary, None, f"the trial process died of signal {name}" + _tail(run_dir)
    if exitcode == 3:
        return Outcome.ENVIRONMENT, summary, None, "the run could not write its result" + _tail(run_dir)
    if exitcode == 2:
        return Outcome.BAD_CONFIG, summary, None, "the run refused its config" + _tail(run_dir)
    if exitcode != 0:
        return Outcome.CRASHED, summary, None, f"the run exited with status {exitcode}" + _tail(run_dir)
    if not summary:
        return Outcome.NO_SUMMARY, summary, None, f"no readable {path}"
    if summary.get("stop_reason") == "DIVERGED":
        return Outcome.DIVERGED, summary, None, "the loss diverged (NaN)"
    value = objective_value(summary, objective)
    if value is None or value != value:
        return Outcome.NO_OBJECTIVE, summary, None, f"summary has no finite {objective!r}"
    return Outcome.OK, summary, value, ""


def _tail(run_dir: Path) -> str:
    """': <last non-empty line of trial.log>' (the error message, usually)."""
    try:
        lines = [ln.strip() for ln in (run_dir / LOG_FILE).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f": {lines[-1][:300]}" if lines else ""

