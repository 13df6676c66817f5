"""DiffeoStability: relative stability R_f = D_f/G_f to smooth deformations vs. noise ([DIFF])."""

from __future__ import annotations

from typing import Any, cast

import torch

from lightning_phase.callbacks.schedule import LogSpacedSchedule, ScheduledCallback, full_set
from lightning_phase.errors import ConfigError, check_choice, check_positive_float, check_positive_int
from lightning_phase.observables.diffeo import Agg, Interp, relative_stability, temperature_for_displacement


class DiffeoStability(ScheduledCallback):
    """Logs ``stab/D``, ``stab/G``, ``stab/R`` (= D/G) and ``stab/R_err`` (bootstrap standard error) of the net
    f (no α, no f₀; eval mode) on the first ``n_points`` test images, ``n_samples`` deformations each, at the
    scheduled steps and at the end. Temperature T from ``delta`` (typical displacement in pixels:
    T = 4δ²/(π n² ln c), n the image width) unless ``temperature`` is given; cut-off ``cutoff``;
    ``interp`` linear | nearest; ``agg`` mean | median. The same ``seed`` gives the same deformations
    and noise at every measurement, so successive values differ only through the net. Needs image data
    (``data.pca_dim: null``). Rank 0 only.

    Summary: stab_D, stab_G, stab_R, stab_R_err (final), stab_R0 (at the first measurement).
    """

    def __init__(self, n_points: int = 500, n_samples: int = 10, delta: float = 1.0, cutoff: int = 3,
                 temperature: float | None = None, interp: str = "linear", agg: str = "mean", seed: int = 0,
                 schedule: LogSpacedSchedule | None = None):
        super().__init__(schedule)
        self.n_points = check_positive_int("DiffeoStability.n_points", n_points, minimum=2)
        self.n_samples = check_positive_int("DiffeoStability.n_samples", n_samples)
        self.delta = check_positive_float("DiffeoStability.delta", delta)
        self.cutoff = check_positive_int("DiffeoStability.cutoff", cutoff, minimum=2)
        self.temperature = None if temperature is None else check_positive_float(
            "DiffeoStability.temperature", temperature)
        check_choice("DiffeoStability.interp", interp, ("linear", "nearest"))
        check_choice("DiffeoStability.agg", agg, ("mean", "median"))
        self.interp, self.agg = cast(Interp, interp), cast(Agg, agg)  # checked above
        self.seed = check_positive_int("DiffeoStability.seed", seed, minimum=0)
        self.r0: float | None = None
        self._x: torch.Tensor | None = None  # probe images (P, C·H·W), from on_train_start
        self._shape: tuple[int, ...] | None = None  # (C, H, W)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(n_points=self.n_points, n_samples=self.n_samples, delta=self.delta,
                                        cutoff=self.cutoff, temperature=self.temperature, interp=self.interp,
                                        agg=self.agg, seed=self.seed)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.check_data(trainer.datamodule)

    def check_data(self, datamodule) -> None:
        """ConfigError unless the data are images (C, H, W) with at least n_points test samples."""
        shape = tuple(getattr(datamodule, "input_shape", ()) or ())
        if len(shape) != 3:
            raise ConfigError("data.pca_dim", getattr(datamodule, "pca_dim", None),
                              f"null and an image data set for DiffeoStability (input shape {shape})")
        n_test = len(getattr(datamodule, "x_test", ()))
        if n_test < self.n_points:
            raise ConfigError("data.n_test", n_test, f"an integer >= {self.n_points} (DiffeoStability.n_points)")

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._x = full_set(trainer, pl_module, "x_test", self.n_points)  # (P, C·H·W)
            self._shape = tuple(trainer.datamodule.input_shape)
        super().on_train_start(trainer, pl_module)

    def _image_shape(self) -> tuple[int, ...]:
        assert self._shape is not None  # set by on_train_start, before any measure
        return self._shape

    def temperature_used(self) -> float:
        return self.temperature if self.temperature is not None else temperature_for_displacement(
            self.delta, self._image_shape()[-1], self.cutoff)

    def measure(self, trainer, pl_module, step: int) -> dict[str, float]:
        net = pl_module.net
        training = net.training
        net.eval()
        assert self._x is not None  # set by on_train_start, before any measure
        try:
            image_shape = cast("tuple[int, int, int]", self._image_shape())  # (C, H, W): checked by check_data
            s = relative_stability(net, self._x, self.temperature_used(), self.cutoff, self.n_samples,
                                   self.interp, self.agg, self.seed, image_shape=image_shape)
        finally:
            net.train(training)
        if self.r0 is None:
            self.r0 = s.R
        return {"stab/D": s.D, "stab/G": s.G, "stab/R": s.R, "stab/R_err": s.R_err}

    def summary(self) -> dict[str, float | None]:
        return {"stab_D": self.last.get("stab/D"), "stab_G": self.last.get("stab/G"),
                "stab_R": self.last.get("stab/R"), "stab_R_err": self.last.get("stab/R_err"), "stab_R0": self.r0}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "r0": self.r0}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.r0 = state_dict["r0"]
