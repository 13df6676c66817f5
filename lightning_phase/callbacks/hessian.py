"""HessianSpectrum: the spectrum of ∇²L at the end of the fit (H, H₀, H_p of [JAM])."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from lightning_phase.callbacks.schedule import full_set, log_metrics, tensorboard
from lightning_phase.errors import ConfigError, check_positive_int
from lightning_phase.observables import hessian_spectrum


class HessianSpectrum(pl.Callback):
    """At the end of the fit (rank 0), the Hessian of L = (1/(α²P))Σℓ(yF) w.r.t. all net parameters on the
    first ``n_points`` training points (None: all), by ``observables.hessian_spectrum`` (dense eigvalsh when
    N ≤ ``max_dense``, else Lanczos: ``k`` extremes, SLQ density). Logs ``hessian/min``, ``hessian/max``,
    ``hessian/h0_max``, ``hessian/hp_min``, ``hessian/n_negative`` (dense only) and the figure
    ``hessian/spectrum``. Expensive: O(N²) memory when dense — keep N small or lower ``max_dense``.

    Summary: hessian_min, hessian_max, hessian_h0_max, hessian_hp_min, hessian_method.
    """

    def __init__(self, n_points: int | None = None, max_dense: int = 2000, k: int = 10, n_lanczos: int = 80,
                 seed: int = 0):
        if n_points is not None:
            check_positive_int("HessianSpectrum.n_points", n_points)
        self.n_points, self.seed = n_points, seed
        self.max_dense = check_positive_int("HessianSpectrum.max_dense", max_dense, minimum=0)
        self.k = check_positive_int("HessianSpectrum.k", k)
        self.n_lanczos = check_positive_int("HessianSpectrum.n_lanczos", n_lanczos, minimum=2)
        self.result: dict[str, Any] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(n_points=self.n_points, max_dense=self.max_dense, k=self.k)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.check_data(trainer.datamodule)

    def check_data(self, datamodule) -> None:
        """ConfigError naming ``data.labels`` for class labels: H is written for ℓ(yF) with one output."""
        y = getattr(datamodule, "y_train", None)
        if y is not None and not y.is_floating_point():
            raise ConfigError("data.labels", "class", "'parity' with the HessianSpectrum callback (one output)")

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        x = full_set(trainer, pl_module, "x_train", self.n_points)
        y = full_set(trainer, pl_module, "y_train", self.n_points)
        with torch.no_grad():
            f0 = pl_module.net0(x).reshape(-1)
        spec = hessian_spectrum(pl_module.net, x, y, pl_module.alpha, pl_module.loss_fn, f0,
                                max_dense=self.max_dense, k=self.k, n_lanczos=self.n_lanczos, seed=self.seed)
        metrics = {"hessian/min": spec.lambda_min, "hessian/max": spec.lambda_max,
                   "hessian/h0_max": float(spec.eig_h0[-1]), "hessian/hp_min": float(spec.eig_hp[0])}
        if spec.method == "dense":
            metrics["hessian/n_negative"] = int((spec.eig_h < 0).sum())
        log_metrics(trainer, metrics, trainer.global_step)
        self.result = {k.replace("/", "_"): v for k, v in metrics.items()}
        self.result["hessian_method"] = spec.method
        writer = tensorboard(trainer)
        if writer is not None:
            from lightning_phase.callbacks._figures import spectrum_figure  # matplotlib only when drawing

            writer.add_figure("hessian/spectrum", spectrum_figure(spec), global_step=trainer.global_step)

    def summary(self) -> dict[str, float | str | None]:
        keys = ("hessian_min", "hessian_max", "hessian_h0_max", "hessian_hp_min", "hessian_n_negative",
                "hessian_method")
        return {k: self.result.get(k) for k in keys}

    def state_dict(self) -> dict[str, Any]:
        return {"result": dict(self.result)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.result = dict(state_dict["result"])
