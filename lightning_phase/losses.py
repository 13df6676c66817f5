"""The hinge family ℓ(z) of SCIENCE.md §2, cross-entropy, and the margins Δ = 1 − z.

Labels come in two kinds, told apart by dtype. Binary: y (P,) floating ±1, F (..., P), z = yF.
K classes: y (P,) integer class indices 0…K−1, F (..., P, K) (one output per class), and z is the
Crammer–Singer margin z = F_y − max_{k≠y} F_k (for K = 2: ±(F₁ − F₀), the binary yF with F = F₁ − F₀),
which makes "Δ = 1 − z > 0 ⇔ unfitted" and "z ≤ 0 ⇔ misclassified" (argmax wrong, ties count as errors)
hold for every K. Leading axes (e.g. M members) broadcast: the sample axis is the last one of z.
The loss functions of z are elementwise and accept any shape.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_phase.errors import check_choice, check_positive_float

LOSSES = ("soft_hinge", "hinge", "quadratic_hinge", "cross_entropy")


def hinge(z: Tensor) -> Tensor:
    """ℓ(z) = (1 − z)₊."""
    return F.relu(1 - z)


def quadratic_hinge(z: Tensor) -> Tensor:
    """ℓ(z) = ½(1 − z)₊² ([JAM])."""
    return 0.5 * F.relu(1 - z).pow(2)


def soft_hinge(z: Tensor, beta: float = 20.0) -> Tensor:
    """ℓ(z) = softplus_β(1 − z) = log(1 + e^{β(1−z)})/β ([FL], [PD]: β = 20)."""
    return F.softplus(1 - z, beta=beta)


def logistic(z: Tensor) -> Tensor:
    """ℓ(z) = log(1 + e^{−z}): binary cross-entropy of the logit z = yF (cross_entropy with one output)."""
    return F.softplus(-z)


def get_loss(name: str, beta: float = 20.0) -> Callable[[Tensor], Tensor]:
    """The loss ℓ(z) by name, as a function of the margin variable z; ``beta`` is used by ``soft_hinge`` only.
    ``cross_entropy`` gives its binary form ``logistic``; with K classes it is not a function of z alone
    (see ``sample_loss``)."""
    check_choice("model.loss", name, LOSSES)
    if name == "soft_hinge":
        return partial(soft_hinge, beta=check_positive_float("model.loss_beta", beta))
    return {"hinge": hinge, "quadratic_hinge": quadratic_hinge, "cross_entropy": logistic}[name]


def is_multiclass(y: Tensor) -> bool:
    """True for integer class labels (F carries a last class axis), False for ±1 float labels."""
    return not (y.is_floating_point() or y.is_complex())


def margin_variable(F_out: Tensor, y: Tensor) -> Tensor:
    """z = yF for ±1 labels (F (..., P) → (..., P)); for class labels y (P,) int and F (..., P, K) the
    Crammer–Singer margin z_μ = F_{μ,y_μ} − max_{k≠y_μ} F_{μ,k} → (..., P)."""
    if not is_multiclass(y):
        return y * F_out
    idx = y.long().unsqueeze(-1).expand(*F_out.shape[:-1], 1)  # (..., P, 1)
    f_true = F_out.gather(-1, idx)
    others = F_out.scatter(-1, idx, float("-inf"))
    return (f_true - others.amax(-1, keepdim=True)).squeeze(-1)


def sample_loss(name: str, loss_fn: Callable[[Tensor], Tensor], F_out: Tensor, y: Tensor,
                z: Tensor | None = None) -> Tensor:
    """ℓ per sample (..., P): ``loss_fn``(z) for the hinge family and binary cross-entropy; for
    ``cross_entropy`` with class labels −log softmax(F)_y = logsumexp_k F_k − F_y."""
    if name == "cross_entropy" and is_multiclass(y):
        idx = y.long().unsqueeze(-1).expand(*F_out.shape[:-1], 1)
        return torch.logsumexp(F_out, dim=-1) - F_out.gather(-1, idx).squeeze(-1)
    return loss_fn(margin_variable(F_out, y) if z is None else z)


def margins(F_out: Tensor, y: Tensor) -> Tensor:
    """Δ_μ = 1 − z_μ (κ = 1, [JAM]): 1 − y_μF_μ for ±1 labels, 1 − (F_y − max_{k≠y} F_k) for class labels
    (Crammer–Singer); point μ is unfitted when Δ_μ > 0. Shape (..., P)."""
    return 1 - margin_variable(F_out, y)


def n_delta(delta: Tensor) -> Tensor:
    """N_Δ = #{μ : Δ_μ > 0} over the last axis: Δ (P,) → () or (K, P) → (K,), int64."""
    return (delta > 0).sum(dim=-1)
