"""The SAT / UNSAT / UNDECIDED decision, dead points and learning-rate schedules (issue 8)."""

from __future__ import annotations

import json
import logging
import math
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lightning_phase import PhaseModule
from lightning_phase.callbacks import StopRules
from lightning_phase.data import PhaseDataModule
from lightning_phase.errors import ConfigError
from lightning_phase.losses import n_delta
from lightning_phase.nets import ConvNet, FullyConnected
from lightning_phase.observables import (
    FitState,
    LossConvergence,
    dead_points,
    decide_history,
    decision_record,
    fit_state,
    n_delta_tol,
    ntk_diagonal,
    ntk_loop,
)
from lightning_phase.optim import GradientFlow

f64 = torch.float64


# ---- the decision on constructed margins and loss histories -----------------------------------------
def test_sat_at_tolerance_although_strict_n_delta_is_positive():
    delta = torch.tensor([-0.5, 1e-13, 3e-6, 8e-4, -2.0], dtype=f64)  # Adam's round-off leftovers
    assert int(n_delta(delta)) == 3 and int(n_delta_tol(delta)) == 0
    assert fit_state(float(delta.max()), converged=False) is FitState.SAT
    assert fit_state(float(delta.max()), converged=False, delta_tol=0.0) is FitState.UNDECIDED
    rec = decision_record(delta, converged=False)
    assert rec["fit_state"] == "SAT" and rec["n_delta_tol"] == 0 and rec["delta_max"] == 8e-4


def _history(loss_of_t, n_steps=4000, lr=0.1):
    steps = np.arange(1, n_steps + 1)
    t = lr * steps
    return steps, loss_of_t(t), t


def test_converged_positive_loss_is_unsat():
    steps, loss, t = _history(lambda t: 0.2 + 0.5 * np.exp(-t / 5))
    assert decide_history(steps, loss, t, delta_max=0.7) is FitState.UNSAT
    # the same history with every margin met is SAT: SAT is judged first
    assert decide_history(steps, loss, t, delta_max=1e-4) is FitState.SAT


def test_falling_loss_is_undecided_never_unsat():
    steps, loss, t = _history(lambda t: 1 / (1 + t))
    assert decide_history(steps, loss, t, delta_max=0.3) is FitState.UNDECIDED


def test_slow_power_law_sat_dynamics_are_not_mistaken_for_unsat():
    # L ∝ t^{-0.01} falls by 0.7% per doubling of t: slow, but not converged (a fixed 100-step window
    # with rtol 1e-3 would have called it stalled)
    steps, loss, t = _history(lambda t: t ** -0.01, n_steps=20000)
    assert decide_history(steps, loss, t, delta_max=0.05) is FitState.UNDECIDED
    window = loss[-101:]
    assert window[0] - window[1:].min() < 1e-3 * window[0]  # the old stall rule fires here


def test_flat_loss_while_flow_time_stops_is_undecided():
    steps = np.arange(1, 4001)
    t = np.minimum(0.1 * steps, 10.0)  # the rate decayed to 0 at step 100
    loss = 0.3 + 0.1 * np.exp(-t)
    assert decide_history(steps, loss, t, delta_max=0.5) is FitState.UNDECIDED


def test_unsat_waits_for_min_steps():
    steps, loss, t = _history(lambda t: 0.2 + 0 * t, n_steps=500)
    assert decide_history(steps, loss, t, delta_max=0.5, min_steps=1000) is FitState.UNDECIDED
    assert decide_history(steps, loss, t, delta_max=0.5, min_steps=100) is FitState.UNSAT


