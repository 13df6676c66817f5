"""How far training moved: weights change, output scale ‖F‖ and the time scale t₁ (SCIENCE.md §4, [FL])."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn


@torch.no_grad()
def weights_change(net: nn.Module, net0: nn.Module, width: int | None = None) -> dict[str, float]:
    """√h‖w − w₀‖/‖w₀‖, total (key "total") and per layer (key = the module path, e.g. "layers.0").

    h = ``width`` or ``net.width``; a net without an integer width gets h = 1 (plain relative change).
    [FL]: ∝ α̃^{−1} lazy, ≈ α̃^{−0.23} feature. A layer groups the parameters of one module (weight and
    bias together); ‖w₀‖ is that module's initial norm (a layer whose w₀ is all zero reports inf).
    net and net0 must have the same parameter names (PhaseModule.net and .net0).
    """
    h = width if width is not None else getattr(net, "width", None)
    scale = math.sqrt(h) if isinstance(h, int) and h > 0 else 1.0
    p0 = dict(net0.named_parameters())
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for name, w in net.named_parameters():
        layer = name.rsplit(".", 1)[0] if "." in name else name
        w0 = p0[name]
        num[layer] = num.get(layer, 0.0) + float((w - w0).pow(2).sum())
        den[layer] = den.get(layer, 0.0) + float(w0.pow(2).sum())
    out = {"total": scale * math.sqrt(sum(num.values()) / sum(den.values()))}
    for layer in num:
        out[layer] = scale * math.sqrt(num[layer] / den[layer]) if den[layer] > 0 else math.inf
    return out


def output_norm(F_out: Tensor) -> Tensor:
    """‖F‖ = (mean_μ F_μ²)^{1/2}, the RMS output over the last axis: (P,) → () or (K, P) → (K,)."""
    return F_out.pow(2).mean(dim=-1).sqrt()


def t1(times: Sequence[float] | np.ndarray, losses: Sequence[float] | np.ndarray) -> float | None:
    """t₁ = the first recorded time t_i with α²L_i < α²L_0/2 (losses[0] is the start); None if never.

    times: continuous flow times t (Σ dt), increasing; losses: α²L at those times, same length.
    [FL]: t₁ ∝ √h·α in the feature regime, O(1) in the lazy one. No interpolation between records.
    """
    loss = np.asarray(losses, dtype=float)
    below = np.nonzero(loss < 0.5 * loss[0])[0]
    return float(np.asarray(times, dtype=float)[below[0]]) if len(below) else None
