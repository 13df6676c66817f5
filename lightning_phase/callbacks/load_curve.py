"""LoadCurve: the layer-wise separation log D_ℓ and its load-curve statistics during training ([SB])."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lightning_phase.callbacks.schedule import LogSpacedSchedule, ScheduledCallback, full_set, tensorboard
from lightning_phase.errors import ConfigError, check_choice, check_positive_int
from lightning_phase.observables.separation import network_load_curve


class LoadCurve(ScheduledCallback):
    """Logs ``load/logD/l{ℓ}`` (log D_ℓ = log Tr(Σ_w Σ_b⁺) of layer ℓ, ℓ = 0 the input), ``load/curvature``
    (c = d₁ − d_L), ``load/spread`` (std of the loads d_ℓ) and ``load/pearson_r`` at the scheduled steps and at
    the end, on a fixed probe: the first ``n_points`` samples of the ``split`` set (``train``, as [SB], or
    ``test``) with their labels (class labels, or ±1 labels as two classes). ``layers``: module names to
    hook (None = the input and every activation; see ``observables.separation.layer_features``). The net
    (f, without α or f₀) runs in eval mode (dropout off, BatchNorm running statistics), then its mode is
    restored. At the end it draws log D_ℓ − log D_0 against ℓ for every measured step to TensorBoard
    (``load/curve``). Rank 0 only.

    Summary: load_log_d (list, final), load_curvature, load_spread, load_pearson_r, load_curvature_norm.
    """

    def __init__(self, n_points: int = 2560, split: str = "train", layers: list[str] | None = None,
                 schedule: LogSpacedSchedule | None = None):
        super().__init__(schedule)
        self.n_points = check_positive_int("LoadCurve.n_points", n_points, minimum=2)
        check_choice("LoadCurve.split", split, ("train", "test"))
        self.split, self.layers = split, (None if layers is None else list(layers))
        self.names: list[str] = []
        self.history: list[tuple[int, list[float]]] = []  # (step, log D_ℓ)
        self.final: dict[str, Any] = {}
        self._xy: tuple[torch.Tensor, torch.Tensor] | None = None  # (x, y) probe set, from on_train_start

    @property
    def state_key(self) -> str:
        return self._generate_state_key(n_points=self.n_points, split=self.split, layers=self.layers)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.check_data(trainer.datamodule)

    def check_data(self, datamodule) -> None:
        """ConfigError unless the probe set holds at least two classes."""
        y = getattr(datamodule, f"y_{self.split}", None) if datamodule is not None else None
        if y is None or len(y[: self.n_points].unique()) < 2:
            raise ConfigError(f"data.n_{self.split}", None if y is None else len(y),
                              "a set with at least two classes for LoadCurve")

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._xy = (full_set(trainer, pl_module, f"x_{self.split}", self.n_points),
                        full_set(trainer, pl_module, f"y_{self.split}", self.n_points))
        super().on_train_start(trainer, pl_module)

    def measure(self, trainer, pl_module, step: int) -> dict[str, float]:
        assert self._xy is not None  # set by on_train_start, before any measure
        x, y = self._xy
        net = pl_module.net
        training = net.training
        net.eval()
        try:
            names, curve = network_load_curve(net, x, y, self.layers)
        except ValueError:  # a layer with Σ_b = 0 or Σ_w = 0: nothing finite to log at this step
            return {}
        finally:
            net.train(training)
        self.names = names
        self.history.append((step, list(curve.log_d)))
        self.final = {"load_log_d": list(curve.log_d), "load_curvature": curve.curvature,
                      "load_spread": curve.spread, "load_pearson_r": curve.pearson_r,
                      "load_curvature_norm": curve.curvature_norm}
        out = {f"load/logD/l{ell}": v for ell, v in enumerate(curve.log_d)}
        out.update({"load/curvature": curve.curvature, "load/spread": curve.spread,
                    "load/pearson_r": curve.pearson_r})
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def on_fit_end_measure(self, trainer, pl_module, step: int) -> None:
        writer = tensorboard(trainer)
        if writer is None or not self.history:
            return
        from lightning_phase.callbacks._figures import load_curve_figure

        writer.add_figure("load/curve", load_curve_figure(self.history), global_step=step)

    def summary(self) -> dict[str, Any]:
        return dict(self.final)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "history": [(s, list(v)) for s, v in self.history],
                "final": dict(self.final)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.history = [(int(s), list(v)) for s, v in state_dict["history"]]
        self.final = dict(state_dict["final"])


def curves_array(history: list[tuple[int, list[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """(steps (T,), log D (T, L+1)) from a LoadCurve history."""
    return np.array([s for s, _ in history]), np.array([v for _, v in history], dtype=np.float64)
