"""One contract, checked on every callback of lightning_phase.callbacks (as scikit-learn's estimator checks
run on every estimator): its state survives a checkpoint round trip, its ``state_key`` is its own, it logs
nothing on a rank other than 0, and every summary.json field it writes is documented in docs/summary.md."""

from __future__ import annotations

import importlib
import inspect
import io
import math
import pkgutil
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY_CALLBACKS, tiny_config
from pytorch_lightning.loggers import TensorBoardLogger

import lightning_phase.callbacks as callbacks_pkg
from lightning_phase import run
from lightning_phase.callbacks.schedule import ScheduledCallback

DOCS = Path(__file__).resolve().parents[1] / "docs" / "summary.md"


def all_callback_classes() -> list[type[pl.Callback]]:
    """Every pl.Callback class defined in a module of lightning_phase.callbacks (the abstract base
    ScheduledCallback aside)."""
    out = []
    for info in pkgutil.iter_modules(callbacks_pkg.__path__):
        mod = importlib.import_module(f"lightning_phase.callbacks.{info.name}")
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if issubclass(cls, pl.Callback) and cls.__module__ == mod.__name__ and cls is not ScheduledCallback:
                out.append(cls)
    return sorted(out, key=lambda c: c.__name__)


CLASSES = all_callback_classes()


def _init_args(cls: type) -> dict[str, Any]:
    """The arguments the tiny run gave ``cls`` (TINY_CALLBACKS, its ``checkpoint:`` section), else {}."""
    for spec in TINY_CALLBACKS:
        if spec["class_path"].rsplit(".", 1)[-1] == cls.__name__:
            return dict(spec.get("init_args") or {})
    return {"every_n_steps": 2} if cls.__name__ == "PeriodicCheckpoint" else {}


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Equal nested state: dicts, lists, tensors (exactly), floats (NaN equals NaN), enums by value."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: {b!r} is not NaN"
    else:
        a = a.value if isinstance(a, Enum) else a
        b = b.value if isinstance(b, Enum) else b
        assert a == b, f"{where}: {a!r} != {b!r}"


def documented_fields() -> set[str]:
    """The field names of docs/summary.md's tables (first column, in backticks; a row may list several)."""
    fields = set()
    for line in DOCS.read_text().splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            fields.update(re.findall(r"`([A-Za-z0-9_]+)`", cells[1]))
    return fields


def test_the_tiny_run_holds_every_callback(tiny_run):
    """The shared tiny run (tests/conftest.py) has one of each class, so each check below sees one fitted."""
    have = {type(c) for c in tiny_run.trainer.callbacks}
    assert [c.__name__ for c in CLASSES if c not in have] == []
    assert len(CLASSES) >= 13  # discovery works: the package has at least these many callbacks
    assert tiny_run.summary["status"] == "completed" and tiny_run.summary["steps"] == 4


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_state_dict_round_trips_through_a_checkpoint(cls, tiny_run):
    """A fresh instance with the same arguments, loaded with the fitted one's state (through torch.save and
    torch.load, as a checkpoint carries it), has the same state."""
    state = tiny_run.callback(cls).state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    fresh = cls(**_init_args(cls))
    fresh.load_state_dict(torch.load(buf, weights_only=False))
    assert_same(fresh.state_dict(), state, cls.__name__)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_state_key_is_its_own(cls, tiny_run):
    """No two callbacks of the run share a state_key (a checkpoint keeps one state per key)."""
    mine = tiny_run.callback(cls)
    others = [c.state_key for c in tiny_run.trainer.callbacks if c is not mine]
    assert mine.state_key not in others


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_summary_field_is_documented(cls, tiny_run):
    """Every field the callback adds to summary.json has a row in docs/summary.md."""
    cb = tiny_run.callback(cls)
    fields = set(cb.summary()) if callable(getattr(cb, "summary", None)) else set()
    if cls.__name__ == "RunSummary":
        fields = set(tiny_run.summary)
    assert sorted(fields - documented_fields()) == []


# ---- nothing logged on rank ≠ 0 --------------------------------------------------------------------------
class _Recorder:
    """Stands in for the SummaryWriter: records each call with the callback that made it."""

    def __init__(self, log: list[tuple[str, str]]):
        self._log = log

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            self._log.append((_calling_callback(), f"experiment.{name}({args[0] if args else ''})"))
        return call


def _calling_callback() -> str:
    """The class name of the lightning_phase callback whose method is on the call stack, else 'other'."""
    frame = sys._getframe(2)
    while frame is not None:
        obj = frame.f_locals.get("self")
        if isinstance(obj, pl.Callback) and type(obj).__module__.startswith("lightning_phase.callbacks"):
            return type(obj).__name__
        frame = frame.f_back
    return "other"


class RecordingLogger(TensorBoardLogger):
    """A TensorBoardLogger that writes nothing and records every metric and writer call, on every rank
    (Lightning's own loggers drop calls off rank 0; this one lets a callback's stray call show)."""

    calls: list[tuple[str, str]] = []

    @property
    def experiment(self):
        return _Recorder(self.calls)

    def log_metrics(self, metrics, step=None):
        who = _calling_callback()
        self.calls.extend((who, k) for k in metrics)

    def log_hyperparams(self, params, metrics=None, step=None):
        self.calls.append((_calling_callback(), "hparams"))

    def save(self):
        pass

    def finalize(self, status):
        pass


@pytest.fixture(scope="module")
def rank1_calls(tmp_path_factory) -> list[tuple[str, str]]:
    """(callback, what) of every logger call of the tiny run (every callback) with the trainer's rank
    patched to 1 of 1 (the data module then takes the shard x[1::1])."""
    config = tiny_config(str(tmp_path_factory.mktemp("rank1")), max_steps=3, callbacks=TINY_CALLBACKS)
    config["trainer"]["enable_progress_bar"] = True
    config["trainer"]["logger"]["class_path"] = "test_callback_contract.RecordingLogger"
    RecordingLogger.calls = []
    dm, module, trainer = run.build_run(config)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pl.Trainer, "global_rank", property(lambda self: 1))
        mp.setattr(pl.Trainer, "is_global_zero", property(lambda self: False))
        trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 3
    return list(RecordingLogger.calls)


def test_the_recording_logger_sees_callback_logs_on_rank_0(tmp_path):
    """The check below can fail: on rank 0 the same run records the callbacks' own metrics."""
    config = tiny_config(str(tmp_path), max_steps=2, callbacks=TINY_CALLBACKS[:1])
    config["trainer"]["logger"]["class_path"] = "test_callback_contract.RecordingLogger"
    RecordingLogger.calls = []
    dm, module, trainer = run.build_run(config)
    trainer.fit(module, datamodule=dm)
    assert ("NTKChange", "ntk/rel_change") in RecordingLogger.calls


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_nothing_is_logged_on_rank_other_than_0(cls, rank1_calls):
    assert [what for who, what in rank1_calls if who == cls.__name__] == []
