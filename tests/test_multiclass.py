"""K-class nets, labels, margins and losses (issue 11): each against a brute-force float64 definition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.func import functional_call, jacrev
from torch.nn import functional as F

from lightning_phase.cli import main
from lightning_phase.data import PhaseDataModule
from lightning_phase.errors import ConfigError
from lightning_phase.losses import get_loss, margin_variable, margins, sample_loss
from lightning_phase.module import PhaseModule
from lightning_phase.nets import ConvNet, FullyConnected
from lightning_phase.observables import ntk, ntk_loop

f64 = torch.float64


def _x(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=f64)


def _perturb(net, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


def _jacobian_ntk(net, x, x2):
    """Θ_{μν} = Σ_k Σ_p ∂f_k(x_μ)/∂w_p ∂f_k(x2_ν)/∂w_p from the full Jacobian (P, K, N) of torch.func."""
    params = {k: v.detach() for k, v in net.named_parameters()}

    def J(xs):
        jac = jacrev(lambda p: functional_call(net, p, (xs,)))(params)  # name → (P, K, *shape)
        return torch.cat([j.reshape(len(xs), j.shape[1], -1) for j in jac.values()], dim=2)

    return torch.einsum("akn,bkn->ab", J(x), J(x2))


# ---- nets and the α-scaling ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fc", "conv"])
def test_alpha_scaling_keeps_F_zero_at_init_for_K_outputs(kind):
    net = (FullyConnected(16, 2, "relu", input_dim=64, out_dim=10, seed=0) if kind == "fc"
           else ConvNet(4, kernel_size=3, input_dim=64, out_dim=10, seed=0)).to(f64)
    m = PhaseModule(net, alpha=1e3)
    x = _x(7, 64, 0)
    assert net(x).shape == (7, 10)
    assert m(x).shape == (7, 10) and m(x).abs().max() == 0


def test_out_dim_one_keeps_the_scalar_output_and_old_init():
    a = FullyConnected(8, 2, input_dim=5, seed=3)
    b = FullyConnected(8, 2, input_dim=5, seed=3, out_dim=1)
    x = _x(4, 5, 1).float()
    assert a(x).shape == (4,) and torch.equal(a(x), b(x))
    assert ConvNet(4, kernel_size=3, input_dim=64, seed=0)(_x(3, 64, 0).float()).shape == (3,)
    with pytest.raises(ConfigError, match="model.net.init_args.out_dim"):
        FullyConnected(8, 2, input_dim=5, out_dim=0)


@pytest.mark.parametrize("bias", [0.0, 0.5])
def test_ntk_over_K_outputs_equals_its_per_sample_jacobian_definition(bias):
    net = _perturb(FullyConnected(6, 2, "softplus", 2.0, bias, 5, seed=0, out_dim=3).to(f64))
    x, x2 = _x(5, 5, 1), _x(4, 5, 2)
    ref, ref12 = _jacobian_ntk(net, x, x), _jacobian_ntk(net, x, x2)
    for method in ("layerwise", "modules", "jacobian"):
        torch.testing.assert_close(ntk(net, x, method=method), ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ntk(net, x, x2, method=method), ref12, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ntk_loop(net, x), ref, rtol=1e-10, atol=1e-12)
    one = sum(ntk(net, x, output=k) for k in range(3))  # the trace is the sum of the per-output kernels
    torch.testing.assert_close(one, ref, rtol=1e-10, atol=1e-12)


def test_convnet_ntk_over_K_outputs_equals_jacobian_definition():
    net = _perturb(ConvNet(3, kernel_size=3, activation="swish", input_dim=64, seed=0, out_dim=4).to(f64))
    x = _x(4, 64, 3)
    ref = _jacobian_ntk(net, x, x)
    for method in ("modules", "jacobian"):
        torch.testing.assert_close(ntk(net, x, method=method, chunk=3), ref, rtol=1e-10, atol=1e-12)


# ---- margins and losses --------------------------------------------------------------------------------
def test_crammer_singer_margin_against_a_loop():
    F_out = _x(6, 4, 5)
    y = torch.tensor([0, 3, 1, 1, 2, 0])
    z = margin_variable(F_out, y)
    for mu in range(6):
        others = [F_out[mu, k] for k in range(4) if k != y[mu]]
        assert float(z[mu]) == pytest.approx(float(F_out[mu, y[mu]] - max(others)), abs=1e-15)
    torch.testing.assert_close(margins(F_out, y), 1 - z)
    members = torch.stack([F_out, -F_out])  # a leading member axis (M, P, K) broadcasts
    torch.testing.assert_close(margin_variable(members, y)[0], z)


def test_two_classes_reduce_to_the_binary_margin():
    f = _x(8, 1, 6).squeeze(1)
    y_pm = torch.tensor([1.0, -1, 1, 1, -1, -1, 1, -1], dtype=f64)
    two = torch.stack([-f / 2, f / 2], dim=1)  # class 1 ↔ y = +1
    y_cls = (y_pm > 0).long()
    torch.testing.assert_close(margin_variable(two, y_cls), y_pm * f)
    torch.testing.assert_close(margins(f, y_pm), 1 - y_pm * f)  # K = 1 keeps Δ = 1 − yF


def test_cross_entropy_matches_torch_and_its_binary_form():
    F_out, y = _x(6, 5, 7), torch.tensor([0, 4, 2, 2, 1, 3])
    ce = sample_loss("cross_entropy", get_loss("cross_entropy"), F_out, y)
    torch.testing.assert_close(ce, F.cross_entropy(F_out, y, reduction="none"))
    f, y_pm = _x(6, 1, 8).squeeze(1), torch.tensor([1.0, -1, 1, -1, 1, 1], dtype=f64)
    two = torch.stack([torch.zeros_like(f), f], dim=1)  # logits (0, f): binary CE = log(1 + e^{−yf})
    torch.testing.assert_close(sample_loss("cross_entropy", get_loss("cross_entropy"), f, y_pm),
                               F.cross_entropy(two, (y_pm > 0).long(), reduction="none"))
    hinge = sample_loss("hinge", get_loss("hinge"), F_out, y)  # multi-class hinge = (1 − z)₊ (Crammer–Singer)
    torch.testing.assert_close(hinge, (1 - margin_variable(F_out, y)).clamp_min(0))


# ---- data labels ---------------------------------------------------------------------------------------
def test_class_labels_are_balanced_int_class_indices():
    dm = PhaseDataModule("digits", n_train=200, n_test=100, labels="class")
    assert dm.y_train.dtype == torch.int64 and dm.out_dim == dm.n_classes == 10
    assert torch.bincount(dm.y_train).tolist() == [20] * 10
    parity = PhaseDataModule("digits", n_train=200, n_test=100)
    torch.testing.assert_close(parity.y_train, torch.where(dm.y_train % 2 == 0, 1.0, -1.0).to(f64))
    torch.testing.assert_close(parity.x_train, dm.x_train)  # same samples, only the labels differ
    assert parity.out_dim == 1
    with pytest.raises(ConfigError, match="data.labels"):
        PhaseDataModule("random", n_train=10, n_test=10, labels="class")
    with pytest.raises(ConfigError, match="data.labels"):
        PhaseDataModule("digits", n_train=10, n_test=10, labels="classes")


def test_ten_class_digits_with_cross_entropy_reaches_test_error_below_0_1():
    args = ["fit", "--trainer.max_steps=200", "--trainer.enable_progress_bar=false",
            "--trainer.check_val_every_n_epoch=1000", "--model.net=lightning_phase.nets.FullyConnected",
            "--model.net.width=64", "--model.alpha=1.0", "--model.loss=cross_entropy",
            "--model.optimizer=torch.optim.Adam", "--model.optimizer.lr=0.01", "--data.dataset=digits",
            "--data.labels=class", "--data.n_train=800", "--data.n_test=500"]
    assert main(args) == 0
    rec = json.loads(next(Path("runs").rglob("summary.json")).read_text())
    assert rec["out_dim"] == 10 and rec["labels"] == "class"
    assert rec["train_error"] == 0.0 and rec["test_error"] < 0.1


def test_out_dim_is_filled_from_the_data_like_input_dim():
    args = ["fit", "--trainer.max_steps=2", "--trainer.enable_progress_bar=false",
            "--model.net=lightning_phase.nets.FullyConnected", "--model.net.width=8", "--model.alpha=1.0",
            "--data.labels=class", "--data.n_train=50", "--data.n_test=50", "--model.net.out_dim=1"]
    assert main(args) == 0  # the data's K = 10 replaces the 1 given, as data.input_dim does for input_dim
    assert json.loads(next(Path("runs").rglob("summary.json")).read_text())["out_dim"] == 10


def test_members_and_classes_stack_as_members_then_samples_then_classes():
    net = FullyConnected(8, 2, input_dim=5, out_dim=3, seed=0).to(f64)
    m = PhaseModule(net, alpha=10.0, members=2, loss="cross_entropy")
    x, y = _x(6, 5, 9), torch.tensor([0, 1, 2, 0, 1, 2])
    assert m(x).shape == (2, 6, 3) and m(x).abs().max() == 0
    s = m.stats(m.alpha * m.net(x), y)
    assert s["loss"].shape == (2,) and s["n_delta"].shape == (2,)
    single = PhaseModule(FullyConnected(8, 2, input_dim=5, out_dim=3, seed=1).to(f64), alpha=10.0,
                         loss="cross_entropy")  # member 1 = the single run with seed + 1
    torch.testing.assert_close(s["loss"][1], single.stats(single.alpha * single.net(x), y)["loss"])


def test_hessian_callback_refuses_class_labels():
    from lightning_phase.callbacks import HessianSpectrum

    with pytest.raises(ConfigError, match="data.labels"):
        HessianSpectrum().check_data(PhaseDataModule("digits", n_train=20, n_test=20, labels="class"))
    HessianSpectrum().check_data(PhaseDataModule("digits", n_train=20, n_test=20))


def test_measurement_callbacks_run_with_class_labels():
    cbs = [{"class_path": "lightning_phase.callbacks.NTKChange", "init_args": {"n_points": 20}},
           {"class_path": "lightning_phase.callbacks.Margins"},
           {"class_path": "lightning_phase.callbacks.WeightsChange"},
           {"class_path": "lightning_phase.callbacks.TimeScale"}]
    Path("c.yaml").write_text(json.dumps({"trainer": {"max_steps": 12, "enable_progress_bar": False,
                                                      "callbacks": cbs}}))
    args = ["fit", "--config", "c.yaml", "--model.net=lightning_phase.nets.FullyConnected", "--model.net.width=16",
            "--model.alpha_tilde=1.0", "--model.loss=cross_entropy", "--data.labels=class", "--data.n_train=100",
            "--data.n_test=50", "--data.n_kernel=20"]
    assert main(args) == 0
    rec = json.loads(next(Path("runs").rglob("summary.json")).read_text())
    assert rec["ntk_rel_change"] > 0 and rec["weights_change"] > 0 and rec["margins_n_delta"] == rec["n_delta"]
