"""WeightsChange: √h‖w − w₀‖/‖w₀‖, total and per layer ([FL])."""

from __future__ import annotations

from torch import Tensor

from lightning_phase.callbacks.schedule import LogSpacedSchedule, ScheduledCallback
from lightning_phase.observables import weights_change
from lightning_phase.observables.members import weights_change_members


class WeightsChange(ScheduledCallback):
    """Logs ``weights/change`` (total) and ``weights/change/<layer>`` (e.g. ``layers.0``) at the scheduled
    steps and at the end; w₀ is ``pl_module.net0``, h = ``net.width`` (1 if the net has none).

    Summary: weights_change (final total).

    Members (``model.members`` K): each member's change from its own w₀ (``weights_change_members``, one
    batched reduction per parameter): ``weights/change`` etc. are the member means, ``member_<k>/weights/...``
    each member's (K ≤ 16), and summary.json's ``members[k]`` has its weights_change.
    """

    def __init__(self, schedule: LogSpacedSchedule | None = None):
        super().__init__(schedule)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(points_per_decade=self.schedule.points_per_decade)

    def measure(self, trainer, pl_module, step: int) -> dict[str, float]:
        change = weights_change(pl_module.net, pl_module.net0)
        return {"weights/change" if k == "total" else f"weights/change/{k}": v for k, v in change.items()}

    def measure_members(self, trainer, pl_module, step: int) -> dict[str, Tensor]:
        change = weights_change_members(pl_module.net, pl_module.net0)
        return {"weights/change" if k == "total" else f"weights/change/{k}": v for k, v in change.items()}

    def summary_of(self, last: dict[str, float], k: int | None = None) -> dict[str, float | None]:
        return {"weights_change": last.get("weights/change")}