def test_resumed_convergence_state_decides_as_unbroken():
    steps, loss, t = _history(lambda t: 0.2 + 0.5 * np.exp(-t / 10), n_steps=3000)
    whole = LossConvergence(min_steps=100)
    a = [whole.update(int(s), float(v), float(u)) for s, v, u in zip(steps, loss, t, strict=True)]
    first = LossConvergence(min_steps=100)
    b = [first.update(int(s), float(v), float(u)) for s, v, u in zip(steps[:1234], loss[:1234], t[:1234],
                                                                   strict=True)]
    second = LossConvergence(min_steps=100)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))  # through a checkpoint's JSON
    b += [second.update(int(s), float(v), float(u)) for s, v, u in zip(steps[1234:], loss[1234:], t[1234:],
                                                                     strict=True)]
    assert a == b and any(a)


@pytest.mark.parametrize("kwargs,field", [
    ({"delta_tol": -1.0}, "stop.delta_tol"), ({"unsat_rtol": 0.0}, "stop.unsat_rtol"),
    ({"unsat_min_steps": 0}, "stop.unsat_min_steps"), ({"when_unsat": 1}, "stop.when_unsat"),
])
def test_bad_decision_settings_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        StopRules(**kwargs)


# ---- dead points: the NTK diagonal against brute-force per-sample gradients --------------------------
@pytest.mark.parametrize("bias", [0.0, 0.5])
def test_ntk_diagonal_equals_per_sample_gradient_norms(bias):
    net = FullyConnected(7, 2, "softplus", 3.0, bias, 5, seed=0).to(f64)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=f64)
    ref = ntk_loop(net, x).diagonal()
    torch.testing.assert_close(ntk_diagonal(net, x), ref, rtol=1e-12, atol=0)


def test_ntk_diagonal_of_any_module_by_jacobian_rows():
    net = ConvNet(3, in_channels=1, kernel_size=3, activation="swish", activation_beta=2.0, input_dim=64,
                  seed=0).to(f64)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(4), dtype=f64)
    torch.testing.assert_close(ntk_diagonal(net, x, chunk=2), ntk_loop(net, x).diagonal(), rtol=1e-12, atol=0)


def _net_with_dead_points():
    """ReLU, no biases, width 3: W⁰ > 0, so inputs with every entry < 0 switch every unit off (dead)."""
    net = FullyConnected(3, 1, "relu", input_dim=4, seed=0).to(f64)
    with torch.no_grad():
        net.layers[0].weight.abs_()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(10, 4, generator=g, dtype=f64).abs()
    x[::3] *= -1  # points 0, 3, 6, 9 dead
    return net, x


def test_dead_points_equal_brute_force_zero_gradients():
    net, x = _net_with_dead_points()
    delta = torch.tensor([0.5, 0.5, -0.1, -0.2, 0.3, 0.2, 0.4, 1e-5, 0.1, 0.9], dtype=f64)
    norms = []
    for xi in x:  # brute force: ‖∇_w f(x_μ)‖² by one autograd call per sample
        g = torch.autograd.grad(net(xi.unsqueeze(0)).sum(), list(net.parameters()))
        norms.append(sum(float(gi.pow(2).sum()) for gi in g))
    norms = torch.tensor(norms, dtype=f64)
    expected = (delta > 1e-3) & (norms == 0)
    got = dead_points(net, x, delta)
    assert torch.equal(got, expected) and int(got.sum()) == 3  # point 3 is dead but its margin is met
    assert decision_record(delta, False, 1e-3, net, x)["margins_n_dead"] == 3


# ---- the decision inside real runs: three losses × GD, Adam, GradientFlow -----------------------------
@pytest.fixture(autouse=True)
def _quiet():
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


OPTIMIZERS = {
    "gd": lambda p: torch.optim.SGD(p, lr=1.0),
    "adam": lambda p: torch.optim.Adam(p, lr=0.05),
    "flow": lambda p: GradientFlow(p),
}


