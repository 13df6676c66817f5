"""GradientFlow (SCIENCE.md §3): exactness on solvable flows, step control, state, Lightning wiring, t₁."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
from _flow_helpers import StopAt, ToyData, fc, trainer
from _runs import run_dir_in
from scipy.integrate import solve_ivp

from lightning_phase import ConfigError, PhaseModule
from lightning_phase.callbacks import DynamicsLogger, LogSpacedSchedule
from lightning_phase.optim import GradientFlow

A = torch.tensor([1.0, 10.0], dtype=torch.float64)  # L(w) = ½ wᵀ diag(A) w, exact flow w(t) = e^{−At} w₀


def integrate(opt: GradientFlow, closure, T: float) -> int:
    steps = 0
    while opt.time < T:
        opt.step(closure)
        steps += 1
    return steps


def quadratic_run(max_dgrad: float, T: float = 3.0, tau: float | None = None, scale_out: float = 0.0):
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = GradientFlow([w], max_dgrad=max_dgrad, max_dout=0.1, momentum_tau=tau, max_time=T)
    if scale_out:
        opt.watch_outputs(lambda: scale_out * w.detach())  # outputs F = s·w: d_out = s·|Δw|_∞

    def closure():
        opt.zero_grad()
        loss = 0.5 * (A * w * w).sum()
        loss.backward()
        return loss

    steps = integrate(opt, closure, T)
    return w.detach(), opt, steps


def test_quadratic_flow_follows_exact_solution_and_error_shrinks_with_max_dgrad():
    exact = torch.exp(-A * 3.0)
    errs = []
    for max_dgrad in (1e-3, 1e-5):
        w, opt, _ = quadratic_run(max_dgrad)
        assert opt.time == pytest.approx(3.0, abs=1e-12)  # the last step lands on max_time
        errs.append(float((w - exact).norm() / exact.norm()))
    assert errs[1] < 5e-3
    assert errs[1] < errs[0] / 5  # Euler with dt ∝ √max_dgrad: error ∝ √max_dgrad (×10 here)


def test_momentum_follows_exact_damped_flow():
    # τ ẅ + ẇ + A w = 0, w(0) = 1, ẇ(0) = 0: exact via the matrix exponential of the first-order system.
    tau, T = 0.5, 1.5
    M = torch.zeros(4, 4, dtype=torch.float64)
    M[:2, 2:] = torch.eye(2)
    M[2:, :2] = -torch.diag(A) / tau
    M[2:, 2:] = -torch.eye(2) / tau
    exact = (torch.linalg.matrix_exp(M * T) @ torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64))[:2]
    errs = [float((quadratic_run(md, T, tau=tau)[0] - exact).norm() / exact.norm()) for md in (1e-2, 1e-5)]
    assert errs[1] < errs[0] / 5 and errs[1] < 3e-2  # first order in dt
    assert float((quadratic_run(1e-4, T)[0] - exact).norm() / exact.norm()) > 10 * errs[1]  # τ matters


def test_d_out_bounds_every_accepted_step():
    # max_dgrad = 1: d_grad never binds, only d_out = max|F' − F| = s·|Δw|_∞ < 0.1 limits the step
    _, coarse, n_coarse = quadratic_run(1.0, T=0.5, scale_out=10.0)
    _, fine, n_fine = quadratic_run(1.0, T=0.5, scale_out=300.0)
    assert fine.param_groups[0]["d_out"] < 0.1 and n_fine > 10 * n_coarse


def test_rejections_happen_and_dt_recovers_after_stiff_region():
    # L(w) = ½w² + Kσ² log cosh((w − w_s)/σ): curvature 1 + K·sech² — 101 near w_s = 1.5, 1 elsewhere.
    K, sigma, ws, T = 100.0, 0.01, 1.5, 4.0

    def grad_fn(w):
        return w + K * sigma * math.tanh((w - ws) / sigma)

    w = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    opt = GradientFlow([w], max_time=T)

    def closure():
        opt.zero_grad()
        u = (w - ws) / sigma
        loss = (0.5 * w**2 + K * sigma**2 * (u + torch.nn.functional.softplus(-2 * u) - math.log(2))).sum()
        loss.backward()
        return loss

    log = []  # (w before the step, dt used, rejections so far)
    while opt.time < T:
        w_before = float(w.detach())
        opt.step(closure)
        log.append((w_before, opt.last_dt, opt.param_groups[0]["n_rejected"]))
    dt_before = max(dt for wb, dt, _ in log if 2.0 < wb < 2.5)
    dt_stiff = min(dt for wb, dt, _ in log if abs(wb - ws) < 2 * sigma)
    dt_after = log[-2][1]  # (the last step is shortened to land on T)
    rejected_before = max(r for wb, _, r in log if wb > 2.0)
    assert dt_stiff < dt_before / 20
    assert log[-1][2] > rejected_before  # rejections in the stiff region, not only at the start
    assert dt_after > 0.5 * dt_before  # dt grew back (×1.1 per step) once past it
    ref = solve_ivp(lambda t, v: [-grad_fn(v[0])], (0, T), [3.0], method="Radau", rtol=1e-12, atol=1e-12)
    assert abs(float(w) - ref.y[0, -1]) < 1e-3 * abs(ref.y[0, -1])


def test_state_dict_resume_is_bit_identical():
    def make():
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
        opt = GradientFlow([w], momentum_tau=0.3)

        def closure():
            opt.zero_grad()
            loss = (torch.cosh(w) * torch.tensor([1.0, 3.0, 10.0], dtype=torch.float64)).sum()
            loss.backward()
            return loss

        return w, opt, closure

    w, opt, closure = make()
    for _ in range(60):
        opt.step(closure)
    w1, opt1, closure1 = make()
    for _ in range(30):
        opt1.step(closure1)
    state, w_mid = opt1.state_dict(), w1.detach().clone()
    w2, opt2, closure2 = make()
    with torch.no_grad():
        w2.copy_(w_mid)
    opt2.load_state_dict(state)
    for _ in range(30):
        opt2.step(closure2)
    assert torch.equal(w2, w) and opt2.time == opt.time and opt2.stats() == opt.stats()


def test_bad_arguments_and_nonfinite_loss_are_reported():
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    for kw in ({"max_dgrad": 0.0}, {"max_dout": -1.0}, {"dt": float("nan")}, {"momentum_tau": 0}):
        with pytest.raises(ConfigError):
            GradientFlow([w], **kw)
    opt = GradientFlow([w], max_rejections=3)

    def closure():
        opt.zero_grad()
        loss = (w / (w - 1).abs().clamp_max(1) ** 4).sum()  # blows up at w → 1 from any step
        loss.backward()
        return loss if float(w[0]) == 1.0 else loss * float("nan")

    with pytest.raises(RuntimeError, match="rejections in a row"):
        opt.step(closure)


def lightning_run(width=16, alpha_tilde=1.0, T=2.0, seed=1, **trainer_kw):
    data = ToyData(n_train=48)
    model = PhaseModule(fc(width, seed), alpha_tilde=alpha_tilde, optimizer=partial(GradientFlow, max_time=T))
    tr = trainer(StopAt(T), **trainer_kw)
    tr.fit(model, data)
    return model, tr


def test_lightning_run_is_float64_and_reproducible_bit_for_bit(tmp_path):
    m1, tr1 = lightning_run(logger=False)
    m2, tr2 = lightning_run()
    opt = tr1.optimizers[0]
    assert all(p.dtype == torch.float64 for p in m1.parameters())
    assert m1.last_outputs().dtype == torch.float64 and opt._flat["w"][0].dtype == torch.float64
    assert all(torch.equal(p, q) for p, q in zip(m1.net.parameters(), m2.net.parameters(), strict=True))
    assert m1.flow_time == m2.flow_time == pytest.approx(2.0, abs=1e-12)  # PhaseModule.flow_time = opt t
    assert opt.time == m1.flow_time and tr1.global_step == opt.param_groups[0]["n_accepted"]


def test_dynamics_logger_writes_log_spaced_steps(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    logger = DynamicsLogger(LogSpacedSchedule(points_per_decade=5))
    _, tr = lightning_run(logger=CSVLogger(tmp_path), callbacks=[StopAt(2.0), logger], log_every_n_steps=10_000)
    text = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header, rows = text[0].split(","), [r.split(",") for r in text[1:]]
    col = {k: header.index(k) for k in ("step", "dynamics/dt", "dynamics/time", "dynamics/rejections")}
    logged = [r for r in rows if r[col["dynamics/time"]]]
    steps = [int(r[col["step"]]) for r in logged]
    assert steps == sorted(set(logger.schedule.steps(tr.global_step)) | {tr.global_step})  # log-spaced + end
    assert len(steps) < tr.global_step / 3
    assert float(logged[-1][col["dynamics/time"]]) == pytest.approx(2.0)
    assert logger.summary()["rejections"] == tr.optimizers[0].param_groups[0]["n_rejected"] > 0


def test_feature_regime_t1_grows_as_sqrt_width_at_fixed_alpha():
    """[FL]: in the feature regime t₁ ∝ √h·α = α̃. Fixed α: t₁ ×2 for h ×4; fixed α̃: t₁ independent of h."""

    def t1(width, alpha):
        stop = StopAt(half_loss=True)
        model = PhaseModule(fc(width), alpha=alpha, optimizer=GradientFlow)
        trainer(stop, max_steps=3000).fit(model, ToyData())
        return stop.t1

    alpha = 0.002  # α̃ = 0.011 (h = 32) and 0.023 (h = 128): feature regime
    t_small, t_wide, t_wide_same_tilde = t1(32, alpha), t1(128, alpha), t1(128, alpha / 2)
    assert 1.5 < t_wide / t_small < 3.0
    assert 0.7 < t_wide_same_tilde / t_small < 1.4


CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "lazy_vs_feature.yaml")


def test_lazy_vs_feature_config_lands_on_the_time_budget_and_logs_dynamics():
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lightning_phase.cli import main

    args = ["fit", "--config", CONFIG, "--model.alpha_tilde=1000", "--data.n_train=40", "--data.n_test=50",
            "--stop.max_time=3", "--trainer.enable_progress_bar=false"]  # the budget reaches GradientFlow
    assert main(args) == 0
    run = run_dir_in("runs/lazy_vs_feature")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "TIME_BUDGET" and summary["flow_time"] == 3.0
    assert summary["alpha_tilde"] == 1000.0 and summary["precision"] == "64-true"
    events = EventAccumulator(str(run)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"dynamics/dt", "dynamics/time", "dynamics/rejections", "dynamics/d_grad", "dynamics/d_out"} <= tags
    assert events.Scalars("dynamics/time")[-1].value == pytest.approx(3.0)
