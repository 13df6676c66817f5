"""Measurement callbacks inside a real pl.Trainer (CPU, float64), their logs, summaries and state."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from _runs import run_dir_in
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from lightning_phase import ConfigError, PhaseModule
from lightning_phase.callbacks import (
    HessianSpectrum,
    LogSpacedSchedule,
    Margins,
    NTKChange,
    TimeScale,
    WeightsChange,
)
from lightning_phase.nets import FullyConnected


class _FullBatch:
    """An iterable yielding the whole (x, y) once per epoch."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        yield self.x, self.y

    def __len__(self):
        return 1


class TinyData(pl.LightningDataModule):
    """Stand-in for PhaseDataModule: same tensor attributes, one full batch per epoch."""

    def __init__(self, n_train=40, n_kernel=12, d=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n_train + n_kernel + 10, d, generator=g)
        y = torch.sign(x[:, 0] + 0.2)
        self.input_dim = d
        self.x_train, self.y_train = x[:n_train], y[:n_train]
        self.x_kernel, self.y_kernel = x[n_train : n_train + n_kernel], y[n_train : n_train + n_kernel]
        self.x_test, self.y_test = x[n_train + n_kernel :], y[n_train + n_kernel :]

    def train_dataloader(self):
        return _FullBatch(self.x_train, self.y_train)


class CaptureLogger(Logger):
    """Keeps every (step, metrics) it is given."""

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    name = "capture"
    version = 0

    def log_hyperparams(self, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))

    def values(self, key):
        return [(s, m[key]) for s, m in self.rows if key in m]


def _fit(callbacks, tmp_path=None, max_steps=12, width=8, alpha_tilde=1.0, loss="soft_hinge", data=None,
         optimizer=None):
    data = data or TinyData()
    net = FullyConnected(width, 2, "softplus", 3.0, input_dim=data.input_dim, seed=0)
    module = PhaseModule(net, alpha_tilde=alpha_tilde, loss=loss,
                         optimizer=optimizer or (lambda p: torch.optim.SGD(p, lr=0.5)))
    capture = CaptureLogger()
    loggers = [capture] + ([TensorBoardLogger(tmp_path, name="tb")] if tmp_path is not None else [])
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision="64-true", max_steps=max_steps,
                         logger=loggers, callbacks=callbacks, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    return trainer, module, capture


def test_log_spaced_schedule_is_dense_early_sparse_late():
    s = LogSpacedSchedule(points_per_decade=4)
    steps = s.steps(10_000)
    assert steps[:6] == [0, 1, 2, 4, 6, 10] and 10 in steps  # ⌈10^{j/4}⌉ and 100 in steps and 10_000 in steps
    assert len([t for t in steps if 1000 < t <= 10_000]) == 4  # 4 per decade late
    assert s.steps(50) == [t for t in range(51) if s(t)]
    with pytest.raises(ConfigError, match="points_per_decade"):
        LogSpacedSchedule(0)


def test_callbacks_log_their_keys_and_summaries(tmp_path):
    sched = LogSpacedSchedule(points_per_decade=3)
    cbs = [NTKChange(n_points=10, schedule=sched), Margins(schedule=sched, n_boot=5, k_min=5),
           WeightsChange(schedule=sched), TimeScale(schedule=sched), HessianSpectrum(n_points=20)]
    trainer, module, log = _fit(cbs, tmp_path)
    ntk_steps = [s for s, _ in log.values("ntk/rel_change")]
    assert ntk_steps == [0, 1, 3, 5, 10, 12] == sched.steps(12) + [12]  # scheduled steps + the last one
    assert log.values("ntk/rel_change")[0][1] == 0.0 and log.values("ntk/rel_change")[-1][1] > 0
    for key in ("ntk/norm", "ntk/trace", "ntk/top_eig", "margins/n_delta", "margins/n_delta_over_p",
                "margins/min", "margins/median", "margins/theta", "margins/gamma", "weights/change",
                "weights/change/layers.0", "time/flow_time", "time/output_norm", "hessian/min",
                "hessian/max"):
        assert log.values(key), key
    assert log.values("margins/n_delta")[0][1] == 40  # F ≡ 0 at start: every Δ = 1
    assert log.values("weights/change")[0][1] == 0.0
    summary = {}
    for cb in cbs:
        summary.update(cb.summary())
    for key in ("ntk_rel_change", "theta", "theta_err", "gamma", "gamma_err", "weights_change", "t1",
                "hessian_min", "hessian_max", "margins_n_delta"):
        assert key in summary, key
    assert summary["ntk_rel_change"] == log.values("ntk/rel_change")[-1][1]
    assert summary["hessian_min"] <= summary["hessian_max"] and summary["hessian_method"] == "dense"
    assert summary["loss0"] == pytest.approx(math.log1p(math.exp(20)) / 20)  # α²L(w₀) = ℓ(0)
    assert module.flow_time == pytest.approx(12 * 0.5)


