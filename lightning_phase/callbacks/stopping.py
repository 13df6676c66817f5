"""Stop rules: margins met (SAT), loss converged (UNSAT), loss stalled, divergence, a flow-time budget, an
optional wall-clock cap; and the run's decision ``fit_state`` (SAT / UNSAT / UNDECIDED, observables/jamming.py).

The step budget is the trainer's own ``max_steps``; budgets count steps or flow time t, never wall-clock
time, except the optional recorded safety cap (SCIENCE.md §2, STYLE.md habit 13).
"""

from __future__ import annotations

import copy
import enum
import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from lightning_phase.callbacks.schedule import full_set, log_metrics
from lightning_phase.contracts import (
    PhaseModuleLike,
    StepOutput,
    phase_module,
    step_output,
    trainer_datamodule,
)
from lightning_phase.errors import ConfigError, check_bool, check_positive_float, check_positive_int
from lightning_phase.observables.jamming import (
    DELTA_TOL,
    UNSAT_MIN_STEPS,
    UNSAT_RTOL,
    FitState,
    LossConvergence,
    decision_record,
)


class StopReason(str, enum.Enum):
    """Why a run ended; the value goes into summary.json as ``stop_reason``."""

    ALL_MARGINS_MET = "ALL_MARGINS_MET"  # SAT: max Δ ≤ delta_tol (every training point has y·F ≥ 1 − δ)
    LOSS_CONVERGED = "LOSS_CONVERGED"  # UNSAT: best α²L fell < unsat_rtol per doubling of the flow time
    LOSS_STALLED = "LOSS_STALLED"  # α²L fell by less than stall_rtol (relative) over stall_window steps
    STEP_BUDGET = "STEP_BUDGET"  # trainer.max_steps reached
    TIME_BUDGET = "TIME_BUDGET"  # flow time t ≥ max_time
    WALL_CAP = "WALL_CAP"  # the optional wall-clock safety cap (recorded; not a physics budget)
    DIVERGED = "DIVERGED"  # α²L became NaN/inf, or rose above diverge_factor × its first value
    INTERRUPTED = "INTERRUPTED"  # the fit loop ended for another reason (max_epochs, Ctrl-C, crash)


def stall_check(history: list[float], window: int, rtol: float) -> bool:
    """True when the loss has not decreased by more than rtol·|L_start| over the last ``window`` steps.

    ``history`` holds the loss of the last window + 1 steps (oldest first).
    """
    if len(history) <= window:
        return False
    start, best = history[0], min(history[1:])
    return start - best <= rtol * abs(start)