def _run(loss, opt, width, n_train=30, steps=2000, activation="relu", lr_scheduler=None, **stop):
    dm = PhaseDataModule(dataset="random", n_train=n_train, n_test=10, dim=5, data_seed=0)
    beta = 5.0 if activation == "softplus" else 1.0
    net = FullyConnected(width, 1, activation, beta, bias=1.0, input_dim=5, seed=0).to(f64)
    module = PhaseModule(net, alpha_tilde=10.0, loss=loss, optimizer=OPTIMIZERS.get(opt, opt),
                         lr_scheduler=lr_scheduler)
    rules = StopRules(**{"unsat_min_steps": 200, **stop})
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[rules],
                         precision="64-true", num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, dm)
    return rules, module, dm


@pytest.mark.parametrize("loss", ["quadratic_hinge", "hinge", "soft_hinge"])
@pytest.mark.parametrize("opt", ["gd", "adam"])
def test_wide_net_is_sat_narrow_net_is_unsat(loss, opt):
    rules, module, dm = _run(loss, opt, width=32, n_train=16)
    assert rules.summary()["fit_state"] == "SAT" and rules.reason.value == "ALL_MARGINS_MET"
    final = module.evaluate(dm.x_train.to(f64), dm.y_train.to(f64))
    assert final["delta_max"] <= 1e-3 and rules.summary()["n_delta_tol"] == 0  # decided on the final weights
    if opt == "adam":  # GD's narrow runs drift for thousands of steps: UNDECIDED at this budget (not UNSAT)
        rules, _, _ = _run(loss, opt, width=1)
        s = rules.summary()
        assert s["fit_state"] == "UNSAT" and rules.reason.value == "LOSS_CONVERGED" and s["n_delta_tol"] > 3


@pytest.mark.parametrize("loss", ["quadratic_hinge", "soft_hinge"])
def test_gradient_flow_decides_sat_and_unsat(loss):
    # smooth activation: ReLU kinks make the adaptive step collapse (the run is then UNDECIDED, not UNSAT)
    rules, _, _ = _run(loss, "flow", width=64, n_train=8, steps=1500, activation="softplus")
    assert rules.summary()["fit_state"] == "SAT"
    if loss == "quadratic_hinge":
        rules, _, _ = _run(loss, "flow", width=1, n_train=30, steps=1500, activation="softplus", unsat_rtol=1e-2)
        assert rules.summary()["fit_state"] == "UNSAT"


def test_hinge_gradient_flow_that_cannot_advance_is_undecided():
    rules, module, _ = _run("hinge", "flow", width=16, steps=300)
    assert rules.summary()["fit_state"] == "UNDECIDED" and rules.reason.value == "STEP_BUDGET"


def test_run_is_sat_by_decision_although_strict_n_delta_is_positive():
    rules, module, dm = _run("quadratic_hinge", lambda p: torch.optim.Adam(p, lr=0.02), width=10, n_train=40)
    s = rules.summary()
    strict = module.evaluate(dm.x_train.to(f64), dm.y_train.to(f64))["n_delta"]
    assert s["fit_state"] == "SAT" and s["n_delta_tol"] == 0 and strict > 0
    assert s["margins_n_dead"] == 0 and 0 < s["delta_max"] <= 1e-3


def test_strict_tolerance_zero_trains_longer_for_round_off():
    adam = lambda p: torch.optim.Adam(p, lr=0.02)  # noqa: E731
    _, tolerant, _ = _run("quadratic_hinge", adam, width=10, n_train=40)
    rules, strict, _ = _run("quadratic_hinge", adam, width=10, n_train=40, delta_tol=0.0)
    assert rules.summary()["n_delta_tol"] == 0 and rules.summary()["delta_tol"] == 0.0
    assert strict.trainer.global_step > tolerant.trainer.global_step


