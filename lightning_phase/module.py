"""PhaseModule: the α-scaled network F(w, x) = α·(f(w, x) − f(w₀, x)) and its hinge-family loss."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_phase.contracts import NetShape, PhaseModuleLike, StepOutput, net_shape, trainer_callbacks
from lightning_phase.errors import ConfigError, check_bool, check_positive_float, check_positive_int
from lightning_phase.losses import get_loss, margin_variable, n_delta, sample_loss
from lightning_phase.multistep import run_steps
from lightning_phase.nets.members import Members


def _sgd(params) -> torch.optim.Optimizer:
    """Default optimiser: full-batch gradient descent, lr 0.1 (flow time t = 0.1 per step)."""
    return torch.optim.SGD(params, lr=0.1)


class PhaseModule(pl.LightningModule):
    """Trains F(w, x) = α·(f(w, x) − f(w₀, x)) with L(w) = (1/(α²P)) Σ_μ ℓ(y_μ F(w, x_μ)) (SCIENCE.md §1–2).

    Give exactly one of ``alpha`` (the article's α) and ``alpha_tilde`` (α̃ = √h·α, h = the net's ``width``,
    YAML ``model.net.init_args.width``). What callbacks read from this module is typed in
    :class:`lightning_phase.contracts.PhaseModuleLike`; ``training_step`` returns a
    :class:`~lightning_phase.contracts.StepOutput`.
    f₀ is a frozen copy of the initial net, so F ≡ 0 at start and α²L(w₀) = ℓ(0).
    ``loss``: soft_hinge (softplus_β(1−z), β = ``loss_beta``), hinge, quadratic_hinge, cross_entropy.
    Outputs: (P,) for ±1 labels, (P, C) for C classes (integer labels; z = F_y − max_{c≠y} F_c, see
    ``losses``); members add a leading axis. ``center``: subtract f₀ (default); false trains F = α·f (nets
    with dropout or BatchNorm, as in [SB]). f₀ is evaluated with the initial net in eval mode (deterministic).
    ``lr_scheduler``: an optional ``torch.optim.lr_scheduler`` class taking the optimiser (YAML
    ``model.lr_scheduler: {class_path: torch.optim.lr_scheduler.MultiStepLR, init_args: {milestones: [...]}}``),
    stepped once per optimiser step, counted in steps; ReduceLROnPlateau is stepped with the training loss α²L
    (averaged over ranks and members), so its ``patience`` counts steps too. Flow time t adds the rate each
    step used. With a scheduler ``train/lr`` is logged.
    Logs each step ``train/loss`` (= α²L), ``train/n_delta`` (#{Δ > 0}), ``train/error`` (fraction
    with yF ≤ 0); on validation ``test/loss`` and ``test/error``.

    ``members`` K > 1 trains K copies of the architecture that differ in their init seed (member k = the
    single run with init seed + k, see :mod:`lightning_phase.nets.members`) as one batched computation:
    outputs, per-member losses, N_Δ and errors gain a leading axis K, the loss minimised is Σ_k L_k (so each
    member gets its own gradient), each member has its own flow time (``member_flow_time``) and stops on
    its own (``freeze_member``, called by the stop rules): a stopped member's weights no longer change.
    Logs ``train/*`` averaged over the members and ``member_<k>/train/*`` per member (K ≤ 16).
    ``alpha_tilde`` (or ``alpha``) given as a list [a_0, …, a_{K−1}] trains K members that share the
    configured init and differ in α: member k = the single run with α̃ = a_k (``member_alpha``,
    ``member_alpha_tilde``; ``alpha``/``alpha_tilde`` are member 0's); the loss minimised is Σ_k L_k with
    L_k = (1/α_k²) mean ℓ, so each member's gradient is its single run's.

    ``steps_per_call`` n > 1: each ``training_step`` call makes up to n full-batch optimiser steps (Lightning's
    per-batch machinery runs once per n steps; the trajectory is the same to round-off), with the stop rules
    checked after every step; logging and other callbacks see every n-th step (see multistep.py).
    """

    def __init__(
        self,
        net: nn.Module,
        alpha: float | list[float] | None = None,
        alpha_tilde: float | list[float] | None = None,
        loss: str = "soft_hinge",
        loss_beta: float = 20.0,
        optimizer: OptimizerCallable = _sgd,
        members: int = 1,
        steps_per_call: int = 1,
        center: bool = True,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ConfigError("model.net", type(net).__name__, "an nn.Module mapping (P, ...) to (P,)")
        self.members = check_positive_int("model.members", members)
        self.steps_per_call = check_positive_int("model.steps_per_call", steps_per_call)
        self.automatic_optimization = steps_per_call == 1  # else training_step runs its own optimiser steps
        self.shape: NetShape = net_shape(net)  # h, L, C of one member's net
        alphas = self._member_alphas(self.shape.width, alpha, alpha_tilde)  # None, or [(α_k, α̃_k)] of α/α̃ lists
        if alphas is not None:
            self.members = len(alphas)
        if self.members > 1:  # α lists: every member starts from the configured init (its single run's)
            net = Members.from_net(net, self.members, same_seed=alphas is not None)
        self.net = net
        self.lazy_limit = False  # KernelFlow: the α̃ = ∞ limit
        self.alpha: float
        self.alpha_tilde: float | None
        if alphas is None:
            assert not isinstance(alpha, list) and not isinstance(alpha_tilde, list)  # lists give alphas
            self.alpha, self.alpha_tilde = self._resolve_alpha(self.shape.width, alpha, alpha_tilde)
        else:
            self.alpha, self.alpha_tilde = alphas[0]  # member 0's, as summary.json's top level
        self.member_alpha = [a for a, _ in alphas] if alphas is not None else [self.alpha] * self.members
        self.member_alpha_tilde = [t for _, t in alphas] if alphas is not None \
            else [self.alpha_tilde] * self.members
        self._alpha_scale: Tensor | None = None  # (K,) α_k when the members have their own α
        self.loss_name, self.loss_beta = loss, loss_beta
        self.loss_fn = get_loss(loss, loss_beta)
        self.center = check_bool("model.center", center)
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.scheduler: Any = None  # stepped by optimizer_step (not by Lightning: see _attach_scheduler)
        self._pending_scheduler_state: dict[str, Any] | None = None
        self._last_loss: Tensor | None = None
        self.net0 = copy.deepcopy(net).requires_grad_(False)  # frozen f(w₀, ·)
        self._f0_cache: tuple[Tensor, Tensor] | None = None
        self.test_loss, self.test_error = MeanMetric(), MeanMetric()
        self.flow_time = 0.0  # continuous time t = Σ dt of the accepted steps (members: the largest t_k)
        self.member_flow_time = [0.0] * self.members  # t_k of each member
        self.member_active = [True] * self.members  # False once member k's stop rule fired
        self._frozen: dict[int, list[Tensor]] = {}  # member k → its parameters when it stopped
        self._pending_freeze: list[int] = []  # members stopped in a loaded checkpoint, frozen at train start
        self._last_outputs: Tensor | None = None  # F on the training batch at the last evaluation
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])

    def _member_alphas(self, width: int | None, alpha: Any, alpha_tilde: Any
                       ) -> list[tuple[float, float | None]] | None:
        """[(α_k, α̃_k)] when ``model.alpha`` or ``model.alpha_tilde`` is a list (one member per value; then
        ``model.members`` is 1 or the list's length), else None."""
        field, values = ("model.alpha_tilde", alpha_tilde) if isinstance(alpha_tilde, (list, tuple)) \
            else ("model.alpha", alpha)
        if not isinstance(values, (list, tuple)):
            return None
        if not values:
            raise ConfigError(field, list(values), "a number or a non-empty list of numbers (one member each)")
        if self.members not in (1, len(values)):
            raise ConfigError("model.members", self.members,
                              f"1 or {len(values)} (the length of {field}: one member per value)")
        out = []
        for v in values:
            a = v if field == "model.alpha" else None
            t = v if field == "model.alpha_tilde" else None
            other = alpha if t is not None else alpha_tilde
            if other is not None:
                raise ConfigError("model.alpha" if t is not None else "model.alpha_tilde", other,
                                  f"null when {field} is set (give exactly one of the two)")
            out.append(self._resolve_alpha(width, a, t, field))
        return out

    @staticmethod
    def _resolve_alpha(width: int | None, alpha: float | None, alpha_tilde: float | None,
                       field: str | None = None) -> tuple[float, float | None]:
        """(α, α̃) from the one given; α̃ = √h·α needs an integer width h ≥ 1. ``field``: the YAML key of a
        list entry (``model.alpha_tilde`` or ``model.alpha``)."""
        if alpha is None and alpha_tilde is None:
            raise ConfigError("model.alpha_tilde", None, "a number > 0 (or model.alpha: give exactly one of the two)")
        if alpha is not None and alpha_tilde is not None:
            raise ConfigError("model.alpha", alpha, "null when model.alpha_tilde is set (give exactly one of the two)")
        if alpha_tilde is not None:
            alpha_tilde = check_positive_float(field or "model.alpha_tilde", alpha_tilde)
            if width is None or width < 1:
                raise ConfigError("model.alpha_tilde", alpha_tilde,
                                  "model.alpha instead: the net has no integer `width`")
            return alpha_tilde / math.sqrt(width), alpha_tilde
        alpha = check_positive_float(field or "model.alpha", alpha)
        return alpha, (math.sqrt(width) * alpha if width is not None else None)

    def alpha_of(self, out: Tensor) -> float | Tensor:
        """α for outputs ``out``: the float α, or with per-member α the (K, 1[, 1]) tensor of the α_k."""
        if self.member_alpha.count(self.alpha) == self.members:
            return self.alpha
        scale = self._alpha_scale
        if scale is None or scale.dtype != out.dtype or scale.device != out.device:
            scale = self._alpha_scale = torch.tensor(self.member_alpha, dtype=out.dtype, device=out.device)
        return scale.view((-1,) + (1,) * (out.dim() - 1))

    # ---- the α-scaled function ------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """N: number of trainable parameters of the net (f₀ not counted; of one member)."""
        return sum(p.numel() for p in self.net.parameters()) // self.members

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
        """F(w, x) = α·(f(w, x) − f(w₀, x)) (α·f(w, x) without ``center``); x (P, ...) → (P,) or (P, C) for C
        classes, with K members (K, P) or (K, P, C)."""
        if not self.center:
            out = self._scalar_output(self.net(x), x)
            return self.alpha_of(out) * out
        out = self._scalar_output(self.net(x), x) - self.f0(x)
        return self.alpha_of(out) * out

    def _scalar_output(self, out: Tensor, x: Tensor) -> Tensor:
        """(P,) or (P, 1) → (P,); (P, C) with C ≥ 2 class outputs is kept; members: (K, P) or (K, P, C)."""
        if out.dim() == 2 and out.shape[1] == 1 and self.members == 1:
            out = out.squeeze(1)
        lead = x.shape[:1] if self.members == 1 else (self.members, x.shape[0])
        if out.shape[: len(lead)] != lead or out.dim() > len(lead) + 1:
            raise ConfigError("model.net", f"output shape {tuple(out.shape)}",
                              f"shape {tuple(lead)} or {tuple(lead) + ('C',)}: one output per sample and class")
        return out

    def check_net(self, x: Tensor, y: Tensor | None = None) -> None:
        """Raise ConfigError if the net does not map x (P, ...) to (P,) finite values — (P, C) with C > max y
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
            single = out.dim() == (1 if self.members == 1 else 2)  # no class axis
            if not y.is_floating_point() and (single or out.shape[-1] <= int(y.max())):
                raise ConfigError("model.net.init_args.out_dim", 1 if single else out.shape[-1],
                                  "the number of classes C of data.labels: class (filled from the data)")
            if y.is_floating_point() and not single:
                raise ConfigError("model.net.init_args.out_dim", out.shape[-1], "1 for ±1 labels (data.labels: parity)")

    # ---- loss and statistics -------------------------------------------------------------------
    def margin_and_loss(self, F_out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(z, ℓ) per sample, (P,) or members' (K, P): z = yF (±1 labels) or F_y − max_{c≠y} F_c (class labels),
        Δ = 1 − z."""
        z = margin_variable(F_out, y)
        return z, sample_loss(self.loss_name, self.loss_fn, F_out, y, z)

    def stats(self, F_out: Tensor, y: Tensor) -> dict[str, Tensor]:
        """loss = α²L = mean ℓ (differentiable), n_delta = #{Δ > 0}, delta_max = max Δ (detached),
        error = mean[z ≤ 0], each a mean/count/max over the samples (last axis of z): () for one net, (K,)
        for K members."""
        z, loss = self.margin_and_loss(F_out, y)
        delta = 1 - z
        return {
            "loss": loss.mean(-1),
            "n_delta": n_delta(delta),
            "delta_max": delta.detach().amax(-1),
            "error": (z <= 0).to(F_out.dtype).mean(-1),
        }

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Any]:
        """Loss (α²L), N_Δ and error of the current net on (x, y), as Python numbers (lists of K with members);
        NaN (N_Δ None) for a net whose output is NaN or infinite — a comparison with NaN would otherwise
        count as a met margin."""
        F_out = self(x)
        s = self.stats(F_out, y)
        finite = torch.isfinite(F_out).reshape(self.members, -1).all(dim=1).tolist() if self.members > 1 \
            else [bool(torch.isfinite(F_out).all())]
        if self.members > 1:
            nan = float("nan")
            loss, nd, err = s["loss"].tolist(), s["n_delta"].tolist(), s["error"].tolist()
            dmax = s["delta_max"].tolist()
            return {"loss": [v if ok else nan for v, ok in zip(loss, finite, strict=True)],
                    "n_delta": [v if ok else None for v, ok in zip(nd, finite, strict=True)],
                    "delta_max": [v if ok else nan for v, ok in zip(dmax, finite, strict=True)],
                    "error": [v if ok else nan for v, ok in zip(err, finite, strict=True)]}
        if not finite[0]:
            return {"loss": float("nan"), "n_delta": None, "delta_max": float("nan"), "error": float("nan")}
        return {"loss": float(s["loss"]), "n_delta": int(s["n_delta"]), "delta_max": float(s["delta_max"]),
                "error": float(s["error"])}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> StepOutput:
        if not self.automatic_optimization:
            return run_steps(self, batch)
        return self.step_outputs(batch)

    def step_outputs(self, batch: tuple[Tensor, Tensor], log: bool = True) -> StepOutput:
        """One evaluation on the batch: F, α²L, N_Δ, error; ``loss`` (= L, to differentiate) and logs."""
        x, y = batch
        F_out = self(x)
        self._last_outputs = F_out.detach()  # read by GradientFlow (d_out) through last_outputs()
        s = self.stats(F_out, y)
        self._last_loss = s["loss"].detach().mean()  # for ReduceLROnPlateau (members: their mean)
        if self.members > 1:
            return self._members_step_output(s, F_out, len(y), log)
        if log and self._logs_this_step():  # under DDP: N_Δ summed over the ranks' shards, loss and error averaged
            self.log("train/n_delta", s["n_delta"].float(), on_step=True, on_epoch=False, batch_size=len(y),
                     sync_dist=True, reduce_fx="sum")
            self.log_dict({"train/loss": s["loss"].detach().float(), "train/error": s["error"].float()},
                          on_step=True, on_epoch=False, batch_size=len(y), sync_dist=True)
        # Gradient of L = (1/α²)·mean ℓ, logged value is α²L.
        return {"loss": s["loss"] / self.alpha**2, "loss_value": s["loss"].detach(),
                "n_delta": s["n_delta"].detach(), "delta_max": s["delta_max"], "outputs": F_out.detach()}

    def _members_step_output(self, s: dict[str, Tensor], F_out: Tensor, batch_size: int,
                             log: bool) -> StepOutput:
        """training_step with K members: minimise Σ_k L_k over the members still training (a stopped or
        diverged member contributes exactly 0, not 0·NaN)."""
        if log and self._logs_this_step():
            logs = {"train/loss": s["loss"].detach().mean(), "train/n_delta": s["n_delta"].double().mean(),
                    "train/error": s["error"].mean()}
            if self.members <= 16:
                for k in range(self.members):
                    logs.update({f"member_{k}/train/loss": s["loss"][k].detach(),
                                 f"member_{k}/train/n_delta": s["n_delta"][k].double(),
                                 f"member_{k}/train/error": s["error"][k]})
            self.log_dict({k: v.float() for k, v in logs.items()}, on_step=True, on_epoch=False,
                          batch_size=batch_size, sync_dist=True)
        active = torch.tensor(self.member_active, device=F_out.device)
        alpha = self.alpha_of(s["loss"])  # L_k = α²L_k / α_k²
        total = torch.where(active, s["loss"] / alpha**2, torch.zeros_like(s["loss"])).sum()
        return {"loss": total, "loss_value": s["loss"].detach(), "n_delta": s["n_delta"].detach(),
                "delta_max": s["delta_max"], "outputs": F_out.detach()}

    def freeze_member(self, k: int) -> None:
        """Stop member k: from now on no optimiser step changes its weights (its clock t_k stops too)."""
        if not self.member_active[k]:
            return
        self.member_active[k] = False
        self._frozen[k] = [p[k].detach().clone() for p in self.net.parameters()]

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
        if self.members > 1 and hasattr(opt, "set_members"):  # GradientFlow: one dt and clock per member
            opt.set_members(self.members, lambda: self.member_active)
        self._attach_scheduler(opt)
        return opt

    def _attach_scheduler(self, opt: torch.optim.Optimizer) -> None:
        """Build ``model.lr_scheduler`` on ``opt``. Kept out of Lightning's scheduler loop on purpose: Lightning
        steps ReduceLROnPlateau only with a metric logged that very step, and logging every step costs ~35%
        of a small full-batch step; here the loss of the step itself is used."""
        self.scheduler = None if self.scheduler_factory is None else self.scheduler_factory(opt)
        if self._pending_scheduler_state is not None and self.scheduler is not None:
            self.scheduler.load_state_dict(self._pending_scheduler_state)
            self._pending_scheduler_state = None

    def _step_scheduler(self) -> None:
        """One scheduler step after an optimiser step (ReduceLROnPlateau: on α²L of that step, rank mean)."""
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            loss = self._last_loss if self._last_loss is not None else torch.tensor(math.inf)
            if self._trainer is not None and self.trainer.world_size > 1:
                loss = self.trainer.strategy.reduce(loss.clone(), reduce_op="mean")
            self.scheduler.step(float(loss))
        else:
            self.scheduler.step()
        if self._logs_this_step():
            self.log("train/lr", float(self.scheduler.optimizer.param_groups[0]["lr"]), on_step=True,
                     on_epoch=False, batch_size=1)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.after_optimizer_step(optimizer)

    def after_optimizer_step(self, optimizer: Any) -> None:
        """Advance the flow time t after one optimiser step (members: each t_k; undo stopped members' moves)."""
        # Flow time: an optimiser that integrates gradient flow reports its accepted dt; plain GD's dt is lr.
        opt = getattr(optimizer, "optimizer", optimizer)  # unwrap LightningOptimizer
        dt = getattr(opt, "last_dt", None)
        if self.members > 1:
            self._members_after_step(opt, dt)
        else:
            self.flow_time += float(dt if dt is not None else opt.param_groups[0].get("lr", 0.0))
        self._step_scheduler()  # after t took the rate this step used

    @torch.no_grad()
    def _members_after_step(self, opt: torch.optim.Optimizer, dt: Any) -> None:
        """Per-member clocks; an optimiser that moves every member (SGD, Adam: momentum) has its update of the
        stopped members undone, so their weights stay those of the step at which they stopped."""
        if isinstance(dt, list):  # a member-aware integrator (GradientFlow) reports each member's dt
            dts = dt
        else:
            lr = float(dt if dt is not None else opt.param_groups[0].get("lr", 0.0))
            dts = [lr if a else 0.0 for a in self.member_active]
            for k, saved in self._frozen.items():
                for p, w in zip(self.net.parameters(), saved):
                    p[k].copy_(w)
        for k, d in enumerate(dts):
            self.member_flow_time[k] += float(d)
        self.flow_time = max(self.member_flow_time)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["flow_time"] = self.flow_time  # a resumed run continues the same clock
        checkpoint["member_flow_time"] = list(self.member_flow_time)
        checkpoint["member_active"] = list(self.member_active)
        if self.scheduler is not None:
            checkpoint["lp_lr_scheduler"] = self.scheduler.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.flow_time = float(checkpoint.get("flow_time", 0.0))
        self._pending_scheduler_state = checkpoint.get("lp_lr_scheduler")
        if self._pending_scheduler_state is not None and self.scheduler is not None:
            self.scheduler.load_state_dict(self._pending_scheduler_state)
            self._pending_scheduler_state = None
        self.member_flow_time = list(checkpoint.get("member_flow_time", [self.flow_time] * self.members))
        active = list(checkpoint.get("member_active", [True] * self.members))
        self.member_active = [True] * self.members
        self._frozen = {}
        self._pending_freeze = [k for k, a in enumerate(active) if not a]  # frozen once the weights are loaded

    # Callbacks of this package that read the net as one network (one output per sample) and so refuse members
    # (a ScheduledCallback with ``measure_members`` measures each member), or that measure on scheduled steps.
    _SINGLE_NET_CALLBACKS = ("HessianSpectrum", "LoadCurve", "DiffeoStability")
    _SCHEDULED_CALLBACKS = ("NTKChange", "Margins", "WeightsChange", "TimeScale") + _SINGLE_NET_CALLBACKS

    def on_fit_start(self) -> None:
        for field, value, names, why in (
                ("model.members", self.members, self._SINGLE_NET_CALLBACKS,
                 "it measures one net; NTKChange, Margins, WeightsChange and TimeScale measure per member"),
                ("model.steps_per_call", self.steps_per_call, self._SCHEDULED_CALLBACKS,
                 "it measures on scheduled steps")):
            if value == 1:
                continue
            for cb in trainer_callbacks(self.trainer):
                name = type(cb).__name__
                if type(cb).__module__.startswith("lightning_phase.callbacks") and name in names:
                    raise ConfigError(field, value, f"1 with the {name} callback ({why})")

    def on_train_start(self) -> None:
        for k in self._pending_freeze:
            self.freeze_member(k)
        self._pending_freeze = []


if TYPE_CHECKING:
    def _satisfies_protocol(module: PhaseModule) -> PhaseModuleLike:
        return module  # the type checker verifies that PhaseModule has every member of PhaseModuleLike