def _full_delta(trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
    """(Δ = 1 − z on the full training set at the current weights, x_train): Δ (P,) or (K, P) with members;
    z = yF, or F_y − max_{c≠y} F_c for class labels (the module's ``margin_and_loss``)."""
    module = phase_module(pl_module, "StopRules")
    x, y = full_set(trainer, pl_module, "x_train"), full_set(trainer, pl_module, "y_train")
    with torch.no_grad():
        return 1 - module.margin_and_loss(module(x), y)[0], x


class StopRules(pl.Callback):
    """Stops training when a rule fires and records the reason (``self.reason``) for the run summary.

    when_fitted: stop when the run is SAT, max Δ ≤ delta_tol (δ = 1e-3 by default; 0 = strict N_Δ = 0; max Δ
    over all ranks under DDP), confirmed on the full training set at the current weights. when_unsat: stop
    when the run is UNSAT, i.e. the loss converged with margins unmet (``observables.jamming.LossConvergence``:
    after unsat_min_steps steps, the best α²L fell by less than unsat_rtol, relative, since the flow time was
    half of now). stall_window / stall_rtol: stop when α²L decreased by less than stall_rtol·α²L over
    stall_window steps (None: off; a fixed window can mistake slow SAT dynamics for UNSAT — prefer
    when_unsat). max_time: budget in
    flow time t (``pl_module.flow_time``; None: off), also handed to an optimiser with a ``max_time``
    param-group entry (GradientFlow) that has none, so the last step lands on t = max_time exactly.
    wall_cap_seconds: safety cap on wall-clock time,
    recorded as WALL_CAP (None: off). check_every: evaluate the rules every k steps (each check syncs
    the device once). diverge_factor: the DIVERGED rule — α²L non-finite, or α²L > diverge_factor · α²L₀
    with α²L₀ the first value checked (F = 0 at initialisation, so α²L₀ = ℓ(0): 1 for the hinge, ½ for
    the quadratic hinge); gradient descent on these losses does not rise 100-fold unless the step size is
    unstable (None: only non-finite losses count).

    With K members (``model.members``) every member has its own rules, history and reason: a member whose
    rule fires is frozen (``pl_module.freeze_member(k)``) while the others go on; training ends when all
    have stopped. ``reason`` is then member 0's; ``member_reasons`` and ``member_steps`` hold each one's.

    At the end of training the decision is taken on the full training set (rank 0): ``summary()`` gives
    fit_state, n_delta_tol (#{Δ > δ}), delta_tol, delta_max and margins_n_dead (unmet margins with
    ∇_w f = 0), also logged as ``margins/n_dead``; a warning when a run that is not SAT ends with dead points.
    With members these are member 0's, and ``member_fit_state`` lists every member's decision.
    """

    def __init__(
        self,
        when_fitted: bool = True,
        stall_window: int | None = None,
        stall_rtol: float = 1e-6,
        max_time: float | None = None,
        wall_cap_seconds: float | None = None,
        check_every: int = 1,
        diverge_factor: float | None = 100.0,
        delta_tol: float = DELTA_TOL,
        when_unsat: bool = True,
        unsat_rtol: float = UNSAT_RTOL,
        unsat_min_steps: int = UNSAT_MIN_STEPS,
    ):
        self.when_fitted = check_bool("stop.when_fitted", when_fitted)
        self.stall_window = None if stall_window is None else check_positive_int("stop.stall_window", stall_window)
        self.stall_rtol = check_positive_float("stop.stall_rtol", stall_rtol, allow_zero=True)
        self.max_time = None if max_time is None else check_positive_float("stop.max_time", max_time)
        self.wall_cap = (None if wall_cap_seconds is None
                         else check_positive_float("stop.wall_cap_seconds", wall_cap_seconds))
        self.check_every = check_positive_int("stop.check_every", check_every)
        self.diverge_factor = (None if diverge_factor is None
                               else check_positive_float("stop.diverge_factor", diverge_factor))
        if self.diverge_factor is not None and self.diverge_factor <= 1:
            raise ConfigError("stop.diverge_factor", diverge_factor, "a number > 1, or null (off)")
        self.loss_start: float | None = None
        self.delta_tol = check_positive_float("stop.delta_tol", delta_tol, allow_zero=True)
        self.when_unsat = check_bool("stop.when_unsat", when_unsat)
        self.convergence = LossConvergence(unsat_rtol, unsat_min_steps)
        self.converged = False
        self.decision: dict[str, Any] = {}
        # (trainer, module, member index or None) while deciding
        self._sat_check: tuple[pl.Trainer, pl.LightningModule, int | None] | None = None
        self.reason: StopReason | None = None
        self._history: list[float] = []
        self._t_start = 0.0
        self.member_reasons: list[StopReason | None] | None = None
        self.member_steps: list[int | None] | None = None
        self._member_rules: list[StopRules] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t_start = time.monotonic()
        if self.max_time is not None:  # an integrator with an end time (GradientFlow) lands on it exactly
            for opt in trainer.optimizers:
                for group in opt.param_groups:
                    if "max_time" in group and group["max_time"] is None:
                        group["max_time"] = self.max_time

    def _decide(self, loss: float, n_delta: int, flow_time: float, wall: float, delta_max: float | None = None,
                step: int | None = None) -> StopReason | None:
        """The stop decision from the current values; None means go on. ``delta_max`` None: judged on the
        strict N_Δ; ``step`` None: the UNSAT rule is not fed."""
        if not math.isfinite(loss):
            return StopReason.DIVERGED
        if self.loss_start is None:
            self.loss_start = loss
        elif self.diverge_factor is not None and loss > self.diverge_factor * abs(self.loss_start):
            return StopReason.DIVERGED
        sat = n_delta == 0 if delta_max is None else delta_max <= self.delta_tol
        if self.when_fitted and sat and self._verify_sat():
            return StopReason.ALL_MARGINS_MET
        if step is not None:
            self.converged = self.convergence.update(step, loss, flow_time)
            if self.when_unsat and self.converged and not sat:
                return StopReason.LOSS_CONVERGED
        if self.max_time is not None and flow_time >= self.max_time:
            return StopReason.TIME_BUDGET
        if self.stall_window is not None:  # the history holds one loss per check, every check_every steps
            window = math.ceil(self.stall_window / self.check_every)
            self._history.append(loss)
            del self._history[: -(window + 1)]
            if stall_check(self._history, window, self.stall_rtol):
                return StopReason.LOSS_STALLED
        if self.wall_cap is not None and wall >= self.wall_cap:
            return StopReason.WALL_CAP
        return None

    def _verify_sat(self) -> bool:
        """The batch statistics are those of the weights before the step just taken (and of one batch):
        confirm SAT on the full training set at the current weights before stopping on it. Every rank sees
        the same full set and weights, so all decide alike without a reduction."""
        if self._sat_check is None:
            return True
        trainer, pl_module, k = self._sat_check
        if getattr(trainer_datamodule(trainer), "x_train", None) is None:  # fit on loaders: no full set
            return True
        delta, _ = _full_delta(trainer, pl_module)  # (P,) or (K, P) with members
        d_max = float((delta if k is None else delta[k]).max())
        return d_max <= self.delta_tol

    @staticmethod
    def _delta_max(trainer: pl.Trainer, outputs: StepOutput) -> torch.Tensor:
        """max Δ of the batch, () or (K,), over all ranks (a second reduction, under DDP only)."""
        delta_max = outputs["delta_max"].detach().double()
        if trainer.world_size > 1:
            delta_max = trainer.strategy.reduce(delta_max.clone(), reduce_op="max")
        return delta_max

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = step_output(outputs, "StopRules")  # ContractError naming the keys there, never a silent skip
        if step.get("stop_checked"):  # steps_per_call > 1: checked after each inner step
            return
        self.check(trainer, pl_module, step)

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: StepOutput) -> None:
        """Apply the rules to one step's outputs (``loss_value``, ``n_delta``, ``delta_max``); sets
        ``trainer.should_stop``. Called at each batch end, or by PhaseModule after each of its
        ``steps_per_call`` inner steps."""
        module = phase_module(pl_module, "StopRules")
        if trainer.global_step % self.check_every:
            return
        if outputs["n_delta"].dim() == 1:
            self._members_batch_end(trainer, pl_module, module, outputs)
            return
        # One tensor, one reduction, one device sync: [α²L, N_Δ] summed over ranks (loss averaged).
        stats = torch.stack([outputs["loss_value"].double(), outputs["n_delta"].double()])
        stats = trainer.strategy.reduce(stats, reduce_op="sum")
        loss, n_delta = float(stats[0]) / trainer.world_size, int(stats[1])
        delta_max = self._delta_max(trainer, outputs)
        self._sat_check = (trainer, pl_module, None)
        try:
            reason = self._decide(loss, n_delta, module.flow_time, time.monotonic() - self._t_start,
                                  float(delta_max), trainer.global_step)
        finally:
            self._sat_check = None
        if reason is not None:
            self.reason = reason
            trainer.should_stop = True

    def _members_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, module: PhaseModuleLike,
                           outputs: StepOutput) -> None:
        """The rules of each member k on its own α²L_k, N_Δ,k and clock t_k; freeze the ones that fire."""
        k_all = outputs["n_delta"].shape[0]
        if self._member_rules is None:
            self._member_rules = []
            for _ in range(k_all):
                self._member_rules.append(self._member_copy([]))
            self.member_reasons, self.member_steps = [None] * k_all, [None] * k_all
        member_reasons, member_steps = self.member_reasons, self.member_steps
        assert member_reasons is not None and member_steps is not None  # set with _member_rules
        stats_t = torch.stack([outputs["loss_value"].double(), outputs["n_delta"].double()])  # (2, K), one sync
        stats: list[list[float]] = trainer.strategy.reduce(stats_t, reduce_op="sum").tolist()
        delta_max: list[float] = self._delta_max(trainer, outputs).tolist()
        wall = time.monotonic() - self._t_start
        for k, rules in enumerate(self._member_rules):
            if not module.member_active[k]:
                continue
            rules._sat_check = (trainer, pl_module, k)
            try:
                reason = rules._decide(stats[0][k] / trainer.world_size, int(stats[1][k]),
                                       module.member_flow_time[k], wall, delta_max[k], trainer.global_step)
            finally:
                rules._sat_check = None
            if reason is not None:
                member_reasons[k], member_steps[k] = reason, trainer.global_step
                module.freeze_member(k)
        if not any(module.member_active):
            self.reason = member_reasons[0]
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.reason is None:
            max_steps = trainer.max_steps
            self.reason = StopReason.STEP_BUDGET if max_steps > 0 and trainer.global_step >= max_steps \
                else StopReason.INTERRUPTED
        if self.member_reasons is not None and self.member_steps is not None:
            for k, r in enumerate(self.member_reasons):  # members still training when the loop ended: its reason
                if r is None:
                    self.member_reasons[k], self.member_steps[k] = self.reason, trainer.global_step
            self.reason = self.member_reasons[0]
        if trainer.is_global_zero:
            self._final_decision(trainer, pl_module)

    def _member_copy(self, history: list[float]) -> StopRules:
        """The rules of one member: same settings, its own history and loss-convergence state."""
        rules = copy.copy(self)
        rules._history, rules._member_rules, rules.reason, rules.loss_start = list(history), None, None, None
        rules.convergence = LossConvergence(self.convergence.rtol, self.convergence.min_steps)
        rules.converged, rules.decision = False, {}
        return rules

    def _final_decision(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """fit_state and its fields from Δ on the full training set (rank 0), dead points from the NTK diagonal
        (single nets: a members net is batched, its diagonal is not computed)."""
        if getattr(trainer_datamodule(trainer), "x_train", None) is None:  # fit on loaders: no full set
            return
        module = phase_module(pl_module, "StopRules")
        delta, x = _full_delta(trainer, pl_module)  # (P,), or (K, P) with members
        if delta.dim() == 2:
            rules = self._member_rules or [self] * delta.shape[0]
            recs = [decision_record(delta[k], rules[k].converged, self.delta_tol) for k in range(delta.shape[0])]
            self.decision = {**recs[0], "member_fit_state": [r["fit_state"] for r in recs]}
            return
        # dead points for a trained single-output net (a class axis would need one diagonal per class)
        trained = not module.lazy_limit and module.shape.out_dim == 1
        self.decision = decision_record(delta, self.converged, self.delta_tol, module.net if trained else None, x)
        n_dead = self.decision["margins_n_dead"]
        if n_dead is not None:
            log_metrics(trainer, {"margins/n_dead": n_dead}, trainer.global_step)
        if n_dead and self.decision["fit_state"] != FitState.SAT.value:
            rank_zero_warn(f"the run ends {self.decision['fit_state']} with {n_dead} dead points (unmet margins "
                           "with ∇_w f = 0, frozen for ever): train biases (model.net.init_args.bias: 1.0) near "
                           "jamming")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stop_reason": (self.reason or StopReason.INTERRUPTED).value, **self.decision}
        if self.member_reasons is not None:
            out["member_stop"] = [{"stop_reason": (r or StopReason.INTERRUPTED).value, "steps": s}
                                  for r, s in zip(self.member_reasons, self.member_steps or [], strict=True)]
        return out

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"history": list(self._history), "loss_start": self.loss_start,
                               "reason": None if self.reason is None else self.reason.value,
                               "convergence": self.convergence.state_dict(), "converged": self.converged}
        if self._member_rules is not None:
            out["members"] = {"history": [list(r._history) for r in self._member_rules],
                              "loss_start": [r.loss_start for r in self._member_rules],
                              "convergence": [r.convergence.state_dict() for r in self._member_rules],
                              "converged": [r.converged for r in self._member_rules],
                              "reasons": [None if r is None else r.value for r in self.member_reasons or []],
                              "steps": list(self.member_steps or [])}
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._history = list(state_dict.get("history", []))
        self.loss_start = state_dict.get("loss_start")
        self.reason = None if state_dict.get("reason") is None else StopReason(state_dict["reason"])
        self.convergence.load_state_dict(state_dict.get("convergence", {}))
        self.converged = bool(state_dict.get("converged", False))
        members = state_dict.get("members")
        if members is not None:
            self._member_rules = []
            n = len(members["history"])
            starts = members.get("loss_start") or [None] * n
            convs = members.get("convergence") or [{}] * n
            conv_flags = members.get("converged") or [False] * n
            for hist, start, conv, flag in zip(members["history"], starts, convs, conv_flags, strict=True):
                rules = self._member_copy(hist)
                rules.loss_start = start
                rules.convergence.load_state_dict(conv)
                rules.converged = bool(flag)
                self._member_rules.append(rules)
            self.member_reasons = [None if r is None else StopReason(r) for r in members["reasons"]]
            self.member_steps = list(members["steps"])