# ---- learning-rate schedules --------------------------------------------------------------------------
def test_multistep_scheduler_changes_rate_and_flow_time_follows():
    from torch.optim.lr_scheduler import MultiStepLR

    sched = lambda opt: MultiStepLR(opt, milestones=[5, 10], gamma=0.1)  # noqa: E731
    _, module, _ = _run("soft_hinge", lambda p: torch.optim.SGD(p, lr=0.1), width=4, steps=15,
                        lr_scheduler=sched, when_fitted=False, when_unsat=False)
    assert module.flow_time == pytest.approx(5 * 0.1 + 5 * 0.01 + 5 * 0.001, rel=1e-12)
    assert module.scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_plateau_scheduler_reduces_rate_on_a_flat_training_loss():
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    sched = lambda opt: ReduceLROnPlateau(opt, factor=0.5, patience=2, eps=0.0)  # noqa: E731
    # lr 1e-12: the loss does not move, so every step after the first is a bad one
    _, module, _ = _run("soft_hinge", lambda p: torch.optim.SGD(p, lr=1e-12), width=4, steps=10,
                        lr_scheduler=sched, when_fitted=False, when_unsat=False)
    lrs = [1e-12] * 4 + [5e-13] * 3 + [2.5e-13] * 3  # reduced after steps 4 and 7 (3 bad steps each)
    assert module.flow_time == pytest.approx(sum(lrs), rel=1e-9)
    assert math.isclose(module.scheduler.optimizer.param_groups[0]["lr"], 1.25e-13, rel_tol=1e-9)


# ---- tails you can trust: the flags of the Δ tail fits ----------------------------------------------
def _power_law_sides(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=n) ** (1 / 1.3), -rng.uniform(size=n) ** (1 / 0.8)  # θ = 0.3, γ = 0.2


@pytest.mark.parametrize("cutoff", ["ks_pass", "csn"])
def test_both_cutoff_rules_recover_the_exponents_without_flags(cutoff):
    from lightning_phase.observables import tail_exponents

    pos, neg = _power_law_sides()
    fit = tail_exponents(np.concatenate([pos, neg]), n_boot=10, cutoff=cutoff)
    assert abs(fit.theta - 0.3) < 0.1 and abs(fit.gamma - 0.2) < 0.1 and fit.cutoff == cutoff
    assert not (fit.floor_pos or fit.floor_neg or fit.pos_below_tol)


def test_cutoff_at_its_floor_is_flagged():
    from lightning_phase.observables import tail_exponents

    rng = np.random.default_rng(0)
    shifted = 1 + rng.uniform(size=2000)  # no power law near 0: every k fails the KS test
    fit = tail_exponents(shifted, n_boot=5)
    assert fit.k_pos == 50 and fit.floor_pos and not fit.floor_neg


def test_theta_fitted_on_round_off_sized_delta_is_flagged():
    from lightning_phase.observables import tail_exponents

    pos, neg = _power_law_sides()
    fit = tail_exponents(np.concatenate([1e-9 * pos, neg]), n_boot=5)  # SAT leftovers: Δ ≤ 1e-9
    assert fit.pos_below_tol and fit.cut_pos < 1e-3
    with pytest.raises(ValueError, match="cutoff"):
        tail_exponents(pos, cutoff="median")


# ---- members: one decision per member, equal to each member's single run ---------------------------
def test_each_member_decides_as_its_single_run():
    from _flow_helpers import ToyData, fc, trainer

    def run(net, members, steps):
        module = PhaseModule(net, alpha_tilde=1.0, optimizer=lambda p: torch.optim.SGD(p, lr=0.5),
                             members=members).double()
        rules = StopRules(unsat_min_steps=20)
        trainer(rules, max_steps=steps).fit(module, datamodule=ToyData(n_train=32))
        return rules.summary()

    for steps in (30, 400):  # at 30 steps some members are SAT, others UNDECIDED; at 400 all SAT
        many = run(fc(12, seed=4), 3, steps)
        singles = [run(fc(12, seed=4 + k), 1, steps)["fit_state"] for k in range(3)]
        assert many["member_fit_state"] == singles and many["fit_state"] == singles[0]
        assert len(set(singles)) == (2 if steps == 30 else 1)
