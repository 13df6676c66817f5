"""Each observable against a brute-force definition in float64 (STYLE.md §2.8), plus the lazy-slope check."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from lightning_phase.losses import get_loss
from lightning_phase.nets import ACTIVATIONS, ConvNet, FullyConnected
from lightning_phase.observables import (
    hessian,
    hessian_spectrum,
    kernel_change,
    kernel_stats,
    margins,
    n_delta,
    ntk,
    ntk_loop,
    output_norm,
    power_law_mle,
    t1,
    tail_exponents,
    weights_change,
)
from lightning_phase.observables._ntk_modules import Unsupported

f64 = torch.float64


def _perturbed_fc(activation="softplus", bias=0.0, width=7, depth=2, d=5, seed=0):
    """A tiny float64 FC net with every parameter (biases included) moved away from its init."""
    beta = 0.2 if activation == "leaky_relu" else 3.0
    net = FullyConnected(width, depth, activation, beta, bias, d, seed=seed).to(f64)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=f64))
    return net


def _x(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=f64)


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


# ---- NTK --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [0.0, 0.7])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fc_ntk_both_paths_equal_jacobian_product(activation, bias):
    net = _perturbed_fc(activation, bias, depth=2)
    x, x2 = _x(6, 5, 1), _x(4, 5, 2)
    for method in ("layerwise", "modules", "jacobian"):
        assert _rel(ntk(net, x, method=method), ntk_loop(net, x)) < 1e-10
        assert _rel(ntk(net, x, x2, method=method), ntk_loop(net, x, x2)) < 1e-10


def test_fc_ntk_depth_one_and_three():
    for depth in (1, 3):
        net = _perturbed_fc("relu", 0.5, depth=depth)
        x = _x(5, 5, 3)
        assert _rel(ntk(net, x), ntk_loop(net, x)) < 1e-10


@pytest.mark.parametrize("method", ["modules", "jacobian"])
def test_convnet_generic_ntk_equals_jacobian_product_in_chunks(method):
    net = ConvNet(3, in_channels=1, kernel_size=3, activation="swish", activation_beta=2.0, input_dim=64,
                  seed=0).to(f64)
    x, x2 = _x(5, 64, 4), _x(3, 64, 5)
    theta = ntk(net, x, method=method, chunk=2)  # 3 row blocks, symmetric fill
    assert _rel(theta, ntk_loop(net, x)) < 1e-10 and _rel(theta, theta.T) < 1e-14
    assert _rel(ntk(net, x, x2, method=method, chunk=2), ntk_loop(net, x, x2)) < 1e-10


def test_modules_path_on_torch_layers_and_fallback_for_shared_weights():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Unflatten(1, (2, 4, 4)), torch.nn.Conv2d(2, 3, 3), torch.nn.Tanh(),
                              torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.Softplus(),
                              torch.nn.Linear(5, 1), torch.nn.Flatten(0)).to(f64)
    x = _x(6, 32, 10)
    assert _rel(ntk(net, x, method="modules"), ntk_loop(net, x)) < 1e-10

    class Shared(torch.nn.Module):  # the same Linear twice: not module-wise separable
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x))).sum(1)

    shared, x = Shared().to(f64), _x(5, 4, 11)
    with pytest.raises(Unsupported):
        ntk(shared, x, method="modules")
    assert _rel(ntk(shared, x), ntk_loop(shared, x)) < 1e-10  # auto falls back to the Jacobian path


def test_ntk_of_frozen_initial_net_is_theta0():
    net = _perturbed_fc("relu", 0.0)
    frozen = copy.deepcopy(net).requires_grad_(False)
    x = _x(6, 5, 6)
    ref = ntk_loop(net, x)
    assert _rel(ntk(frozen, x), ref) < 1e-10
    assert _rel(ntk(frozen, x, method="jacobian"), ref) < 1e-10
    assert _rel(ntk(frozen, x, method="modules"), ref) < 1e-10


def test_kernel_change_and_stats_definitions():
    k0 = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=f64)
    kt = torch.tensor([[2.0, 1.0], [1.0, 5.0]], dtype=f64)
    assert kernel_change(k0, kt) == pytest.approx(3 / math.sqrt(10))
    s = kernel_stats(k0)
    assert s["trace"] == 4 and s["top_eig"] == pytest.approx(3.0)
    assert s["norm"] == pytest.approx(math.sqrt(10))


# ---- margins and tails ----------------------------------------------------------------------------
def test_margins_and_n_delta_accept_member_axis():
    F = torch.tensor([[2.0, 0.5, -1.0], [1.0, 1.5, 0.0]], dtype=f64)  # (K=2, P=3)
    y = torch.tensor([1.0, 1.0, -1.0], dtype=f64)
    d = margins(F, y)
    assert torch.equal(d, torch.tensor([[-1.0, 0.5, 0.0], [0.0, -0.5, 1.0]], dtype=f64))
    assert n_delta(d).tolist() == [1, 1]
    assert output_norm(F).tolist() == pytest.approx([math.sqrt(21 / 4 / 3), math.sqrt(13 / 4 / 3)])


def test_power_law_mle_is_the_lower_tail_hill_estimator():
    v = np.array([0.1, 0.2, 0.4, 0.8, 1.0])
    a, u = power_law_mle(v, 4)
    assert u == 1.0 and a == pytest.approx(3 / np.log(1 / (0.1 * 0.2 * 0.4 * 0.8)) - 1)


def test_tail_exponents_recover_known_power_laws():
    rng = np.random.default_rng(0)
    pos = rng.random(5000) ** (1 / 1.3)  # p(Δ) ∝ Δ^0.3 on (0, 1)
    neg = -(rng.random(5000) ** (1 / 0.8))  # p(−Δ) ∝ (−Δ)^−0.2 on (0, 1)
    fit = tail_exponents(np.concatenate([pos, neg]), n_boot=40, seed=1)
    assert abs(fit.theta - 0.3) < 0.05 and abs(fit.gamma - 0.2) < 0.05
    assert 0.005 < fit.theta_err < 0.05 and 0.005 < fit.gamma_err < 0.05


def test_tail_cutoff_keeps_only_the_power_law_range_near_zero():
    rng = np.random.default_rng(2)
    pos = np.concatenate([0.1 * rng.random(2000) ** (1 / 1.3), 0.1 + rng.exponential(1.0, 3000)])
    neg = -np.concatenate([0.1 * rng.random(2000) ** (1 / 0.8), 0.1 + rng.exponential(1.0, 3000)])
    fit = tail_exponents(np.concatenate([pos, neg]), n_boot=20)
    assert fit.cut_pos <= 0.15 and fit.cut_neg <= 0.15
    assert abs(fit.theta - 0.3) < 0.1 and abs(fit.gamma - 0.2) < 0.1


def test_tail_exponents_too_few_values_give_none():
    fit = tail_exponents(torch.tensor([0.1, 0.2, -0.3], dtype=f64), n_boot=5)
    assert fit.theta is None and fit.gamma is None and fit.n_pos == 2 and fit.n_neg == 1


# ---- weights change, t1 -------------------------------------------------------------------------------
def test_weights_change_on_hand_made_shift():
    net0 = FullyConnected(4, 1, "relu", input_dim=3, seed=0).to(f64)
    net = copy.deepcopy(net0)
    with torch.no_grad():
        net.layers[0].weight.add_(1.0)  # ‖δ‖² = 12
    n0 = [float(layer.weight.detach().pow(2).sum()) for layer in net0.layers]
    wc = weights_change(net, net0)
    assert wc["total"] == pytest.approx(2 * math.sqrt(12 / sum(n0)))  # √h = 2
    assert wc["layers.0"] == pytest.approx(2 * math.sqrt(12 / n0[0])) and wc["layers.1"] == 0


def test_t1_is_first_time_below_half_the_start():
    times = [0.0, 0.5, 1.0, 1.5, 2.0]
    assert t1(times, [1.0, 0.8, 0.5, 0.49, 0.1]) == 1.5  # 0.5 is not below 1/2
    assert t1(times, [1.0, 0.9, 0.8, 0.7, 0.6]) is None


# ---- Hessian --------------------------------------------------------------------------------------------
def _tiny_problem(loss="soft_hinge"):
    net = _perturbed_fc("softplus", 0.5, width=5, depth=2, d=3)
    x = _x(8, 3, 7)
    y = torch.sign(_x(8, 1, 8).squeeze(1))
    f0 = 0.1 * _x(8, 1, 9).squeeze(1)
    return net, x, y, 2.0, get_loss(loss, beta=3.0), f0


def _grad_flat(net, x, y, alpha, loss_fn, f0):
    params = list(net.parameters())
    L = loss_fn(y * alpha * (net(x) - f0)).mean() / alpha**2
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(L, params)])


@pytest.mark.parametrize("loss", ["soft_hinge", "quadratic_hinge"])
def test_hessian_matches_finite_differences_of_the_gradient(loss):
    net, x, y, alpha, loss_fn, f0 = _tiny_problem(loss)
    H, _ = hessian(net, x, y, alpha, loss_fn, f0)
    params = list(net.parameters())
    w = torch.cat([p.detach().reshape(-1) for p in params])
    eps, cols = 1e-5, []

    def set_w(v):
        torch.nn.utils.vector_to_parameters(v, params)

    for i in range(len(w)):
        e = torch.zeros_like(w)
        e[i] = eps
        set_w(w + e)
        gp = _grad_flat(net, x, y, alpha, loss_fn, f0)
        set_w(w - e)
        gm = _grad_flat(net, x, y, alpha, loss_fn, f0)
        cols.append((gp - gm) / (2 * eps))
    set_w(w)
    assert _rel(H, torch.stack(cols, 1)) < 1e-7


def test_gauss_newton_part_is_jam_h0_for_quadratic_hinge():
    net, x, y, alpha, loss_fn, f0 = _tiny_problem("quadratic_hinge")
    _, H0 = hessian(net, x, y, alpha, loss_fn, f0)
    params = list(net.parameters())
    h0 = torch.zeros_like(H0)
    for mu in range(len(y)):  # [JAM]: α²H₀ = (1/P) Σ_{Δ>0} ∇Δ∇Δᵀ, Δ = 1 − yα(f − f₀)
        delta = 1 - y[mu] * alpha * (net(x[mu : mu + 1])[0] - f0[mu])
        if delta > 0:
            g = torch.cat([gi.reshape(-1) for gi in torch.autograd.grad(delta, params)])
            h0 += torch.outer(g, g) / len(y)
    assert _rel(alpha**2 * H0, h0) < 1e-10


def test_lanczos_extremes_match_dense_eigvalsh():
    net, x, y, alpha, loss_fn, f0 = _tiny_problem("quadratic_hinge")
    dense = hessian_spectrum(net, x, y, alpha, loss_fn, f0)
    lanczos = hessian_spectrum(net, x, y, alpha, loss_fn, f0, max_dense=0, k=3, n_lanczos=30)
    assert dense.method == "dense" and lanczos.method == "lanczos"
    for name in ("eig_h", "eig_h0", "eig_hp"):
        a, b = getattr(dense, name), getattr(lanczos, name)
        np.testing.assert_allclose(b[:3], a[:3], atol=1e-9)
        np.testing.assert_allclose(b[-3:], a[-3:], atol=1e-9)
    grid = np.linspace(dense.lambda_min - 1, dense.lambda_max + 1, 4001)
    for spec in (dense, lanczos):
        assert np.trapezoid(spec.density(grid, 0.01), grid) == pytest.approx(1.0, abs=1e-6)


# ---- physics: [FL] lazy slope ------------------------------------------------------------------------
def _train_to_fit(alpha_tilde, x, y, xk, width=64, lr=1.0, max_steps=5000):
    """Full-batch GD (no momentum) on L = (1/(α²P))Σ softplus_20(1 − yF) until N_Δ = 0; returns ‖ΔΘ‖/‖Θ₀‖."""
    net = FullyConnected(width, 2, "softplus", 5.0, input_dim=x.shape[1], seed=1).to(f64)
    net0 = copy.deepcopy(net).requires_grad_(False)
    alpha, loss_fn = alpha_tilde / math.sqrt(width), get_loss("soft_hinge")
    with torch.no_grad():
        f0 = net0(x)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(max_steps):
        F = alpha * (net(x) - f0)
        if int(n_delta(margins(F, y))) == 0:
            break
        opt.zero_grad()
        (loss_fn(y * F).mean() / alpha**2).backward()
        opt.step()
    else:
        raise AssertionError(f"α̃ = {alpha_tilde}: N_Δ > 0 after {max_steps} steps")
    return kernel_change(ntk(net0, xk), ntk(net, xk))


def test_kernel_change_falls_as_inverse_alpha_tilde_in_lazy_regime():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g, dtype=f64)
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(10)
    y = torch.sign(x[:, 0] + 0.3 * x[:, 1])
    xk = torch.randn(40, 10, generator=g, dtype=f64)
    alphas = np.array([1e2, 1e3, 1e4])
    change = np.array([_train_to_fit(a, x, y, xk) for a in alphas])
    slope = np.polyfit(np.log10(alphas), np.log10(change), 1)[0]
    assert abs(slope + 1) < 0.25, (slope, change)
    assert _train_to_fit(1.0, x, y, xk) > 1  # feature side: the kernel has moved by more than itself


def test_bootstrap_draws_the_resamples_of_rng_choice():
    """observables._stats.bootstrap: the statistic on rng.integers(0, n, n) resamples, the same draws as
    rng.choice(v, n) (so tail_exponents' errors did not change when it moved to the shared helper)."""
    from lightning_phase.observables._stats import bootstrap

    v = np.random.default_rng(5).standard_normal(17)
    got = bootstrap(lambda idx: v[idx].mean(), len(v), 40, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    want = np.array([rng.choice(v, len(v)).mean() for _ in range(40)])
    assert got.shape == (40,)
    np.testing.assert_array_equal(got, want)
    pair = bootstrap(lambda idx: (v[idx].min(), v[idx].max()), len(v), 5, np.random.default_rng(0))
    assert pair.shape == (5, 2) and np.all(pair[:, 0] <= pair[:, 1])
