"""PhaseModule: the α-scaled network F(w, x) = α·(f(w, x) − f(w₀, x)) and its hinge-family loss."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_phase.errors import ConfigError, check_bool, check_positive_float
from lightning_phase.losses import get_loss, margin_variable, n_delta, sample_loss


def _sgd(params) -> torch.optim.Optimizer:
    """Default optimiser: full-batch gradient descent, lr 0.1 (flow time t = 0.1 per step)."""
    return torch.optim.SGD(params, lr=0.1)


class PhaseModule(pl.LightningModule):
    """Trains F(w, x) = α·(f(w, x) − f(w₀, x)) with L(w) = (1/(α²P)) Σ_μ ℓ(y_μ F(w, x_μ)) (SCIENCE.md §1–2).

    Give exactly one of ``alpha`` (the article's α) and ``alpha_tilde`` (α̃ = √h·α, h = ``net.width``).
    f₀ is a frozen copy of the initial net, so F ≡ 0 at start and α²L(w₀) = ℓ(0).
    ``loss``: soft_hinge (softplus_β(1−z), β = ``loss_beta``), hinge, quadratic_hinge, cross_entropy.
    Outputs: (P,) for ±1 labels, (P, K) for K classes (integer labels; z = F_y − max_{k≠y} F_k, see
    ``losses``). ``center``: subtract f₀ (default); false trains F = α·f (nets with dropout or BatchNorm,
    as in [SB]). f₀ is evaluated with the initial net in eval mode, so it is deterministic.
    Logs each step ``train/loss`` (= α²L), ``train/n_delta`` (#{Δ > 0}), ``train/error`` (fraction
    with yF ≤ 0); on validation ``test/loss`` and ``test/error``.
    """

    def __init__(
        self,
        net: nn.Module,
        alpha: float | None = None,
        alpha_tilde: float | None = None,
        loss: str = "soft_hinge",
        loss_beta: float = 20.0,
        optimizer: OptimizerCallable = _sgd,
        center: bool = True,
    ):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ConfigError("model.net", type(net).__name__, "an nn.Module mapping (P, ...) to (P,)")
        self.net = net
        self.alpha, self.alpha_tilde = self._resolve_alpha(net, alpha, alpha_tilde)
        self.loss_name, self.loss_beta = loss, loss_beta
        self.loss_fn = get_loss(loss, loss_beta)
        self.center = check_bool("model.center", center)
        self.optimizer_factory = optimizer
        self.net0 = copy.deepcopy(net).requires_grad_(False)  # frozen f(w₀, ·)
        self._f0_cache: tuple[Tensor, Tensor] | None = None
        self.test_loss, self.test_error = MeanMetric(), MeanMetric()
        self.flow_time = 0.0  # continuous time t = Σ dt of the accepted steps
        self._last_outputs: Tensor | None = None  # F on the training batch at the last evaluation
        self.save_hyperparameters(ignore=["net", "optimizer"])

    @staticmethod
    def _resolve_alpha(net: nn.Module, alpha: float | None, alpha_tilde: float | None) -> tuple[float, float | None]:
        if (alpha is None) == (alpha_tilde is None):
            raise ConfigError("model.alpha/alpha_tilde", (alpha, alpha_tilde), "exactly one of the two set")
        width = getattr(net, "width", None)
        if alpha_tilde is not None:
            alpha_tilde = check_positive_float("model.alpha_tilde", alpha_tilde)
            if not isinstance(width, int) or width < 1:
                raise ConfigError("model.alpha_tilde", alpha_tilde,
                                  "model.alpha instead: the net has no integer `width`")
            return alpha_tilde / math.sqrt(width), alpha_tilde
        alpha = check_positive_float("model.alpha", alpha)
        return alpha, (math.sqrt(width) * alpha if isinstance(width, int) else None)

    # ---- the α-scaled function ------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """N: number of trainable parameters of the net (f₀ not counted)."""
        return sum(p.numel() for p in self.net.parameters())

    def f0(self, x: Tensor) -> Tensor:
        """f(w₀, x), cached for the last batch object (the full batch is the same tensor every step)."""
        if self._f0_cache is not None and self._f0_cache[0] is x:
            return self._f0_cache[1]
        training = self.net0.training
        with torch.no_grad():
            out = self._scalar_output(self.net0.eval()(x), x)
        self.net0.train(training)
        self._f0_cache = (x, out)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """F(w, x) = α·(f(w, x) − f(w₀, x)) (α·f(w, x) without ``center``); x (P, ...) → (P,) or (P, K)."""
        if not self.center:
            return self.alpha * self._scalar_output(self.net(x), x)
        return self.alpha * (self._scalar_output(self.net(x), x) - self.f0(x))

    @staticmethod
    def _scalar_output(out: Tensor, x: Tensor) -> Tensor:
        """(P,) or (P, 1) → (P,); (P, K) with K ≥ 2 outputs is kept."""
        if out.dim() == 2 and out.shape[1] == 1:
            out = out.squeeze(1)
        if out.shape[:1] != x.shape[:1] or out.dim() > 2:
            raise ConfigError("model.net", f"output shape {tuple(out.shape)}",
                              f"shape ({x.shape[0]},) or ({x.shape[0]}, K): one output per sample and class")
        return out

    def check_net(self, x: Tensor, y: Tensor | None = None) -> None:
        """Raise ConfigError if the net does not map x (P, ...) to (P,) finite values — (P, K) with K > max y
        for integer class labels y; used before a run starts."""
        param = next(self.net.parameters(), None)
        if param is not None and x.is_floating_point():
            x = x.to(param.dtype)  # before the trainer has applied its precision
        training = self.net.training
        with torch.no_grad():
            out = self._scalar_output(self.net.eval()(x), x)
        self.net.train(training)
        if not torch.isfinite(out).all():
            raise ConfigError("model.net", "non-finite output at initialisation", "finite outputs")
        if y is not None:
            multi = not y.is_floating_point()
            if multi and (out.dim() != 2 or out.shape[1] <= int(y.max())):
                raise ConfigError("model.net.out_dim", 1 if out.dim() == 1 else out.shape[1],
                                  "the number of classes K of data.labels: class (filled from the data)")
            if not multi and out.dim() != 1:
                raise ConfigError("model.net.out_dim", out.shape[1], "1 for ±1 labels (data.labels: parity)")

    # ---- loss and statistics -------------------------------------------------------------------
    def margin_and_loss(self, F_out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(z, ℓ) per sample, both (P,): z = yF (±1 labels) or F_y − max_{k≠y} F_k (class labels), Δ = 1 − z."""
        z = margin_variable(F_out, y)
        return z, sample_loss(self.loss_name, self.loss_fn, F_out, y, z)

    def stats(self, F_out: Tensor, y: Tensor) -> dict[str, Tensor]:
        """loss = α²L = mean ℓ (differentiable), n_delta = #{Δ > 0}, error = mean[z ≤ 0]."""
        z, loss = self.margin_and_loss(F_out, y)
        return {
            "loss": loss.mean(),
            "n_delta": n_delta(1 - z),
            "error": (z <= 0).to(F_out.dtype).mean(),
        }

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """Loss (α²L), N_Δ and error of the current net on (x, y), as Python numbers."""
        s = self.stats(self(x), y)
        return {"loss": float(s["loss"]), "n_delta": int(s["n_delta"]), "error": float(s["error"])}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Any]:
        x, y = batch
        F_out = self(x)
        self._last_outputs = F_out.detach()  # read by GradientFlow (d_out) through last_outputs()
        s = self.stats(F_out, y)
        if self._logs_this_step():  # under DDP: N_Δ summed over the ranks' shards, loss and error averaged
            self.log("train/n_delta", s["n_delta"].float(), on_step=True, on_epoch=False, batch_size=len(y),
                     sync_dist=True, reduce_fx="sum")
            self.log_dict({"train/loss": s["loss"].detach().float(), "train/error": s["error"].float()},
                          on_step=True, on_epoch=False, batch_size=len(y), sync_dist=True)
        # Gradient of L = (1/α²)·mean ℓ, logged value is α²L.
        return {"loss": s["loss"] / self.alpha**2, "loss_value": s["loss"].detach(),
                "n_delta": s["n_delta"].detach(), "outputs": F_out.detach()}

    def _logs_this_step(self) -> bool:
        """True on the steps the logger writes (every ``trainer.log_every_n_steps``): self.log costs ~35% of a
        small full-batch step, so it is called only when its value is kept."""
        if self._trainer is None:
            return False
        connector = getattr(self.trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        z, loss = self.margin_and_loss(self(x), y)
        self.test_loss.update(loss)  # torchmetrics: exact mean over batches and ranks
        self.test_error.update((z <= 0).to(z.dtype))
        self.log_dict({"test/loss": self.test_loss, "test/error": self.test_error}, on_epoch=True)

    test_step = validation_step

    def last_outputs(self) -> Tensor | None:
        """F (P,) on the training batch at the last evaluation of ``training_step`` (detached)."""
        return self._last_outputs

    def configure_optimizers(self) -> torch.optim.Optimizer:
        opt = self.optimizer_factory(self.net.parameters())
        if hasattr(opt, "watch_outputs"):  # GradientFlow measures d_out = max|F' − F| on our outputs
            opt.watch_outputs(self.last_outputs)
        return opt

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Flow time: an optimiser that integrates gradient flow reports its accepted dt; plain GD's dt is lr.
        opt = getattr(optimizer, "optimizer", optimizer)  # unwrap LightningOptimizer
        dt = getattr(opt, "last_dt", None)
        self.flow_time += float(dt if dt is not None else opt.param_groups[0].get("lr", 0.0))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["flow_time"] = self.flow_time  # a resumed run continues the same clock

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.flow_time = float(checkpoint.get("flow_time", 0.0))
