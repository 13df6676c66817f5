"""Observables per member: each member's margins, NTK change and weights change equal its single run's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from _flow_helpers import D, ToyData, fc, trainer
from test_members import QUICK, Tanh2, _gf, _sgd

from lightning_phase import PhaseModule
from lightning_phase.callbacks import LogSpacedSchedule, Margins, NTKChange, TimeScale, WeightsChange
from lightning_phase.callbacks.stopping import StopRules
from lightning_phase.cli import main
from lightning_phase.nets import FullyConnected, Members
from lightning_phase.observables import kernel_change, kernel_stats, margins, n_delta, ntk, weights_change
from lightning_phase.observables.members import (
    delta_stats,
    kernel_change_members,
    kernel_stats_members,
    ntk_members,
    weights_change_members,
)

K = 3
TOL = 1e-10


def _moved(m: Members, scale: float = 0.3) -> Members:
    """A copy of m whose weights moved by a seeded random step (a trained state stand-in)."""
    moved = Members([m.member(k) for k in range(m.members)], m.seeds)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in moved.stacked:
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return moved


@pytest.mark.parametrize("make", [
    lambda: FullyConnected(7, 2, "softplus", 5.0, bias=0.5, input_dim=D, seed=3).double(),
    lambda: FullyConnected(6, 1, "relu", input_dim=D, seed=3, out_dim=3).double(),
    lambda: Tanh2(5, seed=3).double(),
], ids=["fc_bias", "fc_classes", "generic"])
def test_pure_member_observables_equal_the_single_net_ones(make):
    x = torch.randn(9, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    m0 = Members.from_net(make(), K)
    m = _moved(m0)
    theta0, theta = ntk_members(m0, x), ntk_members(m, x)
    assert theta.shape == (K, 9, 9)
    change, stats = kernel_change_members(theta0, theta), kernel_stats_members(theta)
    w_change = weights_change_members(m, m0)
    F = m(x)
    y = torch.sign(x[:, 0]) if F.dim() == 2 else torch.arange(9) % 3
    d_stats = delta_stats(margins(F, y))
    for k in range(K):
        single, single0 = m.member(k), m0.member(k)
        t_k = ntk(single, x)
        torch.testing.assert_close(theta[k], t_k, rtol=0, atol=1e-12)
        torch.testing.assert_close(theta0[k], ntk(single0, x), rtol=0, atol=1e-12)
        assert float(change[k]) == pytest.approx(kernel_change(ntk(single0, x), t_k), rel=1e-12)
        for key, v in kernel_stats(t_k).items():
            assert float(stats[key][k]) == pytest.approx(v, rel=1e-12)
        for key, v in weights_change(single, single0).items():
            assert float(w_change[key][k]) == pytest.approx(v, rel=1e-12)
        delta = margins(single(x), y)
        assert int(d_stats["n_delta"][k]) == int(n_delta(delta))
        assert float(d_stats["min"][k]) == pytest.approx(float(delta.min()), abs=1e-13)
        assert float(d_stats["median"][k]) == pytest.approx(float(delta.median()), abs=1e-13)
    assert float(change.min()) > 0 and len(set(w_change["total"].tolist())) == K  # the members differ


def test_delta_stats_of_a_diverged_member_are_nan():
    delta = torch.tensor([[0.5, -0.2, 0.1], [float("nan"), 0.3, -1.0]], dtype=torch.float64)
    s = delta_stats(delta)
    assert s["n_delta"][0] == 2 and s["n_delta_over_p"][0] == pytest.approx(2 / 3)
    assert all(math.isnan(float(v[1])) for v in s.values())


class KernelToy(ToyData):
    """ToyData with a fixed kernel set (the first 12 training points), for NTKChange."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.x_kernel, self.y_kernel = self.x_train[:12], self.y_train[:12]


def _callbacks():
    every = LogSpacedSchedule(points_per_decade=20)
    return [NTKChange(n_points=12, schedule=every), WeightsChange(schedule=every),
            Margins(schedule=every, histogram=False, k_min=3, n_boot=4)]


def _fit(net, opt, members, data, max_steps):
    module = PhaseModule(net, alpha_tilde=3.0, optimizer=opt, members=members).double()
    cbs = _callbacks()
    trainer(StopRules(when_fitted=True), *cbs, max_steps=max_steps).fit(module, datamodule=data)
    return module, cbs


