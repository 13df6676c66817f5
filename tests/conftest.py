"""Shared test setup: one thread per process (2-core CI), runs written under each test's tmp_path."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own folder, so relative `runs/` paths never collide or litter the repo."""
    monkeypatch.chdir(tmp_path)
    yield


# ---- the shared tiny run ---------------------------------------------------------------------------------
# One tiny float64 run (digits, P = 32, h = 8, 4 steps) built and fitted through run.build_run, with every
# measurement callback of lightning_phase.callbacks at a tiny size; fitted once per session (tests must not
# change it: build your own with ``tiny_config()`` when you need to).
TINY_CALLBACKS: list[dict] = [
    {"class_path": "lightning_phase.callbacks.NTKChange", "init_args": {"n_points": 8}},
    {"class_path": "lightning_phase.callbacks.Margins", "init_args": {"n_boot": 0}},
    {"class_path": "lightning_phase.callbacks.WeightsChange"},
    {"class_path": "lightning_phase.callbacks.TimeScale"},
    {"class_path": "lightning_phase.callbacks.DynamicsLogger"},
    {"class_path": "lightning_phase.callbacks.HessianSpectrum", "init_args": {"n_points": 16, "k": 2}},
    {"class_path": "lightning_phase.callbacks.LoadCurve", "init_args": {"n_points": 32}},
    {"class_path": "lightning_phase.callbacks.DiffeoStability", "init_args": {"n_points": 8, "n_samples": 2}},
]


def tiny_config(save_dir: str = "runs", max_steps: int = 4, callbacks: list[dict] | None = None) -> dict:
    """The tiny run's config (a fresh dict): digits parity, P = 32 train / 32 test / 16 kernel points, FC
    h = 8, L = 2, α̃ = 1, SGD lr 0.5, float64, ``max_steps`` steps, TensorBoard under ``save_dir``."""
    return {
        "seed_everything": 0,
        "trainer": {
            "max_steps": max_steps, "log_every_n_steps": 1,
            "logger": {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(save_dir), "name": "tiny", "default_hp_metric": False}},
            "callbacks": [dict(c) for c in (callbacks if callbacks is not None else [])],
        },
        "model": {
            "net": {"class_path": "lightning_phase.nets.FullyConnected", "init_args": {"width": 8, "depth": 2}},
            "alpha_tilde": 1.0,
            "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.5}},
        },
        "data": {"dataset": "digits", "n_train": 32, "n_test": 32, "n_kernel": 16},
        "checkpoint": {"every_n_steps": 2},
    }


class TinyRun:
    """A fitted tiny run: the objects of ``run.build_run``, its run dir and its summary.json record."""

    def __init__(self, datamodule, module, trainer, run_dir, summary):
        self.datamodule, self.module, self.trainer = datamodule, module, trainer
        self.run_dir, self.summary = run_dir, summary

    def callback(self, cls):
        """The trainer's callback of class ``cls``."""
        return next(c for c in self.trainer.callbacks if type(c) is cls)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """The tiny run with every callback (``TINY_CALLBACKS``), fitted once per session; read-only."""
    import json
    from pathlib import Path

    from lightning_phase import run
    from lightning_phase.callbacks.summary import run_dir

    root = tmp_path_factory.mktemp("tiny_run")
    dm, module, trainer = run.build_run(tiny_config(str(root / "runs"), callbacks=TINY_CALLBACKS))
    trainer.fit(module, datamodule=dm)
    folder = Path(run_dir(trainer))
    return TinyRun(dm, module, trainer, folder, json.loads((folder / "summary.json").read_text()))
