"""GradientFlow with K members: each member k its own adaptive dt_k, clock t_k and accept/reject decision.

The parameters carry a leading member axis (K, ...) (``lightning_phase.nets.members.Members``) and the
closure's loss is Σ_k L_k, so the gradient slice g_k is member k's own ∇L_k. One step, per pending member k
(still training, t_k below ``max_time``), from w_k with cached g_k, F_k (SCIENCE.md §3):
    tentative w'_k = w_k − dt_k·g_k;  one closure evaluation gives every g'_k and F'_k;
    d_grad_k = ‖g'_k − g_k‖² / (‖g_k‖‖g'_k‖),  d_out_k = max_μ |F'_kμ − F_kμ|;
    accepted members keep w'_k; rejected ones restore w_k, dt_k ← dt_k/10, and retry together.
An accepted member's point does not move while others retry, so its g'_k, F'_k are the same at every later
evaluation: member k follows exactly the trajectory of its single run. Stopped members never move.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lightning_phase.errors import ConfigError

_MEMBER_STATE = ("dt", "time", "n_accepted", "n_rejected", "d_grad", "d_out")


class MemberFlowMixin:
    """The member path of ``GradientFlow`` (``set_members`` switches it on); state per member in
    ``param_groups[0]["members"]`` (lists of K: dt, time, n_accepted, n_rejected, d_grad, d_out).
    ``last_dt`` becomes a list of K accepted dt (0 for members that did not move)."""

    _members: int = 0
    _active_fn: Callable[[], list[bool]] | None = None
    # Defined by GradientFlow (a torch Optimizer), declared here for the type checker:
    param_groups: list[dict[str, Any]]
    max_rejections: int
    last_dt: float | list[float]  # a list of K with members
    _flat: dict[str, tuple[Tensor, list[Tensor]]]
    _F: Tensor | None
    _loss: Tensor | None
    _versions: list[int] | None
    if TYPE_CHECKING:
        def _params(self) -> list[Tensor]: ...

        def _outputs(self) -> Tensor | None: ...

        def _cache_valid(self, params: list[Tensor]) -> bool: ...

    def set_members(self, k: int, active_fn: Callable[[], list[bool]]) -> None:
        """Treat the leading axis of every parameter as K members; ``active_fn()`` says which still train."""
        group = self.param_groups[0]
        if group["momentum_tau"] is not None:
            raise ConfigError("model.optimizer.init_args.momentum_tau", group["momentum_tau"],
                              "null with model.members > 1")
        for p in group["params"]:
            if p.dim() == 0 or p.shape[0] != k:
                raise ConfigError("model.members", k, "parameters with a leading member axis of that size")
        self._members, self._active_fn = k, active_fn
        if "members" not in group:
            group["members"] = {name: [group[name]] * k for name in _MEMBER_STATE}
        self.last_dt = [0.0] * k
        self._versions = None

    def member_stats(self) -> dict[str, list[float]]:
        """Each member's dt, t, accepted and rejected step counts, last d_grad and d_out."""
        return {k: list(v) for k, v in self.param_groups[0]["members"].items()}

    def _m_gather(self, params: list[Tensor], name: str) -> Tensor:
        """The gradients as one (K, N) buffer (per-member flat vectors)."""
        k = self._members
        n = sum(p[0].numel() for p in params)
        buf = self._flat.get(name)
        if buf is None or buf[0].shape != (k, n) or buf[0].dtype != params[0].dtype \
                or buf[0].device != params[0].device:
            flat = params[0].new_empty(k, n)
            views, i = [], 0
            for p in params:
                m = p[0].numel()
                views.append(flat[:, i:i + m].unflatten(1, p.shape[1:]))
                i += m
            buf = self._flat[name] = (flat, views)
        flat, views = buf
        torch._foreach_copy_(views, [p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
        return flat

    @torch.no_grad()
    def _member_step(self, closure: Callable[[], Tensor]) -> Tensor:
        group = self.param_groups[0]
        ms = group["members"]
        params = self._params()
        k_all = self._members
        if not self._cache_valid(params):
            with torch.enable_grad():
                self._loss = closure()
            self._m_gather(params, "g")
            self._F = self._outputs()
        g, g_views = self._flat["g"]  # reference g_k at w_k: fixed while the rejected members retry
        w = [p.detach().clone() for p in params]  # snapshot of every member's w
        active = list(self._active_fn()) if self._active_fn is not None else [True] * k_all
        end = group["max_time"]
        remaining = [math.inf if end is None else end - t for t in ms["time"]]
        pending = [active[k] and remaining[k] > 0 for k in range(k_all)]
        used = [0.0] * k_all
        rejections = [0] * k_all
        loss = self._loss
        evaluated = False
        while any(pending):
            step = [min(ms["dt"][k], remaining[k]) if pending[k] else 0.0 for k in range(k_all)]
            mask = torch.tensor(pending, device=g.device)
            dt = torch.tensor(step, dtype=g.dtype, device=g.device)
            for p, w0, gv in zip(params, w, g_views, strict=True):
                shape = (k_all,) + (1,) * (p.dim() - 1)
                p.copy_(torch.where(mask.view(shape), w0 - dt.view(shape) * gv, p))  # w'_k = w_k − dt_k·g_k
            with torch.enable_grad():
                loss = closure()
            evaluated = True
            g_new = self._m_gather(params, "g_new")
            F_new = self._outputs()
            d_grad, d_out = self._member_distances(g, g_new, self._F, F_new)
            reject = [False] * k_all
            for k in range(k_all):
                if not pending[k]:
                    continue
                if d_grad[k] < group["max_dgrad"] and d_out[k] < group["max_dout"]:
                    pending[k], used[k] = False, step[k]
                    ms["d_grad"][k], ms["d_out"][k] = d_grad[k], d_out[k]
                    ms["time"][k] += step[k]
                    ms["n_accepted"][k] += 1
                    if step[k] == ms["dt"][k] and d_grad[k] < group["max_dgrad"] / 2 \
                            and d_out[k] < group["max_dout"] / 2:
                        ms["dt"][k] = step[k] * 1.1
                else:
                    reject[k] = True
                    ms["dt"][k] /= 10.0
                    ms["n_rejected"][k] += 1
                    rejections[k] += 1
                    if rejections[k] > self.max_rejections:
                        raise RuntimeError(
                            f"GradientFlow: member {k}: {self.max_rejections} rejections in a row at t = "
                            f"{ms['time'][k]:.6g} (dt = {ms['dt'][k]:.3g}, last d_grad = {d_grad[k]:.3g}, "
                            f"d_out = {d_out[k]:.3g}): its loss or gradient is not finite")
            if any(reject):
                back = torch.tensor(reject, device=g.device)
                for p, w0 in zip(params, w, strict=True):
                    p.copy_(torch.where(back.view((k_all,) + (1,) * (p.dim() - 1)), w0, p))
        if evaluated:  # the last evaluation saw every member at its final point: its g', F' are the new g, F
            self._flat["g"], self._flat["g_new"] = self._flat["g_new"], self._flat["g"]
            self._F, self._loss = F_new, loss
        if not evaluated:
            with torch.enable_grad():
                loss = closure()  # Lightning expects an evaluation; nobody moves
        self.last_dt = used
        self._versions = [p._version for p in params]
        assert loss is not None  # the closure ran at least once in this step
        return loss

    @staticmethod
    def _member_distances(g: Tensor, g_new: Tensor, F: Tensor | None,
                          F_new: Tensor | None) -> tuple[list[float], list[float]]:
        """Per member: d_grad_k = ‖g'_k−g_k‖²/(‖g_k‖‖g'_k‖) (0 if a norm is 0), d_out_k = max_μ|F'_kμ−F_kμ|;
        g, g_new (K, N); F, F_new (K, P); nan → inf."""
        k = g.shape[0]
        d_out_t = g.new_zeros(k) if F is None or F_new is None else (F_new - F).abs().amax(-1).to(g.dtype)
        if F is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(d_out_t, op=torch.distributed.ReduceOp.MAX)
        rows = torch.stack([torch.linalg.vector_norm(g, dim=1), torch.linalg.vector_norm(g_new, dim=1),
                            torch.linalg.vector_norm(g_new - g, dim=1), d_out_t]).tolist()  # one sync
        d_grad, d_out = [], []
        for n, n_new, diff, do in zip(*rows, strict=True):
            dg = 0.0 if n == 0.0 or n_new == 0.0 else diff * diff / (n * n_new)
            d_grad.append(dg if math.isfinite(dg) else math.inf)
            d_out.append(do if math.isfinite(do) else math.inf)
        return d_grad, d_out
