"""NTKChange: how far the empirical NTK has moved from Θ₀ (the lazy/feature order parameter, [FL])."""

from __future__ import annotations

from typing import Any, cast

import torch

from lightning_phase.callbacks.schedule import (
    LogSpacedSchedule,
    ScheduledCallback,
    full_set,
    member_metrics,
    n_members,
)
from lightning_phase.errors import ConfigError, check_choice, check_positive_int
from lightning_phase.observables import kernel_change, kernel_stats, ntk
from lightning_phase.observables.members import kernel_change_members, kernel_stats_members, ntk_members
from lightning_phase.observables.ntk import NTK_METHODS, Method


class NTKChange(ScheduledCallback):
    """Logs ``ntk/rel_change`` = ‖Θ_t − Θ₀‖_F/‖Θ₀‖_F on the first ``n_points`` of the data module's fixed
    kernel set (``x_kernel``), plus ``ntk/norm`` (‖Θ_t‖_F), ``ntk/trace`` and ``ntk/top_eig``, at the
    scheduled steps and at the end. Θ₀ is the NTK of the frozen initial net ``pl_module.net0`` (= w₀), so a
    resumed run uses the same Θ₀. Rank 0 only. ``method``: see ``observables.ntk``.

    Summary: ntk_rel_change, ntk_norm, ntk_top_eig (final), ntk_norm0 (at w₀).

    Members (``model.members`` K): Θ_k of each member against its own Θ₀,k (``ntk_members``: batched
    matmuls for FullyConnected, else a loop over the members); ``ntk/*`` are the member means,
    ``member_<k>/ntk/*`` each member's (K ≤ 16), summary.json's ``members[k]`` has its ntk_* fields.
    """

    def __init__(self, n_points: int = 100, schedule: LogSpacedSchedule | None = None, method: str = "auto"):
        super().__init__(schedule)
        self.n_points = check_positive_int("NTKChange.n_points", n_points, minimum=2)
        check_choice("NTKChange.method", method, NTK_METHODS)
        self.method = cast(Method, method)  # one of them: checked above
        self.theta_0: torch.Tensor | None = None
        self.stats_0: dict[str, float] = {}
        self.member_stats_0: list[dict[str, float]] = []
        self._x: torch.Tensor | None = None  # the kernel set (P_k, ...), rank 0, from on_train_start

    @property
    def state_key(self) -> str:
        return self._generate_state_key(n_points=self.n_points, method=self.method)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.check_data(trainer.datamodule)

    def check_data(self, datamodule) -> None:
        """ConfigError naming ``data.n_kernel`` unless the data module's kernel set has ≥ n_points points
        (called at setup; a CLI may call it before creating the run directory)."""
        xk = getattr(datamodule, "x_kernel", None) if datamodule is not None else None
        n_kernel = 0 if xk is None else len(xk)
        if n_kernel < self.n_points:
            raise ConfigError("data.n_kernel", n_kernel,
                              f"an integer >= {self.n_points} (NTKChange.n_points)")

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._x = full_set(trainer, pl_module, "x_kernel", self.n_points)  # (P_k, ...)
            if self.theta_0 is None and n_members(pl_module) > 1:  # (not when restored from a checkpoint)
                self.theta_0 = ntk_members(pl_module.net0, self._x, method=self.method)  # (K, P_k, P_k)
                _, self.member_stats_0 = member_metrics(kernel_stats_members(self.theta_0))
                self.stats_0 = self.member_stats_0[0]
            elif self.theta_0 is None:
                self.theta_0 = ntk(pl_module.net0, self._x, method=self.method)  # (P_k, P_k)
                self.stats_0 = kernel_stats(self.theta_0)
        super().on_train_start(trainer, pl_module)

    def measure(self, trainer, pl_module, step: int) -> dict[str, float]:
        assert self._x is not None and self.theta_0 is not None  # set by on_train_start, before any measure
        theta = ntk(pl_module.net, self._x, method=self.method)
        return {"ntk/rel_change": kernel_change(self.theta_0, theta),
                **{f"ntk/{k}": v for k, v in kernel_stats(theta).items()}}

    def measure_members(self, trainer, pl_module, step: int) -> dict[str, torch.Tensor]:
        assert self._x is not None and self.theta_0 is not None  # set by on_train_start, before any measure
        theta = ntk_members(pl_module.net, self._x, method=self.method)  # (K, P_k, P_k)
        return {"ntk/rel_change": kernel_change_members(self.theta_0, theta),
                **{f"ntk/{k}": v for k, v in kernel_stats_members(theta).items()}}

    def summary_of(self, last: dict[str, float], k: int | None = None) -> dict[str, float | None]:
        stats_0 = self.stats_0 if k is None else self.member_stats_0[k]
        return {"ntk_rel_change": last.get("ntk/rel_change"), "ntk_norm": last.get("ntk/norm"),
                "ntk_top_eig": last.get("ntk/top_eig"), "ntk_norm0": stats_0.get("norm")}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "theta_0": self.theta_0, "stats_0": dict(self.stats_0),
                "member_stats_0": [dict(m) for m in self.member_stats_0]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.theta_0, self.stats_0 = state_dict["theta_0"], dict(state_dict["stats_0"])
        self.member_stats_0 = [dict(m) for m in state_dict.get("member_stats_0", [])]
