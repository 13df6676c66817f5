"""[SB]/[DIFF] pieces in a run: MLP knobs, data noise, LoadCurve, DiffeoStability, load-diagram (issue 11)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lightning_phase.analysis.load_diagram import collect, config_value, main_load_diagram
from lightning_phase.callbacks import DiffeoStability, LoadCurve
from lightning_phase.data import PhaseDataModule
from lightning_phase.data.loader import NoisyLoader, TensorLoader
from lightning_phase.errors import ConfigError
from lightning_phase.nets import MLP, FullyConnected
from lightning_phase.observables import relative_stability, temperature_for_displacement
from lightning_phase.observables.separation import layer_features, network_load_curve
from lightning_phase.run import fit

f64 = torch.float64


# ---- nets and data knobs -------------------------------------------------------------------------------
def test_mlp_shapes_seed_and_global_rng_untouched():
    state = torch.get_rng_state()
    a, b = MLP(16, 3, dropout=0.2, input_dim=64, out_dim=10, seed=1), MLP(16, 3, input_dim=64, out_dim=10, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    x = torch.randn(5, 64)
    assert a.eval()(x).shape == (5, 10) and MLP(8, 2, input_dim=64).eval()(x).shape == (5,)
    with pytest.raises(ConfigError, match="model.net.init_args.dropout"):
        MLP(8, 2, dropout=1.0, input_dim=4)
    with pytest.raises(ConfigError, match="model.net.init_args.activation_beta"):
        MLP(8, 2, activation="leaky_relu", activation_beta=2.0, input_dim=4)


def test_layer_features_hook_every_call_of_a_shared_activation_and_the_input_norm():
    fc = FullyConnected(6, 3, input_dim=5, seed=0).to(f64)
    x = torch.randn(4, 5, dtype=f64)
    feats = layer_features(fc, x)
    assert [n for n, _ in feats] == ["input", "act#1", "act#2", "act#3"]
    assert torch.equal(feats[0][1], x) and all(h.shape == (4, 6) for _, h in feats[1:])
    mlp = MLP(7, 2, input_dim=5, seed=0).to(f64).eval()
    names = [n for n, _ in layer_features(mlp, x)]
    assert names == ["input", "blocks.0.2#1", "blocks.1.2#1"]
    torch.testing.assert_close(layer_features(mlp, x)[0][1], mlp.input_norm(x))  # after the input BatchNorm
    with pytest.raises(ValueError, match="not modules"):
        layer_features(mlp, x, ["nope"])


def test_noisy_loader_redraws_the_asked_fraction_of_labels_and_input_noise_each_step():
    x, y = torch.randn(4000, 3, dtype=f64), torch.arange(4000) % 10
    noisy = NoisyLoader(TensorLoader(x, y), input_noise=0.5, label_noise=0.4, x_std=2.0, n_classes=10, seed=0)
    (x1, y1), (x2, y2) = next(iter(noisy)), next(iter(noisy))  # two epochs
    changed = (y1 != y).double().mean()
    assert changed == pytest.approx(0.4 * 0.9, abs=0.03)  # a redrawn label hits the true one 1 time in 10
    assert (x1 - x).std() == pytest.approx(0.5 * 2.0, rel=0.03)
    assert not torch.equal(x1, x2) and not torch.equal(y1, y2)  # fresh noise every step
    again = NoisyLoader(TensorLoader(x, y), 0.5, 0.4, 2.0, 10, seed=0)
    assert torch.equal(next(iter(again))[1], y1)  # reproducible from the seed
    pm = NoisyLoader(TensorLoader(x, torch.ones(4000, dtype=f64)), 0.0, 1.0, 1.0, 2, seed=0)
    assert set(next(iter(pm))[1].tolist()) == {-1.0, 1.0}


def test_datamodule_noise_knobs_touch_only_the_training_batches():
    dm = PhaseDataModule("digits", n_train=100, n_test=50, labels="class", label_noise=0.5, input_noise=0.1)
    xb, yb = next(iter(dm.train_dataloader()))
    assert not torch.equal(xb, dm.x_train) and (yb != dm.y_train).any()
    assert next(iter(dm.val_dataloader()))[0] is dm.x_test
    with pytest.raises(ConfigError, match="data.label_noise"):
        PhaseDataModule("digits", n_train=10, n_test=10, label_noise=1.5)


# ---- callbacks in a run ----------------------------------------------------------------------------------
def _config(tmp: Path, callbacks: list[dict], net: dict, steps: int = 8) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {"max_steps": steps, "enable_progress_bar": False, "callbacks": callbacks,
                    "logger": {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(tmp / "runs"), "name": "t"}}},
        "stop": {"when_fitted": False},
        "model": {"net": net, "alpha": 1.0, "center": False, "loss": "cross_entropy",
                  "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}}},
        "data": {"dataset": "digits", "labels": "class", "n_train": 200, "n_test": 100},
    }
    path = tmp / "c.yaml"
    path.write_text(json.dumps(cfg))
    return path


def test_load_curve_callback_logs_the_curve_of_the_final_net(tmp_path):
    net = {"class_path": "lightning_phase.nets.MLP",
           "init_args": {"width": 16, "depth": 3, "dropout": 0.1, "seed": 0}}
    cb = {"class_path": "lightning_phase.callbacks.LoadCurve", "init_args": {"n_points": 150}}
    rec = fit(_config(tmp_path, [cb], net))
    assert len(rec["load_log_d"]) == 4 and math.isfinite(rec["load_curvature"])
    d = rec["load_log_d"]
    assert rec["load_curvature"] == pytest.approx((d[0] - d[1]) - (d[2] - d[3]))


def test_load_curve_callback_equals_the_observable_on_the_same_net():
    dm = PhaseDataModule("digits", n_train=120, n_test=50, labels="class")
    net = MLP(12, 2, input_dim=64, out_dim=10, seed=3).to(f64)
    cb = LoadCurve(n_points=100)

    class _PL:  # just what the callback reads
        pass

    pl = _PL()
    pl.net, cb._xy = net, (dm.x_train[:100], dm.y_train[:100])
    out = cb.measure(None, pl, 0)
    _, curve = network_load_curve(net.eval(), dm.x_train[:100], dm.y_train[:100])
    assert out["load/curvature"] == pytest.approx(curve.curvature, rel=1e-12)
    assert [out[f"load/logD/l{i}"] for i in range(3)] == pytest.approx(list(curve.log_d), rel=1e-12)


def test_diffeo_stability_callback_in_a_run_and_equal_to_the_observable(tmp_path):
    net = {"class_path": "lightning_phase.nets.ConvNet", "init_args": {"width": 4, "kernel_size": 3, "seed": 0}}
    cb = {"class_path": "lightning_phase.callbacks.DiffeoStability",
          "init_args": {"n_points": 40, "n_samples": 2, "delta": 0.5}}
    rec = fit(_config(tmp_path, [cb], net, steps=3))
    assert rec["stab_R"] > 0 and rec["stab_R0"] > 0 and rec["stab_R_err"] >= 0
    # the callback's measurement is the observable's, on the same net, images and seed
    from lightning_phase.nets import ConvNet

    dm = PhaseDataModule("digits", n_train=100, n_test=100)
    conv = ConvNet(4, kernel_size=3, input_dim=64, seed=0).to(f64)
    cb = DiffeoStability(n_points=40, n_samples=2, delta=0.5)

    class _PL:
        pass

    pl = _PL()
    pl.net, cb._x, cb._shape = conv, dm.x_test[:40], (1, 8, 8)
    got = cb.measure(None, pl, 0)
    want = relative_stability(conv, dm.x_test[:40], temperature_for_displacement(0.5, 8, 3), 3, 2,
                              image_shape=(1, 8, 8))
    assert got["stab/R"] == pytest.approx(want.R, rel=1e-12) and got["stab/D"] == pytest.approx(want.D, rel=1e-12)


def test_diffeo_stability_refuses_flat_data():
    dm = PhaseDataModule("digits", n_train=50, n_test=50, pca_dim=10)
    with pytest.raises(ConfigError, match="data.pca_dim"):
        DiffeoStability(n_points=10).check_data(dm)
    with pytest.raises(ConfigError, match="data.n_test"):
        DiffeoStability(n_points=100).check_data(PhaseDataModule("digits", n_train=50, n_test=50))


# ---- load-diagram ----------------------------------------------------------------------------------------
def _fake_runs(root: Path) -> None:
    for i, (p, beta, curve, err) in enumerate([(0.0, 0.0, [2, 1.9, 1.6, 0.0], 0.05),
                                               (0.3, 0.0, [2, 1.0, 0.5, 0.3], 0.08),
                                               (0.0, 0.0, [2, 1.8, 1.5, 0.1], 0.07)]):
        run = root / f"trial_{i}"
        run.mkdir(parents=True)
        d = [curve[j] - curve[j + 1] for j in range(3)]
        net = {"class_path": "Y", "init_args": {"dropout": p, "activation_beta": beta}}
        cfg = {"model": {"class_path": "X", "init_args": {"net": net}}}
        (run / "summary.json").write_text(json.dumps({"config": cfg, "load_log_d": curve,
                                                      "load_curvature": d[0] - d[-1], "test_error": err}))


def test_config_value_skips_init_args_levels():
    cfg = {"model": {"class_path": "X", "init_args": {"net": {"class_path": "Y", "init_args": {"dropout": 0.2}}}}}
    assert config_value(cfg, "model.net.dropout") == 0.2
    assert config_value(cfg, "model.init_args.net.init_args.dropout") == 0.2
    with pytest.raises(KeyError):
        config_value(cfg, "model.net.width")


def test_load_diagram_averages_seeds_per_cell_and_draws(tmp_path, capsys):
    _fake_runs(tmp_path / "runs")
    cells = collect(tmp_path / "runs", "model.net.dropout", "model.net.activation_beta")
    assert [(c.x, c.y, c.n) for c in cells] == [(0.0, 0.0, 2), (0.3, 0.0, 1)]
    assert cells[0].log_d == pytest.approx((2, 1.85, 1.55, 0.05)) and cells[0].test_error == pytest.approx(0.06)
    out = tmp_path / "d.png"
    args = [str(tmp_path / "runs"), "--x", "model.net.dropout", "--y", "model.net.activation_beta"]
    assert main_load_diagram([*args, "--out", str(out), "--no-springs"]) == 0
    assert out.stat().st_size > 1000
    size = out.stat().st_size
    assert main_load_diagram([*args, "--out", str(out)]) == 2  # refuses to overwrite
    assert out.stat().st_size == size
    assert main_load_diagram([str(tmp_path / "runs"), "--x", "model.net.width", "--y", "model.net.dropout"]) == 2
    assert main_load_diagram([str(tmp_path / "none"), "--x", "a", "--y", "b"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("lightning-phase load-diagram: error:") for line in err)
