"""The SAT / UNSAT / UNDECIDED decision of a run, and dead points (SCIENCE.md §2, issue 8).

A run is decided from its final margins Δ = 1 − yF and its loss history, never from the step budget alone:

- **SAT** — every margin met up to a tolerance: max_μ Δ_μ ≤ δ (``delta_tol``, default 1e-3). With the
  quadratic hinge SAT dynamics approach Δ = 0⁺: on fitted runs full-batch Adam leaves points at
  Δ ≈ 1e-13 … 1e-5 while α²L ≈ 1e-13 … 1e-25, so the strict N_Δ = #{Δ > 0} calls fitted nets unfitted.
  δ = 1e-3 sits two decades above the largest of those leftovers and is still a margin a jammed net misses
  (its unmet Δ are O(0.1), SCIENCE.md §4 tails aside).
- **UNSAT** — the loss has converged at a positive value with margins unmet: after ``min_steps`` steps, the
  best α²L so far fell by less than ``rtol`` (relative) since the flow time t was at most half of now.
  Judged over a doubling of t (a window in log-time), a slow power-law decay L ∝ t^{-a} falls by 1 − 2^{-a}
  per doubling and is not mistaken for convergence unless a < 1.4e-3; a run whose t stops advancing (a rate
  decayed to 0, an integrator stuck on rejected steps) is never called UNSAT. With a constant rate
  (GD, Adam: t = lr·steps) the window is a doubling of the step count.
- **UNDECIDED** — neither, when the budget ran out. Never counted as UNSAT.

``LossConvergence`` is the UNSAT rule's state: the best loss and the flow time at the first check in each
octave [2^k, 2^{k+1}) of the flow time — O(log t) numbers, saved in checkpoints, so a resumed run decides
exactly as an uninterrupted one.

Dead points: a training point whose every ReLU path is off has ∇_w f(x_μ) = 0 and a margin frozen for ever.
Θ(x_μ, x_μ) = ‖∇_w f(x_μ)‖² (the NTK diagonal) detects them exactly: ``dead_points``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lightning_phase.errors import check_positive_float, check_positive_int
from lightning_phase.observables.ntk import ntk_diagonal

DELTA_TOL = 1e-3  # default SAT tolerance δ on the margins (module docstring)
UNSAT_RTOL = 1e-3  # default relative fall of the best α²L per doubling of the step count below which it converged
UNSAT_MIN_STEPS = 1000  # default: no UNSAT decision before this many steps


class FitState(str, enum.Enum):
    """The decision of a run; its value goes into summary.json as ``fit_state``."""

    SAT = "SAT"  # every margin met up to delta_tol
    UNSAT = "UNSAT"  # loss converged at a positive value with margins unmet
    UNDECIDED = "UNDECIDED"  # the budget ran out first


def n_delta_tol(delta: Tensor, delta_tol: float = DELTA_TOL) -> Tensor:
    """N_Δ(δ) = #{μ : Δ_μ > δ} over the last axis: Δ (P,) → () or (M, P) → (M,), int64.

    δ = 0 gives the strict N_Δ of ``losses.n_delta``."""
    return (delta > delta_tol).sum(dim=-1)


def fit_state(delta_max: float, converged: bool, delta_tol: float = DELTA_TOL) -> FitState:
    """SAT if max Δ ≤ δ; else UNSAT if the loss has converged (``LossConvergence.converged``); else UNDECIDED."""
    if delta_max <= delta_tol:
        return FitState.SAT
    return FitState.UNSAT if converged else FitState.UNDECIDED


@dataclass
class LossConvergence:
    """The UNSAT rule on a loss history, fed one check at a time (``update``), possibly every k steps.

    marks[k] = (step, best α²L up to then, flow time t) at the first check with 2^k ≤ t < 2^{k+1} (k may be
    negative). ``converged(step, t)``: step ≥ min_steps, best > 0, and against the latest mark with
    t_mark ≤ t/2: (best_mark − best)/best_mark < rtol. Plain numbers only (``state_dict``).
    """

    rtol: float = UNSAT_RTOL
    min_steps: int = UNSAT_MIN_STEPS
    best: float = math.inf
    marks: dict[int, tuple[int, float, float]] = field(default_factory=dict)

    def __post_init__(self):
        self.rtol = check_positive_float("stop.unsat_rtol", self.rtol)
        self.min_steps = check_positive_int("stop.unsat_min_steps", self.min_steps, minimum=1)

    def update(self, step: int, loss: float, flow_time: float) -> bool:
        """Record the loss α²L measured at ``step`` (flow time t); returns ``converged(step, t)``."""
        if loss == loss:  # NaN never becomes the best
            self.best = min(self.best, loss)
        if 0 < flow_time < math.inf:
            k = math.floor(math.log2(flow_time))
            if k not in self.marks:
                self.marks[k] = (step, self.best, flow_time)
        return self.converged(step, flow_time)

    def reference(self, flow_time: float) -> tuple[int, float, float] | None:
        """The latest mark taken at a flow time ≤ t/2, or None."""
        ref = None
        for k in sorted(self.marks):
            if 2 * self.marks[k][2] <= flow_time:
                ref = self.marks[k]
        return ref

    def converged(self, step: int, flow_time: float) -> bool:
        if step < self.min_steps or not (0 < self.best < math.inf):
            return False
        ref = self.reference(flow_time)
        return ref is not None and (ref[1] - self.best) < self.rtol * ref[1]

    def state_dict(self) -> dict:
        return {"best": self.best, "marks": {str(k): list(v) for k, v in self.marks.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state.get("best", math.inf))
        self.marks = {int(k): (int(v[0]), float(v[1]), float(v[2])) for k, v in state.get("marks", {}).items()}


def decide_history(steps, losses, flow_times, delta_max: float, delta_tol: float = DELTA_TOL,
                   rtol: float = UNSAT_RTOL, min_steps: int = UNSAT_MIN_STEPS) -> FitState:
    """The decision at the end of a recorded history: steps, α²L and t at each check (oldest first), and the
    final max Δ. Replays ``LossConvergence`` exactly as the stop rules feed it during training."""
    conv = LossConvergence(rtol, min_steps)
    converged = False
    for s, loss, t in zip(steps, losses, flow_times, strict=True):
        converged = conv.update(int(s), float(loss), float(t))
    return fit_state(delta_max, converged, delta_tol)


def dead_points(net: nn.Module, x: Tensor, delta: Tensor, delta_tol: float = DELTA_TOL) -> Tensor:
    """Unmet margins that gradient descent cannot move: Δ_μ > δ and ∇_w f(x_μ) = 0 exactly.

    ‖∇_w f(x_μ)‖² = Θ(x_μ, x_μ), the NTK diagonal (``ntk_diagonal``: layer-wise for FullyConnected, O(P·N)).
    x: (P, ...), delta: (P,) → bool (P,). ∇_w F = α∇_w f, so the test is α-free.
    """
    theta_diag = ntk_diagonal(net, x)  # (P,)
    return (delta > delta_tol) & (theta_diag == 0)


def decision_record(delta: Tensor, converged: bool, delta_tol: float = DELTA_TOL,
                    net: nn.Module | None = None, x: Tensor | None = None) -> dict:
    """summary.json fields of the decision from the final margins Δ (P,): fit_state, n_delta_tol (#{Δ > δ}),
    delta_tol, delta_max (max Δ), margins_n_dead (unmet margins with ∇_w f = 0; None without a net).
    Non-finite Δ (a diverged net): UNDECIDED with the counts None."""
    if not bool(torch.isfinite(delta).all()):  # a diverged net: no margin can be trusted
        return {"fit_state": FitState.UNDECIDED.value, "n_delta_tol": None, "delta_tol": delta_tol,
                "delta_max": None, "margins_n_dead": None}
    with torch.no_grad():
        d_max = float(delta.max()) if delta.numel() else -math.inf
    rec = {"fit_state": fit_state(d_max, converged, delta_tol).value,
           "n_delta_tol": int(n_delta_tol(delta, delta_tol)), "delta_tol": delta_tol, "delta_max": d_max,
           "margins_n_dead": None}
    if net is not None and x is not None and next(net.parameters(), None) is not None:
        rec["margins_n_dead"] = int(dead_points(net, x, delta, delta_tol).sum())
    return rec