def test_tensorboard_gets_histogram_and_figures(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sched = LogSpacedSchedule(points_per_decade=1)
    _fit([Margins(schedule=sched, n_boot=5, k_min=5), HessianSpectrum(max_dense=0, k=2, n_lanczos=10)],
         tmp_path, max_steps=3)
    guidance = {"images": 0, "histograms": 0}
    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance=guidance)
    events.Reload()
    tags = events.Tags()
    assert "margins/delta" in tags["histograms"]
    assert {"margins/tails", "hessian/spectrum"} <= set(tags["images"])
    assert {"margins/n_delta", "margins/theta", "hessian/max"} <= set(tags["scalars"])


def test_t1_reached_in_lazy_run_and_matches_logged_losses():
    ts = TimeScale()
    trainer, module, log = _fit([ts], max_steps=40, alpha_tilde=100.0)
    assert ts.t1 is not None and 0 < ts.t1 <= trainer.global_step * 0.5
    assert log.values("time/t1") == [(round(ts.t1 / 0.5), ts.t1)]


def test_t1_is_the_same_flow_time_under_gradient_flow_and_small_step_descent():
    """Both integrate the same flow: t₁ must agree, so each must date its losses at the right t."""
    from lightning_phase.optim import GradientFlow

    ts_gd, ts_gf = TimeScale(), TimeScale()
    _fit([ts_gd], max_steps=400, optimizer=lambda p: torch.optim.SGD(p, lr=0.01))
    _fit([ts_gf], max_steps=400, optimizer=lambda p: GradientFlow(p, max_dgrad=1e-3))
    ell0 = math.log1p(math.exp(20)) / 20
    assert ts_gd.loss0 == pytest.approx(ell0) and ts_gf.loss0 == pytest.approx(ell0)  # α²L(w₀) = ℓ(0)
    assert ts_gd.t1 is not None and ts_gf.t1 is not None
    assert ts_gf.t1 == pytest.approx(ts_gd.t1, rel=0.03, abs=0.02)


def test_ntk_change_rejects_too_small_kernel_set():
    with pytest.raises(ConfigError, match="data.n_kernel"):
        _fit([NTKChange(n_points=50)], data=TinyData(n_kernel=12))


def test_resumed_ntk_change_keeps_theta0_and_step():
    cb = NTKChange(n_points=10)
    _fit([cb], max_steps=4)
    state = cb.state_dict()
    fresh = NTKChange(n_points=10)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.theta_0, cb.theta_0) and fresh.last_step == 4
    assert fresh.summary() == cb.summary() and fresh.state_key == cb.state_key
    assert NTKChange(n_points=11).state_key != cb.state_key


def test_callbacks_build_from_a_trainer_callbacks_yaml_list():
    import yaml
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--callbacks", type=list[pl.Callback])
    cfg = yaml.safe_load("""
    callbacks:
      - class_path: lightning_phase.callbacks.NTKChange
        init_args: {n_points: 200, schedule: {points_per_decade: 5}}
      - class_path: lightning_phase.callbacks.HessianSpectrum
        init_args: {n_points: 100}
      - lightning_phase.callbacks.Margins
    """)
    cbs = parser.instantiate(parser.parse_object(cfg)).callbacks
    assert [type(c).__name__ for c in cbs] == ["NTKChange", "HessianSpectrum", "Margins"]
    assert cbs[0].schedule == LogSpacedSchedule(5) and cbs[0].n_points == 200 and cbs[1].n_points == 100


def test_observables_config_runs_through_the_cli_into_summary_json(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    from lightning_phase.cli import main

    config = str(Path(__file__).resolve().parents[1] / "configs" / "observables.yaml")
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", config, "--trainer.max_steps=8", "--model.net.init_args.width=8",
                 "--trainer.enable_progress_bar=false"]) == 0
    path = run_dir_in("runs/observables") / "summary.json"
    summary = json.loads(path.read_text())
    for key in ("ntk_rel_change", "weights_change", "t1", "theta", "gamma", "hessian_min", "hessian_max",
                "margins_n_delta"):
        assert key in summary, key
    assert summary["ntk_rel_change"] > 0 and summary["hessian_method"] == "dense"


@pytest.mark.parametrize("kwargs,field", [({"k_min": 0}, "Margins.k_min"), ({"n_boot": -3}, "Margins.n_boot"),
                                          ({"histogram": "no"}, "Margins.histogram")])
def test_bad_margins_arguments_fail_at_construction(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        Margins(**kwargs)
