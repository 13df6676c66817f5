"""Layer-wise data separation and load curves of the spring–block picture ([SB] 2407.19353; BEYOND.md §A.1).

Example (float64)::

    h = torch.randn(500, 100, dtype=torch.float64)        # features of one layer, (N, p)
    y = torch.randint(0, 10, (500,))                       # class labels, (N,)
    log_separation(h, y)                                   # log D = log Tr(Σ_w Σ_b⁺), a float
    curve = load_curve([2.3, 2.0, 1.6, 0.9])               # log D_ℓ for ℓ = 0…L
    curve.loads, curve.curvature, curve.spread, curve.pearson_r

The separation fuzziness of He & Su (2210.17020): with class counts n_k, class means μ_k and global mean μ,
Σ_b = (1/N) Σ_k n_k (μ_k − μ)(μ_k − μ)ᵀ, Σ_w = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ, D = Tr(Σ_w Σ_b⁺).
Small D: well separated classes. "Load" here is the spring–block word for the work of a layer; it has
nothing to do with the lazy/feature axis of α.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["LoadCurve", "class_covariances", "layer_features", "load_curve", "log_separation", "network_load_curve"]

RTOL = 1e-10  # eigenvalues of Σ_b (equivalently of MᵀM) below RTOL·λ_max count as zero in the pseudo-inverse


def _classes(labels: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """(index (N,) in 0…K−1, counts (K,)) of the distinct label values; labels (N,) of any dtype."""
    labels = labels.reshape(-1)
    if len(labels) != n:
        raise ValueError(f"labels: got {len(labels)} labels for {n} feature rows")
    _, index = torch.unique(labels, return_inverse=True)
    counts = torch.bincount(index)
    return index, counts


def class_covariances(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ_w, Σ_b), each (p, p) float64, as defined in the module docstring. The direct O(N p²) form: for tests
    and small p; ``log_separation`` never builds them."""
    h = features.reshape(len(features), -1).to(torch.float64)
    index, counts = _classes(labels, len(h))
    N, K = len(h), len(counts)
    means = torch.zeros(K, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, index, h) / counts[:, None]
    mu = h.mean(0)
    dm = means - mu  # (K, p)
    sigma_b = (dm.T * (counts.to(h.dtype) / N)) @ dm
    c = h - means[index]  # (N, p) within-class centred
    return c.T @ c / N, sigma_b


def log_separation(features: Tensor, labels: Tensor, rtol: float = RTOL) -> float:
    """log D = log Tr(Σ_w Σ_b⁺) (natural log) of features (N, p) — or (N, ...), flattened — with labels (N,).

    Computed in float64 without any p × p matrix, in O(N p K): Σ_b = M Mᵀ with M = [√(n_k/N)(μ_k − μ)]_k
    (p × K), so Σ_b⁺ = M G G Mᵀ with G = (MᵀM)⁺ (K × K), and D = Tr(G (CM)ᵀ(CM) G)/N where C (N × p) holds
    the within-class centred features (BEYOND.md §A.7). Eigenvalues of MᵀM below ``rtol``·max are dropped
    (Σ_b has rank ≤ K − 1). Needs K ≥ 2 classes; returns +inf when the class means coincide (Σ_b = 0) and
    −inf when every class is a single point (Σ_w = 0).
    """
    h = features.reshape(len(features), -1).to(torch.float64)
    index, counts = _classes(labels, len(h))
    N, K = len(h), len(counts)
    if K < 2:
        raise ValueError(f"labels: got {K} distinct class; the separation needs at least 2")
    sums = torch.zeros(K, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, index, h)
    means = sums / counts[:, None]  # (K, p)
    w = (counts.to(h.dtype) / N).sqrt()  # (K,)
    Mt = (means - h.mean(0)) * w[:, None]  # Mᵀ (K, p)
    evals, evecs = torch.linalg.eigh(Mt @ Mt.T)  # MᵀM (K, K)
    top = float(evals[-1])
    if top <= 0.0:
        return math.inf
    keep = evals > rtol * top
    G = (evecs[:, keep] / evals[keep]) @ evecs[:, keep].T  # (MᵀM)⁺
    CM = h @ Mt.T - (means @ Mt.T)[index]  # (N, K) = (h_i − μ_{y_i})ᵀM, without the (N, p) centred copy
    D = float(torch.trace(G @ (CM.T @ CM) @ G)) / N
    return math.log(D) if D > 0 else -math.inf


