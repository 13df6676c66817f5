"""GradientFlow: gradient flow dw/dt = −∇L(w) integrated with the adaptive Euler step of [FL], [PD].

SCIENCE.md §3. One step, from w with gradient g = ∇L(w) and outputs F (the α-scaled outputs on the
training set):
    tentative w' = w − dt·g;  evaluate g' = ∇L(w'), F';
    d_grad = ‖g' − g‖² / (‖g‖‖g'‖),   d_out = max_μ |F'_μ − F_μ|;
    accept if d_grad < max_dgrad and d_out < max_dout (then dt ← 1.1·dt if both are under half their
    limits); otherwise restore w, dt ← dt/10 and retry.  t = Σ accepted dt is the continuous time.
The g', F' of an accepted step are the g, F of the next one, so an accepted step costs one closure
evaluation (plus one per rejection, plus one on the very first step).

Usage, plain PyTorch (the closure returns the loss after backward; outputs optional)::

    opt = GradientFlow(net.parameters(), max_dgrad=1e-4, max_dout=0.1)
    opt.watch_outputs(lambda: last_F)          # () → (P,) outputs of the last closure evaluation
    def closure():
        nonlocal last_F
        opt.zero_grad()
        F = model(x); loss = loss_fn(F); loss.backward(); last_F = F.detach()
        return loss
    for _ in range(n): opt.step(closure)       # opt.time: t, opt.last_dt: accepted dt

In Lightning, ``PhaseModule.configure_optimizers`` calls ``watch_outputs`` with its last training
outputs; the automatic-optimisation closure may be evaluated several times per step (it is).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lightning_phase.errors import ConfigError, check_positive_float, check_positive_int
from lightning_phase.optim_members import MemberFlowMixin

_GROUP_STATE = ("dt", "time", "n_accepted", "n_rejected", "d_grad", "d_out")


class GradientFlow(MemberFlowMixin, torch.optim.Optimizer):
    """Adaptive-step gradient flow (SCIENCE.md §3), optionally with continuous momentum.

    Args:
        params: the parameters w (one group: d_grad is a global measure).
        max_dgrad: accept only if d_grad = ‖g'−g‖²/(‖g‖‖g'‖) < max_dgrad ([FL]: 1e-4).
        max_dout: accept only if d_out = max_μ |F'_μ − F_μ| < max_dout ([FL]: 0.1); F comes from the
            callable given to :meth:`watch_outputs` (without one, d_out is 0 and only d_grad counts).
        dt: initial step (1 in [FL]); it adapts.
        momentum_tau: None (default) for plain gradient flow. τ > 0: continuous momentum
            τ dv/dt = −v − ∇L(w), dw/dt = v, integrated as v ← e^{−dt/τ}v − (1 − e^{−dt/τ})g,
            w ← w + dt·v (τ → 0 recovers gradient flow). Same accept/reject rule.
        max_time: optional end time T: the step that would cross T is shortened to land on it exactly;
            afterwards ``step`` only evaluates the closure (``last_dt`` = 0). Lets runs compare at equal t.
        max_rejections: rejections in a row before ``step`` raises (dt has then shrunk by 10^this).

    With ``set_members(K, active_fn)`` (called by PhaseModule for ``model.members: K``) every member has its
    own dt, clock and accept/reject decision: see :mod:`lightning_phase.optim_members`.

    State (checkpointed in ``state_dict()["param_groups"][0]``): ``dt``, ``time`` (t), ``n_accepted``,
    ``n_rejected``, ``d_grad`` and ``d_out`` of the last accepted step; velocity per parameter.
    Float64 in, float64 throughout: nothing is cast.
    """

    # Its closure's last evaluation in a step is at the accepted new point w(t + dt), not at w(t) as for
    # SGD/Adam: callbacks reading the training-step outputs (TimeScale) date them accordingly.
    evaluates_at_new_point = True

    def __init__(
        self,
        params,
        max_dgrad: float = 1e-4,
        max_dout: float = 0.1,
        dt: float = 1.0,
        momentum_tau: float | None = None,
        max_time: float | None = None,
        max_rejections: int = 30,
    ):
        check_positive_float("model.optimizer.init_args.max_dgrad", max_dgrad)
        check_positive_float("model.optimizer.init_args.max_dout", max_dout)
        check_positive_float("model.optimizer.init_args.dt", dt)
        if momentum_tau is not None:
            check_positive_float("model.optimizer.init_args.momentum_tau", momentum_tau)
        if max_time is not None:
            check_positive_float("model.optimizer.init_args.max_time", max_time)
        check_positive_int("model.optimizer.init_args.max_rejections", max_rejections)
        defaults = dict(max_dgrad=float(max_dgrad), max_dout=float(max_dout), momentum_tau=momentum_tau,
                        max_time=max_time, dt=float(dt), time=0.0, n_accepted=0, n_rejected=0,
                        d_grad=0.0, d_out=0.0)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ConfigError("model.optimizer.init_args.params", f"{len(self.param_groups)} groups",
                              "one parameter group")
        self.max_rejections = max_rejections
        self.last_dt = 0.0  # dt of the last step() (0 if it did not move); read by PhaseModule for t
        self._outputs_fn: Callable[[], Tensor] | None = None
        self._flat: dict[str, tuple[Tensor, list[Tensor]]] = {}  # name → (flat vector, per-param views)
        self._F: Tensor | None = None  # outputs at the current w (valid with the cached g)
        self._loss: Tensor | None = None
        self._versions: list[int] | None = None  # p._version when the cache was filled

    # ---- public helpers --------------------------------------------------------------------------
    def watch_outputs(self, fn: Callable[[], Tensor] | None) -> None:
        """Give the callable returning the outputs F (P,) of the last closure evaluation (for d_out)."""
        self._outputs_fn = fn
        self._versions = None

    @property
    def time(self) -> float:
        """Continuous time t = Σ accepted dt."""
        return self.param_groups[0]["time"]

    def stats(self) -> dict[str, float]:
        """``dynamics/*`` scalars: dt, time, accepted and rejected step counts, last d_grad, d_out (member 0's
        with members)."""
        g = self.param_groups[0]
        if self._members:
            g = {name: values[0] for name, values in g["members"].items()}
        return {"dynamics/dt": g["dt"], "dynamics/time": g["time"], "dynamics/steps": float(g["n_accepted"]),
                "dynamics/rejections": float(g["n_rejected"]), "dynamics/d_grad": g["d_grad"],
                "dynamics/d_out": g["d_out"]}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._versions = None  # w comes from elsewhere: re-evaluate g and F at the next step

    # ---- flat buffers --------------------------------------------------------------------------------
    def _params(self) -> list[Tensor]:
        return [p for p in self.param_groups[0]["params"] if p.requires_grad]

    def _buffer(self, name: str, params: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """One preallocated flat vector (N,) and its per-parameter views, reallocated if params moved."""
        buf = self._flat.get(name)
        n = sum(p.numel() for p in params)
        p0 = params[0]
        if buf is None or buf[0].numel() != n or buf[0].dtype != p0.dtype or buf[0].device != p0.device:
            flat = params[0].new_empty(n)
            views, i = [], 0
            for p in params:
                views.append(flat[i:i + p.numel()].view_as(p))
                i += p.numel()
            buf = self._flat[name] = (flat, views)
        return buf

    def _gather_grad(self, params: list[Tensor], name: str) -> Tensor:
        flat, views = self._buffer(name, params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        torch._foreach_copy_(views, grads)
        return flat

    def _outputs(self) -> Tensor | None:
        if self._outputs_fn is None:
            return None
        out = self._outputs_fn()
        return None if out is None else out.detach().clone()

    def _cache_valid(self, params: list[Tensor]) -> bool:
        return self._versions is not None and self._versions == [p._version for p in params]

    # ---- the step ----------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        """One accepted step of the flow (with its rejections); returns the loss at the new point.

        ``closure`` must zero the grads, evaluate the full-batch loss, call backward and return the loss;
        it is evaluated at least once per call (once per accepted step in steady state).
        """
        if closure is None:
            raise ValueError("GradientFlow.step needs a closure (to re-evaluate the loss)")
        if self._members:  # K members, each with its own dt and clock (optim_members.py)
            return self._member_step(closure)
        group = self.param_groups[0]
        params = self._params()
        if not self._cache_valid(params):  # first step, after a restore, or w changed outside
            with torch.enable_grad():
                self._loss = closure()
            self._gather_grad(params, "g")
            self._F = self._outputs()
        g_flat, g_views = self._buffer("g", params)
        w_flat, w_views = self._buffer("w", params)
        torch._foreach_copy_(w_views, params)  # snapshot of w
        tau = group["momentum_tau"]
        if tau is not None:
            v_old = [self.state[p].setdefault("velocity", torch.zeros_like(p)) for p in params]

        remaining = math.inf if group["max_time"] is None else group["max_time"] - group["time"]
        if remaining <= 0:
            self.last_dt = 0.0
            with torch.enable_grad():
                loss = closure()  # Lightning expects an evaluation; w does not move
            self._versions = [p._version for p in params]
            return loss

        for _ in range(self.max_rejections + 1):
            dt = min(group["dt"], remaining)
            if tau is None:
                torch._foreach_add_(params, g_views, alpha=-dt)  # w' = w − dt·g
            else:
                decay = math.exp(-dt / tau)
                v_new = torch._foreach_mul(v_old, decay)
                torch._foreach_add_(v_new, g_views, alpha=-(1.0 - decay))  # v' = e^{−dt/τ}v − (1−e^{−dt/τ})g
                torch._foreach_add_(params, v_new, alpha=dt)  # w' = w + dt·v'
            with torch.enable_grad():
                loss = closure()
            g_new = self._gather_grad(params, "g_new")
            F_new = self._outputs()
            d_grad, d_out = self._distances(g_flat, g_new, self._F, F_new)
            if d_grad < group["max_dgrad"] and d_out < group["max_dout"]:
                break
            torch._foreach_copy_(params, w_views)  # reject: restore w, retry with dt/10
            group["dt"] /= 10.0
            group["n_rejected"] += 1
        else:
            raise RuntimeError(
                f"GradientFlow: {self.max_rejections} rejections in a row at t = {group['time']:.6g} "
                f"(dt = {group['dt']:.3g}, last d_grad = {d_grad:.3g}, d_out = {d_out:.3g}): the loss or its "
                "gradient is not finite, or the closure does not evaluate the same full-batch loss every call"
            )
        # accept: the new point's g', F' become the cached g, F
        self._flat["g"], self._flat["g_new"] = self._flat["g_new"], self._flat["g"]
        self._F, self._loss = F_new, loss
        if tau is not None:
            for p, v in zip(params, v_new, strict=True):
                self.state[p]["velocity"] = v
        group["time"] += dt
        group["n_accepted"] += 1
        group["d_grad"], group["d_out"] = d_grad, d_out
        if dt == group["dt"] and d_grad < group["max_dgrad"] / 2 and d_out < group["max_dout"] / 2:
            group["dt"] = dt * 1.1  # (a step shortened to land on max_time does not grow dt)
        self.last_dt = dt
        self._versions = [p._version for p in params]
        return loss

    @staticmethod
    def _distances(g: Tensor, g_new: Tensor, F: Tensor | None, F_new: Tensor | None) -> tuple[float, float]:
        """d_grad = ‖g'−g‖²/(‖g‖‖g'‖) (0 if a norm is 0), d_out = max|F'−F| (0 without outputs); nan → inf."""
        d_out_t = g.new_zeros(()) if F is None or F_new is None else (F_new - F).abs().max().to(g.dtype)
        if F is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            # DDP: each rank holds its shard of F, so every rank must take the same decision on the global
            # max (the gradients are already all-reduced by the backward pass).
            torch.distributed.all_reduce(d_out_t, op=torch.distributed.ReduceOp.MAX)
        n, n_new, diff, d_out = torch.stack([torch.linalg.vector_norm(g), torch.linalg.vector_norm(g_new),
                                             torch.linalg.vector_norm(g_new - g), d_out_t]).tolist()  # one sync
        d_grad = 0.0 if n == 0.0 or n_new == 0.0 else diff * diff / (n * n_new)
        d_grad = d_grad if math.isfinite(d_grad) else math.inf
        d_out = d_out if math.isfinite(d_out) else math.inf
        return d_grad, d_out