@pytest.mark.parametrize("opt", [_sgd, _gf], ids=["sgd", "gradient_flow"])
def test_member_measurements_equal_single_runs_with_seed_plus_k(opt):
    data = KernelToy(n_train=32)
    many, cbs = _fit(fc(10, seed=4), opt, K, data, max_steps=40)
    keys = {"ntk/rel_change", "ntk/norm", "ntk/top_eig", "ntk/trace", "weights/change", "weights/change/layers.0",
            "margins/n_delta", "margins/min", "margins/median"}
    for cb in cbs:
        assert len(cb.last_members) == K
        mean_keys = [t for t in cb.last if not t.startswith("member_")]
        for t in mean_keys:  # the logged plain tag is the members' mean, member_<k>/tag each member's
            vals = [m[t] for m in cb.last_members]
            assert cb.last[t] == pytest.approx(sum(vals) / K, rel=1e-12)
            assert [cb.last[f"member_{k}/{t}"] for k in range(K)] == vals
    seen = set()
    for k in range(K):
        single, single_cbs = _fit(fc(10, seed=4 + k), opt, 1, data, max_steps=40)
        assert single.trainer.global_step > 1
        for cb, ref in zip(cbs, single_cbs, strict=True):
            assert cb.last_step == many.trainer.global_step
            assert set(ref.last) == set(cb.last_members[k])
            for tag, v in ref.last.items():
                assert cb.last_members[k][tag] == pytest.approx(v, rel=TOL, abs=TOL), (k, tag)
                seen.add(tag)
            assert cb.member_summaries()[k].keys() == ref.summary().keys()
            for key, v in ref.summary().items():
                got = cb.member_summaries()[k][key]
                assert got == (pytest.approx(v, rel=1e-8, abs=TOL) if isinstance(v, float) else v), (k, key)
    assert keys <= seen
    assert cbs[2].member_fits[0]["theta"] is not None or cbs[2].member_fits[0]["gamma"] is not None


@pytest.mark.parametrize("opt", [_sgd, _gf], ids=["sgd", "gradient_flow"])
def test_member_t1_equals_single_runs_on_each_members_clock(opt):
    data = ToyData(n_train=32)
    steps = 80 if opt is _sgd else 400  # GradientFlow starts with small dt

    def fit(seed, members):
        module = PhaseModule(fc(10, seed=seed), alpha_tilde=[0.5, 5.0, 50.0] if members else 5.0,
                             optimizer=opt).double()
        ts = TimeScale()
        trainer(StopRules(when_fitted=True), ts, max_steps=steps).fit(module, datamodule=data)
        return ts

    many = fit(4, True)   # members in α̃: t₁ differs between them
    assert len(many.member_t1) == 3
    found = [t for t in many.member_t1 if t is not None]
    assert len(set(found)) >= 2   # at least two members reach t₁, at different times
    for k, a in enumerate([0.5, 5.0, 50.0]):
        module = PhaseModule(fc(10, seed=4), alpha_tilde=a, optimizer=opt).double()
        single = TimeScale()
        trainer(StopRules(when_fitted=True), single, max_steps=steps).fit(module, datamodule=data)
        if single.t1 is None:   # not reached within the budget: not by the member either
            assert many.member_t1[k] is None
        else:
            assert many.member_t1[k] == pytest.approx(single.t1, rel=1e-12)
        assert many.member_loss0[k] == pytest.approx(single.loss0, rel=1e-12)
        assert many.member_summaries()[k]["t1"] == many.member_t1[k]


def _cli(*args) -> dict:
    before = set(Path().glob("runs/*/*/summary.json"))
    assert main(["fit", "--config", QUICK, "--trainer.enable_progress_bar=false", "--trainer.max_steps=30",
                 "--data.n_train=60", "--data.n_test=20", "--data.n_kernel=20", "--model.net.init_args.width=8",
                 "--trainer.callbacks+=lightning_phase.callbacks.WeightsChange",
                 "--trainer.callbacks+=lightning_phase.callbacks.NTKChange",
                 "--trainer.callbacks.init_args.n_points=20",
                 "--trainer.callbacks+=lightning_phase.callbacks.Margins",
                 "--trainer.callbacks.init_args.k_min=5", "--trainer.callbacks.init_args.n_boot=3", *args]) == 0
    (new,) = set(Path().glob("runs/*/*/summary.json")) - before
    return json.loads(new.read_text())


def test_cli_summary_lists_each_members_measurements():
    many = _cli("--model.members=2", "--seed_everything=5")
    keys = ("weights_change", "ntk_rel_change", "ntk_norm0", "margins_n_delta", "theta", "gamma")
    assert {k: many[k] for k in keys} == {k: many["members"][0][k] for k in keys}  # top level = member 0
    single = _cli("--seed_everything=6")
    for key in keys:
        v = single[key]
        got = many["members"][1][key]
        assert got == (pytest.approx(v, rel=1e-8) if isinstance(v, float) else v), key
    assert many["members"][0]["weights_change"] != many["members"][1]["weights_change"]