@dataclass(frozen=True)
class LoadCurve:
    """Shape statistics of a load curve log D_ℓ, ℓ = 0…L (BEYOND.md §A.1; [SB] code ``v_and_c``).

    loads d_ℓ = log D_{ℓ−1} − log D_ℓ (ℓ = 1…L); curvature c = Σ_ℓ (d_ℓ − d_{ℓ+1}) = d_1 − d_L (> 0 convex:
    shallow layers do more; < 0 concave: deep layers do more; 0 straight); spread v = std_ℓ d_ℓ (population
    std, 0 for a straight curve); curvature_norm = c / (log D_0 − log D_L); pearson_r of log D_ℓ against ℓ
    (−1 for a straight falling curve; nan when log D is constant); shallow_fraction = Σ_{ℓ ≤ L/2} d_ℓ / Σ d_ℓ.
    """

    log_d: tuple[float, ...]
    loads: tuple[float, ...]
    curvature: float
    spread: float
    curvature_norm: float
    pearson_r: float
    shallow_fraction: float

    def as_dict(self) -> dict:
        return asdict(self)


def load_curve(log_d: Sequence[float]) -> LoadCurve:
    """Loads and shape statistics (see ``LoadCurve``) of log D_ℓ for ℓ = 0…L; needs L ≥ 1 (two points)."""
    y = np.asarray([float(v) for v in log_d], dtype=np.float64)
    if y.ndim != 1 or len(y) < 2 or not np.all(np.isfinite(y)):
        raise ValueError(f"log_d: got {list(y)}; expected at least two finite values")
    d = y[:-1] - y[1:]  # (L,)
    total = float(y[0] - y[-1])
    ell = np.arange(len(y), dtype=np.float64)
    if np.ptp(y) > 0:
        r = float(np.corrcoef(ell, y)[0, 1])
    else:
        r = math.nan
    curvature = float(d[0] - d[-1])
    half = len(d) // 2
    return LoadCurve(
        log_d=tuple(y.tolist()),
        loads=tuple(d.tolist()),
        curvature=curvature,
        spread=float(d.std()),
        curvature_norm=curvature / total if total != 0 else math.nan,
        pearson_r=r,
        shallow_fraction=float(d[:half].sum() / d.sum()) if d.sum() != 0 else math.nan,
    )


ACTIVATION_TYPES = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.GELU, nn.SiLU, nn.Softplus, nn.ELU, nn.Sigmoid)


def _is_activation(m: nn.Module) -> bool:
    from lightning_phase.nets.activations import Activation

    return isinstance(m, (Activation, *ACTIVATION_TYPES))


@torch.no_grad()
def layer_features(net: nn.Module, x: Tensor, layers: Sequence[str] | None = None) -> list[tuple[str, Tensor]]:
    """Representations h^ℓ of x (P, ...) through ``net``: [("input", x flattened), (name#call, output), ...].

    ``layers``: names in ``net.named_modules()`` whose outputs are recorded; None = every activation module
    (``Activation`` and torch's activation classes) — a module called several times (FullyConnected's one
    σ) gives one entry per call, in call order. With an ``input_norm`` module (``MLP``) the input entry is
    its output (the input after the input BatchNorm, as in [SB]). Each entry is (P, p_ℓ), flattened, in
    the net's dtype. The net runs as it is: put it in eval mode first.
    """
    named = dict(net.named_modules())
    if layers is None:
        chosen = [(n, m) for n, m in named.items() if n and _is_activation(m)]
    else:
        missing = [n for n in layers if n not in named]
        if missing:
            raise ValueError(f"layers: {missing} are not modules of the net; it has {[n for n in named if n]}")
        chosen = [(n, named[n]) for n in layers]
    records: list[tuple[str, Tensor]] = []
    counts: dict[str, int] = {}

    def hook_for(name: str):
        def hook(mod, args, out):
            counts[name] = counts.get(name, 0) + 1
            records.append((f"{name}#{counts[name]}", out.detach().flatten(1)))
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in chosen]
    input_norm = getattr(net, "input_norm", None)
    first: list[Tensor] = []
    if isinstance(input_norm, nn.Module):
        handles.append(input_norm.register_forward_hook(lambda mod, args, out: first.append(out.detach().flatten(1))))
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    return [("input", first[0] if first else x.flatten(1))] + records


def network_load_curve(net: nn.Module, x: Tensor, labels: Tensor, layers: Sequence[str] | None = None,
                       rtol: float = RTOL) -> tuple[list[str], LoadCurve]:
    """(layer names, ``load_curve`` of log D_ℓ) over ``layer_features(net, x, layers)`` with class labels (P,).
    Layers whose log D is not finite (e.g. a dead layer with Σ_b = 0) raise ValueError naming them."""
    feats = layer_features(net, x, layers)
    log_d = [log_separation(h, labels, rtol) for _, h in feats]
    bad = [name for (name, _), v in zip(feats, log_d) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"log D is not finite at layers {bad}")
    return [name for name, _ in feats], load_curve(log_d)
