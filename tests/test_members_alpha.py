"""Members in α̃: ``model.alpha_tilde: [a_0, …]`` trains one member per value; member k == the single run at a_k."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _flow_helpers import ToyData, fc, trainer
from test_members import QUICK, _adam, _gf, _sgd

from lightning_phase import ConfigError, PhaseModule
from lightning_phase.callbacks.stopping import StopRules
from lightning_phase.cli import main

TOL = 1e-10
ALPHAS = [0.5, 3.0, 30.0]


def _run(alpha_tilde, opt, data, stop=None, max_steps=60, **kw):
    module = PhaseModule(fc(10, seed=4), alpha_tilde=alpha_tilde, optimizer=opt, **kw).double()
    stop = stop or StopRules(when_fitted=True)
    trainer(stop, max_steps=max_steps).fit(module, datamodule=data)
    return module, stop


@pytest.mark.parametrize("opt", [_sgd, _adam, _gf], ids=["sgd", "adam", "gradient_flow"])
def test_alpha_members_equal_single_runs_at_each_alpha(opt):
    data = ToyData(n_train=32)
    many, stop = _run(ALPHAS, opt, data)
    assert many.members == len(ALPHAS) and many.member_alpha_tilde == ALPHAS
    assert many.alpha_tilde == ALPHAS[0]
    x, dts, times = data.x_train, [], []
    for k, a in enumerate(ALPHAS):
        single, single_stop = _run(a, opt, data)
        for w, v in zip(many.net.member(k).parameters(), single.net.parameters(), strict=True):
            torch.testing.assert_close(w, v, rtol=0, atol=TOL)
        torch.testing.assert_close(many(x)[k], single(x), rtol=0, atol=TOL)
        assert stop.member_steps[k] == single.trainer.global_step
        assert stop.member_reasons[k] == single_stop.reason
        assert many.member_flow_time[k] == pytest.approx(single.flow_time, rel=1e-12, abs=0)
        times.append(single.flow_time)
        if opt is _gf:
            dts.append(single.optimizers().optimizer.param_groups[0]["dt"])
    assert len(set(stop.member_steps)) > 1 or len(set(times)) > 1  # the members did not move in lock-step
    if opt is _gf:  # each member its own dt and clock: the ones of its single run
        assert many.optimizers().optimizer.member_stats()["dt"] == pytest.approx(dts, rel=1e-12)
        assert len(set(dts)) > 1


def test_alpha_members_start_from_the_same_init():
    many = PhaseModule(fc(6, seed=2), alpha_tilde=ALPHAS, members=3).double()
    first = [p[0] for p in many.net.parameters()]
    for k in (1, 2):
        assert all(torch.equal(p[k], f) for p, f in zip(many.net.parameters(), first, strict=True))
    assert [s for _, s in many.net.seeds] == [2, 2, 2]


def test_alpha_members_bad_input_names_the_field():
    with pytest.raises(ConfigError, match=r"model\.members.*1 or 3"):
        PhaseModule(fc(6), alpha_tilde=ALPHAS, members=2)
    with pytest.raises(ConfigError, match=r"model\.alpha_tilde"):
        PhaseModule(fc(6), alpha_tilde=[1.0, -2.0])
    with pytest.raises(ConfigError, match=r"model\.alpha_tilde"):
        PhaseModule(fc(6), alpha_tilde=[])


def _cli(*args) -> tuple[int, dict | None]:
    before = set(Path().glob("runs/*/*/summary.json"))
    code = main(["fit", "--config", QUICK, "--trainer.enable_progress_bar=false", "--trainer.max_steps=40",
                 "--data.n_train=60", "--data.n_test=20", "--model.net.init_args.width=8", *args])
    new = set(Path().glob("runs/*/*/summary.json")) - before
    return code, (json.loads(new.pop().read_text()) if new else None)


def test_cli_alpha_tilde_list_gives_one_member_per_value():
    code, many = _cli("--model.alpha_tilde=[1, 10]")
    assert code == 0
    assert [m["alpha_tilde"] for m in many["members"]] == [1.0, 10.0] and many["alpha_tilde"] == 1.0
    assert many["members"][0]["seed"] == many["members"][1]["seed"]
    _, single = _cli("--model.alpha_tilde=10")
    for key in ("train_loss", "test_loss", "flow_time", "alpha"):
        assert many["members"][1][key] == pytest.approx(single[key], rel=1e-10), key
    for key in ("n_delta", "steps", "stop_reason"):
        assert many["members"][1][key] == single[key], key
    code, rec = _cli("--model.alpha_tilde=[1, 10]", "--model.members=3")
    assert code == 2 and rec is None
