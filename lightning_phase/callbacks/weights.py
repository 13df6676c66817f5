"""WeightsChange: √h‖w − w₀‖/‖w₀‖, total and per layer ([FL])."""

from __future__ import annotations

from lightning_phase.callbacks.schedule import LogSpacedSchedule, ScheduledCallback
from lightning_phase.observables import weights_change


class WeightsChange(ScheduledCallback):
    """Logs ``weights/change`` (total) and ``weights/change/<layer>`` (e.g. ``layers.0``) at the scheduled
    steps and at the end; w₀ is ``pl_module.net0``, h = ``net.width`` (1 if the net has none).

    Summary: weights_change (final total).
    """

    def __init__(self, schedule: LogSpacedSchedule | None = None):
        super().__init__(schedule)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(points_per_decade=self.schedule.points_per_decade)

    def measure(self, trainer, pl_module, step: int) -> dict[str, float]:
        change = weights_change(pl_module.net, pl_module.net0)
        return {"weights/change" if k == "total" else f"weights/change/{k}": v for k, v in change.items()}

    def summary(self) -> dict[str, float | None]:
        return {"weights_change": self.last.get("weights/change")}
