"""model.steps_per_call: several optimiser steps per training_step give the plain trajectory and stop step."""

from __future__ import annotations

import pytest
import torch
from _flow_helpers import ToyData, fc, trainer

from lightning_phase import ConfigError, PhaseModule
from lightning_phase.callbacks import WeightsChange
from lightning_phase.callbacks.stopping import StopReason, StopRules
from lightning_phase.optim import GradientFlow


def _sgd(params):
    return torch.optim.SGD(params, lr=0.5)


def _gf(params):
    return GradientFlow(params, max_dgrad=1e-4, max_dout=0.1)


def _run(opt, steps_per_call, members=1, max_steps=200, stop=None):
    module = PhaseModule(fc(12, seed=2), alpha_tilde=1.0, optimizer=opt, members=members,
                         steps_per_call=steps_per_call).double()
    stop = stop or StopRules(when_fitted=True)
    tr = trainer(stop, max_steps=max_steps)
    tr.fit(module, datamodule=ToyData(n_train=32))
    return module, stop, tr


@pytest.mark.parametrize("opt", [_sgd, _gf], ids=["sgd", "gradient_flow"])
@pytest.mark.parametrize("members", [1, 2])
def test_fewer_calls_give_the_plain_trajectory_and_stop_step(opt, members):
    rules = (lambda: StopRules(when_fitted=True)) if opt is _sgd else (lambda: StopRules(max_time=0.5))
    plain, stop1, tr1 = _run(opt, 1, members, stop=rules(), max_steps=400)
    fast, stop7, tr7 = _run(opt, 7, members, stop=rules(), max_steps=400)
    assert tr7.global_step == tr1.global_step and tr1.global_step % 7  # stopped inside a call
    expected = StopReason.ALL_MARGINS_MET if opt is _sgd else StopReason.TIME_BUDGET
    assert stop7.reason == stop1.reason == expected
    assert stop7.member_steps == stop1.member_steps
    for a, b in zip(fast.net.parameters(), plain.net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert fast.flow_time == pytest.approx(plain.flow_time, rel=1e-12)


def test_fewer_calls_respect_the_step_budget():
    _, stop, tr = _run(_sgd, 7, max_steps=10, stop=StopRules(when_fitted=False))
    assert tr.global_step == 10 and stop.reason == StopReason.STEP_BUDGET


def test_fewer_calls_refuse_scheduled_measurements():
    module = PhaseModule(fc(12, seed=2), alpha_tilde=1.0, steps_per_call=5).double()
    with pytest.raises(ConfigError, match="model.steps_per_call"):
        trainer(StopRules(), WeightsChange(), max_steps=5).fit(module, datamodule=ToyData(n_train=32))


def test_warm_cache_generates_the_mnist1d_pool_a_run_then_reuses():
    from lightning_phase.data import PhaseDataModule, sources

    sources._mnist1d_arrays.cache_clear()
    assert sources.warm_cache({"dataset": "mnist1d", "n_train": 100, "n_test": 100, "data_seed": 3})
    assert not sources.warm_cache({"dataset": "random"})   # synthetic sets are cheap: nothing to warm
    PhaseDataModule(dataset="mnist1d", n_train=100, n_test=100, data_seed=3)
    info = sources._mnist1d_arrays.cache_info()
    assert (info.misses, info.hits) == (1, 1)  # generated once, by warm_cache


def test_digits_are_read_once_per_process_and_each_run_gets_its_own_copy():
    from lightning_phase.data import PhaseDataModule, sources

    sources._digits_arrays.cache_clear()
    assert sources.warm_cache({})   # digits is the default data set
    a = PhaseDataModule(dataset="digits", n_train=50, n_test=50)
    first = a.x_train.clone()
    a.x_train.add_(1.0)   # a run that changes its tensors in place does not change the next run's data
    b = PhaseDataModule(dataset="digits", n_train=50, n_test=50)
    assert sources._digits_arrays.cache_info().misses == 1
    torch.testing.assert_close(first, b.x_train, rtol=0, atol=0)
