"""PhaseModule: α-scaling, loss normalisation, errors; stop rules."""

import math

import pytest
import torch
from torch import nn

from lightning_phase import ConfigError, PhaseModule
from lightning_phase.callbacks.stopping import StopReason, StopRules, stall_check
from lightning_phase.losses import LOSSES, get_loss, margins
from lightning_phase.nets import FullyConnected


def _module(alpha_tilde=10.0, loss="soft_hinge", seed=0, **kw):
    net = FullyConnected(width=16, depth=2, input_dim=6, seed=seed).double()
    return PhaseModule(net, alpha_tilde=alpha_tilde, loss=loss, **kw)


X = torch.randn(30, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
Y = torch.where(torch.arange(30) % 2 == 0, 1.0, -1.0).double()


@pytest.mark.parametrize("alpha_tilde", [1e-3, 1.0, 1e5])
def test_output_at_initialisation_is_exactly_zero(alpha_tilde):
    assert torch.equal(_module(alpha_tilde)(X), torch.zeros(30, dtype=torch.float64))


@pytest.mark.parametrize("loss", LOSSES)
def test_scaled_loss_at_t0_equals_ell_of_zero(loss):
    m = _module(loss=loss)
    ell0 = float(get_loss(loss)(torch.zeros(1, dtype=torch.float64)))
    assert float(m.stats(m(X), Y)["loss"].detach()) == pytest.approx(ell0, rel=1e-14)
    out = m.training_step((X, Y), 0)
    assert float(out["loss"]) * m.alpha**2 == pytest.approx(ell0, rel=1e-12)  # L = ℓ(0)/α²
    assert int(out["n_delta"]) == 30


def test_soft_hinge_at_zero_is_softplus20_of_one():
    assert float(get_loss("soft_hinge")(torch.zeros(1))) == pytest.approx(math.log1p(math.exp(20)) / 20)


def test_alpha_tilde_is_sqrt_width_times_alpha():
    m = _module(alpha_tilde=8.0)
    assert m.alpha == pytest.approx(8.0 / 4.0) and m.alpha_tilde == 8.0
    m2 = PhaseModule(FullyConnected(16, 2, input_dim=6), alpha=3.0)
    assert m2.alpha_tilde == pytest.approx(12.0)


def test_alpha_sweep_shares_w0():
    a, b = _module(alpha_tilde=1e-2, seed=4), _module(alpha_tilde=1e3, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.net0.parameters(), b.net0.parameters()))


def test_gradient_step_moves_f_but_not_f0():
    m = _module()
    out = m.training_step((X, Y), 0)
    out["loss"].backward()
    with torch.no_grad():
        for p in m.net.parameters():
            p -= 0.1 * p.grad
    assert all(p.grad is None for p in m.net0.parameters())
    m._f0_cache = None
    assert float(m(X).abs().max()) > 0


def test_margins_and_counts():
    F = torch.tensor([2.0, 0.5, -1.0, 1.0])
    y = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert margins(F, y).tolist() == [-1.0, 0.5, 2.0, 0.0]
    s = _module().stats(F.double(), y.double())
    assert int(s["n_delta"]) == 2 and float(s["error"]) == 0.25


@pytest.mark.parametrize("kwargs,field", [
    ({"alpha": None, "alpha_tilde": None}, "alpha"),
    ({"alpha": 1.0, "alpha_tilde": 1.0}, "alpha"),
    ({"alpha": -1.0}, "model.alpha"),
    ({"alpha": 0.0}, "model.alpha"),
    ({"alpha_tilde": float("nan")}, "model.alpha_tilde"),
    ({"alpha": 1.0, "loss": "mse"}, "model.loss"),
    ({"alpha": 1.0, "loss_beta": 0.0}, "model.loss_beta"),
])
def test_bad_module_arguments_name_the_field(kwargs, field):
    kwargs = {"alpha": None, "alpha_tilde": None, **kwargs}
    with pytest.raises(ConfigError, match=field):
        PhaseModule(FullyConnected(4, 1, input_dim=3), **kwargs)


def test_alpha_tilde_needs_a_width():
    with pytest.raises(ConfigError, match="alpha_tilde"):
        PhaseModule(nn.Linear(3, 1), alpha_tilde=1.0)
    assert PhaseModule(nn.Linear(3, 1), alpha=2.0).alpha_tilde is None


def test_net_with_wrong_output_shape_is_refused():
    m = PhaseModule(nn.Linear(3, 2), alpha=1.0)
    with pytest.raises(ConfigError, match="model.net.init_args.out_dim"):  # two outputs for ±1 labels
        m.check_net(torch.randn(5, 3), torch.ones(5))
    m.check_net(torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1]))  # two classes: accepted
    with pytest.raises(ConfigError, match="model.net.init_args.out_dim"):  # three classes, two outputs
        m.check_net(torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(ConfigError, match="model.net"):
        PhaseModule(nn.Conv1d(1, 2, 1), alpha=1.0).check_net(torch.randn(5, 1, 3))
    PhaseModule(nn.Linear(3, 1), alpha=1.0).check_net(torch.randn(5, 3))  # (P, 1) is accepted


def test_stall_check_fires_only_without_progress():
    assert not stall_check([1.0, 0.9, 0.8], window=2, rtol=1e-3)
    assert stall_check([1.0, 1.0, 0.99999], window=2, rtol=1e-3)
    assert not stall_check([1.0, 1.0], window=2, rtol=1e-3)  # not enough history yet


def test_stop_rules_decide_in_priority_order():
    rules = StopRules(when_fitted=True, max_time=5.0)
    assert rules._decide(float("nan"), 0, 0.0, 0.0) is StopReason.DIVERGED
    assert rules._decide(0.1, 0, 10.0, 0.0) is StopReason.ALL_MARGINS_MET
    assert rules._decide(0.1, 3, 10.0, 0.0) is StopReason.TIME_BUDGET
    assert rules._decide(0.1, 3, 1.0, 0.0) is None
    assert StopRules(wall_cap_seconds=1.0)._decide(0.1, 3, 0.0, 2.0) is StopReason.WALL_CAP


@pytest.mark.parametrize("kwargs,field", [
    ({"stall_window": 0}, "stop.stall_window"), ({"max_time": -1.0}, "stop.max_time"),
    ({"when_fitted": "yes"}, "stop.when_fitted"), ({"check_every": 0}, "stop.check_every"),
])
def test_bad_stop_rules_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        StopRules(**kwargs)


def test_stall_window_counts_steps_not_checks():
    rules = StopRules(when_fitted=False, stall_window=100, stall_rtol=1e-3, check_every=10)
    decisions = [rules._decide(1.0, 5, 0.0, 0.0) for _ in range(11)]  # 11 checks = 100 steps, flat loss
    assert decisions[:10] == [None] * 10 and decisions[10] is StopReason.LOSS_STALLED
