"""The hinge family ℓ(z) of SCIENCE.md §2 and the margins Δ = 1 − yF.

All functions are elementwise and accept any shape, e.g. (P,) or (K, P) with K members.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor
from torch.nn import functional as F

from lightning_phase.errors import check_choice, check_positive_float

LOSSES = ("soft_hinge", "hinge", "quadratic_hinge")


def hinge(z: Tensor) -> Tensor:
    """ℓ(z) = (1 − z)₊."""
    return F.relu(1 - z)


def quadratic_hinge(z: Tensor) -> Tensor:
    """ℓ(z) = ½(1 − z)₊² ([JAM])."""
    return 0.5 * F.relu(1 - z).pow(2)


def soft_hinge(z: Tensor, beta: float = 20.0) -> Tensor:
    """ℓ(z) = softplus_β(1 − z) = log(1 + e^{β(1−z)})/β ([FL], [PD]: β = 20)."""
    return F.softplus(1 - z, beta=beta)


def get_loss(name: str, beta: float = 20.0) -> Callable[[Tensor], Tensor]:
    """The loss ℓ by name; ``beta`` is used by ``soft_hinge`` only."""
    check_choice("model.loss", name, LOSSES)
    if name == "soft_hinge":
        return partial(soft_hinge, beta=check_positive_float("model.loss_beta", beta))
    return hinge if name == "hinge" else quadratic_hinge


def margins(F_out: Tensor, y: Tensor) -> Tensor:
    """Δ_μ = 1 − y_μ F_μ (κ = 1, [JAM]); point μ is unfitted when Δ_μ > 0. Same shape as F_out."""
    return 1 - y * F_out


def n_delta(delta: Tensor) -> Tensor:
    """N_Δ = #{μ : Δ_μ > 0} over the last axis: Δ (P,) → () or (K, P) → (K,), int64."""
    return (delta > 0).sum(dim=-1)
