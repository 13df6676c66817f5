"""model.members: K nets in one batched computation, member k == the single run with init seed + k."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from _flow_helpers import D, ToyData, fc, trainer
from torch import nn

from lightning_phase import ConfigError, PhaseModule
from lightning_phase.callbacks.stopping import StopReason, StopRules
from lightning_phase.cli import main
from lightning_phase.nets import FullyConnected, Members
from lightning_phase.nets.members import RecordsInitArgs
from lightning_phase.optim import GradientFlow

K = 3
QUICK = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
TOL = 1e-10


class Tanh2(RecordsInitArgs, nn.Module):
    """A generic net (not FullyConnected): exercises the torch.func path."""

    def __init__(self, hidden: int = 6, input_dim: int = D, seed: int | None = None):
        super().__init__()
        g = None if seed is None else torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(hidden, input_dim, generator=g))
        self.w2 = nn.Parameter(torch.randn(hidden, generator=g))

    def forward(self, x):
        return torch.tanh(x @ self.w1.t() / math.sqrt(x.shape[1])) @ self.w2 / math.sqrt(len(self.w2))


def _sgd(params):
    return torch.optim.SGD(params, lr=0.5)


def _adam(params):
    return torch.optim.Adam(params, lr=1e-2)


def _gf(params):
    return GradientFlow(params, max_dgrad=1e-4, max_dout=0.1)


def _run(net, opt, members=1, max_steps=60, stop=None, alpha_tilde=1.0, data=None, poison=None):
    module = PhaseModule(net, alpha_tilde=alpha_tilde, optimizer=opt, members=members).double()
    if poison is not None:  # make one member's loss NaN from the first step on
        with torch.no_grad():
            next(module.net.parameters())[poison].fill_(float("nan"))
    stop = stop or StopRules(when_fitted=True)
    trainer(stop, max_steps=max_steps).fit(module, datamodule=data or ToyData(n_train=32))
    return module, stop


@pytest.mark.parametrize("width", [5, 16])
def test_members_forward_equals_each_net(width):
    x = torch.randn(11, D, dtype=torch.float64)
    for net in (FullyConnected(width, 2, "softplus", 5.0, bias=0.5, input_dim=D, seed=3).double(),
                Tanh2(width, seed=3).double()):
        m = Members.from_net(net, K)
        assert m(x).shape == (K, 11)
        for k in range(K):
            ref = type(net)(*net.init_call[0], **{**net.init_call[1], "seed": 3 + k}).double()
            torch.testing.assert_close(m(x)[k], ref(x), rtol=0, atol=1e-14)
            assert torch.equal(m.member(k)(x), ref(x))


def test_members_without_net_seed_follow_the_global_seed_and_leave_it_alone():
    torch.manual_seed(11)
    net = FullyConnected(7, 2, input_dim=D).double()
    state = torch.random.get_rng_state()
    m = Members.from_net(net, K)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator did not move
    assert [s for _, s in m.seeds] == [11, 12, 13]
    torch.manual_seed(13)
    ref = FullyConnected(7, 2, input_dim=D).double()
    assert all(torch.equal(a, b) for a, b in zip(m.member(2).parameters(), ref.parameters()))


@pytest.mark.parametrize("opt", [_sgd, _adam, _gf], ids=["sgd", "adam", "gradient_flow"])
def test_members_equal_single_runs(opt):
    data = ToyData(n_train=32)
    many, stop = _run(fc(12, seed=4), opt, members=K, data=data)
    x, dts = data.x_train, []
    for k in range(K):
        single, single_stop = _run(fc(12, seed=4 + k), opt, data=data)
        member = many.net.member(k)
        for a, b in zip(member.parameters(), single.net.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=TOL)
        torch.testing.assert_close(many(x)[k], single(x), rtol=0, atol=TOL)
        assert stop.member_steps[k] == single.trainer.global_step
        assert stop.member_reasons[k] == single_stop.reason
        assert many.member_flow_time[k] == pytest.approx(single.flow_time, rel=1e-12, abs=0)
        if opt is _gf:  # each member its own adaptive dt, the one of its single run
            dts.append(single.optimizers().optimizer.param_groups[0]["dt"])
    if opt is _gf:
        assert many.optimizers().optimizer.member_stats()["dt"] == pytest.approx(dts, rel=1e-12)
        assert len(set(dts)) > 1


def test_members_fit_at_different_steps_and_the_others_go_on():
    _, stop = _run(fc(12, seed=4), _sgd, members=K)
    assert all(r == StopReason.ALL_MARGINS_MET for r in stop.member_reasons)
    assert len(set(stop.member_steps)) > 1  # the first to fit did not stop the rest


def test_a_diverged_member_does_not_stop_or_touch_the_others():
    data = ToyData(n_train=32)
    many, stop = _run(fc(12, seed=4), _sgd, members=K, data=data, poison=1)
    assert stop.member_reasons[1] == StopReason.DIVERGED and stop.member_steps[1] == 1
    single, _ = _run(fc(12, seed=6), _sgd, data=data)
    for a, b in zip(many.net.member(2).parameters(), single.net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=TOL)
    assert stop.member_steps[2] == single.trainer.global_step > 1


def test_members_gradient_flow_time_budget_lands_each_member_on_T():
    many, stop = _run(fc(12, seed=4), _gf, members=K, stop=StopRules(when_fitted=False, max_time=0.5), max_steps=400)
    assert many.member_flow_time == pytest.approx([0.5] * K, rel=1e-12)
    assert all(r == StopReason.TIME_BUDGET for r in stop.member_reasons)


def test_members_need_a_rebuildable_net():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(D, 1)

        def forward(self, x):
            return self.lin(x)

    with pytest.raises(ConfigError, match="model.members"):
        PhaseModule(Plain(), alpha=1.0, members=2)
    with pytest.raises(ConfigError, match="model.members"):
        PhaseModule(fc(4), alpha=1.0, members=0)


def _cli_summary(*args) -> dict:
    before = set(Path().glob("runs/*/*/summary.json"))
    assert main(["fit", "--config", QUICK, "--trainer.enable_progress_bar=false", "--trainer.max_steps=80",
                 "--data.n_train=100", "--data.n_test=100", "--model.net.init_args.width=16", *args]) == 0
    (new,) = set(Path().glob("runs/*/*/summary.json")) - before
    return json.loads(new.read_text())


def test_cli_members_list_equals_single_runs_with_seed_plus_k():
    many = _cli_summary("--model.members=3", "--seed_everything=5")
    assert many["n_members"] == 3 and [m["seed"] for m in many["members"]] == [5, 6, 7]
    keys = ("train_loss", "test_loss", "n_delta", "train_error", "test_error", "steps", "flow_time", "stop_reason")
    assert {k: many[k] for k in keys} == {k: many["members"][0][k] for k in keys}  # top level = member 0
    for k in (1, 2):
        single = _cli_summary(f"--seed_everything={5 + k}")
        for key in keys:
            if isinstance(single[key], float):
                assert many["members"][k][key] == pytest.approx(single[key], rel=1e-10, abs=1e-12)
            else:
                assert many["members"][k][key] == single[key]


def test_cli_members_refuse_single_net_callbacks():
    assert main(["fit", "--config", QUICK, "--model.members=2", "--trainer.enable_progress_bar=false",
                 "--trainer.callbacks+=lightning_phase.callbacks.HessianSpectrum"]) == 2
    assert not list(Path().glob("runs/*/*/summary.json"))
