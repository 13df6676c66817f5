"""TimeScale: t₁, the first flow time at which α²L falls below half its start, and ‖F‖ vs t ([FL])."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from lightning_phase.callbacks.schedule import MEMBER_TAGS_MAX, LogSpacedSchedule, full_set, log_metrics, member_metrics
from lightning_phase.contracts import phase_module, step_output
from lightning_phase.observables import output_norm, t1


class TimeScale(pl.Callback):
    """Reads each step's α²L (``outputs["loss_value"]``) and F (``outputs["outputs"]``) from
    ``PhaseModule.training_step`` and dates them with the flow time t of the state they were evaluated at:
    t before the step for SGD/Adam, after it for an optimiser whose last closure call is at the new point
    (``evaluates_at_new_point``, GradientFlow). α²L at start is measured on the training set at fit start
    (= ℓ(0), since F ≡ 0). Logs ``time/t1`` once, when α²L first falls below half of it
    (``observables.t1``), and at the scheduled steps ``time/flow_time`` and ``time/output_norm`` (‖F‖, RMS
    over the training batch). Cheap: one scalar read per step until t₁ is found, then only on schedule.

    Summary: t1 (None if never reached), loss0 (α²L at start); the run summary records flow_time itself.

    Members (``model.members`` K): each member's t₁ on its own clock t_k, from its own α²L (a K-list compare
    per step until every member has its t₁): ``member_<k>/time/t1`` when found, ``time/flow_time`` and
    ``time/output_norm`` as member means plus ``member_<k>/time/*`` (K ≤ 16); summary.json's ``members[k]``
    has member k's t1 and loss0, the top level member 0's.
    """

    def __init__(self, schedule: LogSpacedSchedule | None = None):
        self.schedule = schedule if schedule is not None else LogSpacedSchedule()
        self.t0: float | None = None
        self.loss0: float | None = None
        self.t1: float | None = None
        self._t_before = 0.0
        self.member_t0: list[float] = []  # members: t_k, α²L_k at start and t₁ of each member
        self.member_loss0: list[float] = []
        self.member_t1: list[float | None] = []
        self._member_t_before: list[float] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(points_per_decade=self.schedule.points_per_decade)

    def on_train_start(self, trainer, pl_module) -> None:
        module = phase_module(pl_module, "TimeScale")
        if module.members > 1 and not self.member_loss0:
            x, y = full_set(trainer, pl_module, "x_train"), full_set(trainer, pl_module, "y_train")
            self.member_t0, self.member_loss0 = list(module.member_flow_time), list(module.evaluate(x, y)["loss"])
            self.member_t1 = [None] * module.members
            self.t0, self.loss0 = self.member_t0[0], self.member_loss0[0]
        elif self.loss0 is None:
            x, y = full_set(trainer, pl_module, "x_train"), full_set(trainer, pl_module, "y_train")
            self.t0, self.loss0 = float(module.flow_time), module.evaluate(x, y)["loss"]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        module = phase_module(pl_module, "TimeScale")
        self._t_before = float(module.flow_time)
        if module.members > 1:
            self._member_t_before = list(module.member_flow_time)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step_out = step_output(outputs, "TimeScale")
        if phase_module(pl_module, "TimeScale").members > 1:
            self._members_batch_end(trainer, pl_module, step_out)
            return
        # GradientFlow evaluates its last closure at the new point (``evaluates_at_new_point``); SGD/Adam before
        after = any(getattr(opt, "evaluates_at_new_point", False) for opt in trainer.optimizers)
        t = float(phase_module(pl_module, "TimeScale").flow_time) if after else self._t_before
        step = trainer.global_step if after else trainer.global_step - 1  # the state that was evaluated
        if self.t1 is None:
            loss = float(step_out["loss_value"])
            if self.loss0 is None or self.t0 is None:  # not measured at train start: the first evaluated state
                self.t0, self.loss0 = t, loss
            self.t1 = t1([self.t0, t], [self.loss0, loss])
            if self.t1 is not None:
                log_metrics(trainer, {"time/t1": self.t1}, step)
        if self.schedule(step):
            F_out = step_out["outputs"]  # (P,), or (P, C) for C classes: ‖F_μ‖ over the classes first
            norm = float(output_norm(F_out.norm(dim=-1) if F_out.dim() > 1 else F_out))
            log_metrics(trainer, {"time/flow_time": t, "time/output_norm": norm}, step)

    def _members_batch_end(self, trainer, pl_module, step_out) -> None:
        """The K-member version of on_train_batch_end: each member on its own clock t_k."""
        module = phase_module(pl_module, "TimeScale")
        after = any(getattr(opt, "evaluates_at_new_point", False) for opt in trainer.optimizers)
        times = list(module.member_flow_time) if after else self._member_t_before
        step = trainer.global_step if after else trainer.global_step - 1
        if not self.member_loss0:  # not measured at train start: the first evaluated state
            self.member_t0, self.member_loss0 = list(times), step_out["loss_value"].tolist()
            self.member_t1 = [None] * module.members
        if any(t is None for t in self.member_t1):
            losses = step_out["loss_value"].tolist()
            found: dict[str, float] = {}
            for k, (t_k, loss) in enumerate(zip(times, losses, strict=True)):
                if self.member_t1[k] is None:
                    t1_k = t1([self.member_t0[k], t_k], [self.member_loss0[k], loss])
                    self.member_t1[k] = t1_k
                    if t1_k is not None and module.members <= MEMBER_TAGS_MAX:
                        found[f"member_{k}/time/t1"] = t1_k
            self.t1 = self.member_t1[0]
            if found:
                log_metrics(trainer, found, step)
        if self.schedule(step):
            F_out = step_out["outputs"]  # (K, P), or (K, P, C)
            norm = output_norm(F_out.norm(dim=-1) if F_out.dim() > 2 else F_out)  # (K,)
            t = torch.tensor(times, dtype=torch.float64)
            log_metrics(trainer, member_metrics({"time/flow_time": t, "time/output_norm": norm})[0], step)

    def summary(self) -> dict[str, float | None]:
        return {"t1": self.t1, "loss0": self.loss0}

    def member_summaries(self) -> list[dict[str, float | None]] | None:
        """Member k's t1 and loss0 (None for one net)."""
        if not self.member_loss0:
            return None
        return [{"t1": t, "loss0": loss} for t, loss in zip(self.member_t1, self.member_loss0, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        return {"t0": self.t0, "loss0": self.loss0, "t1": self.t1, "member_t0": list(self.member_t0),
                "member_loss0": list(self.member_loss0), "member_t1": list(self.member_t1)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.t0, self.loss0, self.t1 = state_dict["t0"], state_dict["loss0"], state_dict["t1"]
        self.member_t0 = list(state_dict.get("member_t0", []))
        self.member_loss0 = list(state_dict.get("member_loss0", []))
        self.member_t1 = list(state_dict.get("member_t1", []))
