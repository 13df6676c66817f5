"""KernelFlow: the α → ∞ (lazy) limit of PhaseModule — gradient flow with the frozen initial NTK Θ₀.

Derivation (SCIENCE.md §1, §3). With F(w, x) = α·(f(w, x) − f(w₀, x)) and L = (1/(α²P)) Σ_μ ℓ(y_μF_μ),
gradient flow dw/dt = −∇L gives, for the linearised net f(w) − f₀ = ∇f(w₀)·(w − w₀),

    dF(x)/dt = −(1/P) Σ_ν Θ₀(x, x_ν) y_ν ℓ'(y_ν F_ν),      Θ₀(x, x') = ∇_w f(w₀, x)·∇_w f(w₀, x'),

independent of α: F(x, t) = Σ_ν Θ₀(x, x_ν) a_ν(t), dual coefficients da_ν/dt = −y_ν ℓ'(y_νF_ν)/P, a(0) = 0.

Implementation: write Θ₀(X, X) = C Cᵀ (Cholesky, X = the P training points) and parametrise
F(x) = α·Θ₀(x, X) C⁻ᵀ θ with θ ∈ R^P (so a = C⁻ᵀθ and F(X) = αCθ). Gradient flow of the *same*
loss in θ is then exactly the flow above — C plays the role of the Jacobian J = ∇f(w₀, X) restricted to
the span of its rows — and ‖∇_θL‖ = ‖∇_wL‖ of the linearised net, so :class:`~lightning_phase.optim.
GradientFlow` runs it with the same step rule (same d_grad, d_out) the network sees at large α̃.
The result does not depend on α (α = 1 here); the test outputs are Θ₀(test, X)a.
"""

from __future__ import annotations

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_phase.contracts import trainer_datamodule
from lightning_phase.errors import ConfigError, check_positive_float
from lightning_phase.module import PhaseModule
from lightning_phase.observables import ntk
from lightning_phase.optim import GradientFlow


def _default_flow(params) -> GradientFlow:
    """Default optimiser of KernelFlow: the [FL] gradient flow (max_dgrad 1e-4, max_dout 0.1)."""
    return GradientFlow(params)


class KernelFlow(PhaseModule):
    """The lazy limit α̃ → ∞ of :class:`PhaseModule`: kernel gradient flow with the frozen NTK Θ₀.

    ``net`` gives Θ₀ (its initial weights; it is never trained). Same loss, metrics, logging and summary
    fields as PhaseModule; the training set X (P points) is taken from ``trainer.datamodule.x_train`` at
    ``setup``. Trainable state: θ (P,), F(x) = Θ₀(x, X)C⁻ᵀθ with Θ₀(X, X) = CCᵀ; dual coefficients
    ``dual_coefficients()`` = C⁻ᵀθ. Θ₀(x, X)C⁻ᵀ is computed once per input tensor (cached by identity).
    ``jitter``: relative diagonal shift tried first if Θ₀(X, X) is numerically singular (then ×10 up
    to 1e-6); the one used is ``self.jitter_used``. Cost: one P×P Cholesky, one NTK per data set.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: str = "soft_hinge",
        loss_beta: float = 20.0,
        optimizer: OptimizerCallable = _default_flow,
        jitter: float = 1e-12,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__(net, alpha=1.0, loss=loss, loss_beta=loss_beta, optimizer=optimizer,
                         lr_scheduler=lr_scheduler)
        self.alpha_tilde = None  # α̃ = ∞: the summary should record the lazy limit, not α̃ = √h
        self.lazy_limit = True
        self.jitter = check_positive_float("model.jitter", jitter)
        self.jitter_used: float | None = None  # the diagonal shift the Cholesky needed, if any
        self.theta: nn.Parameter | None = None
        self.register_buffer("x_train", None, persistent=False)
        self._features: list[tuple[Tensor, Tensor]] = []  # (x, Θ₀(x, X)C⁻ᵀ) cache, a few sets
        self._chol: Tensor | None = None

    def setup(self, stage: str) -> None:
        dm = trainer_datamodule(self.trainer)
        x_train = getattr(dm, "x_train", None)
        if not isinstance(x_train, Tensor):
            raise ConfigError("data", type(dm).__name__, "a datamodule with a tensor x_train")
        if self.theta is None or self.theta.shape[0] != x_train.shape[0]:
            w = next(self.net.parameters())
            self.theta = nn.Parameter(torch.zeros(x_train.shape[0], dtype=w.dtype, device=w.device))
        self.x_train = x_train

    def configure_optimizers(self) -> torch.optim.Optimizer:
        opt = self.optimizer_factory([self.theta])
        if hasattr(opt, "watch_outputs"):
            opt.watch_outputs(self.last_outputs)
        self._attach_scheduler(opt)
        return opt

    # ---- the frozen-kernel model ---------------------------------------------------------------------
    def _cholesky(self) -> Tensor:
        if self._chol is None:
            X = self.x_train.to(self.theta)
            K = ntk(self.net, X)  # (P, P)
            scale = K.diagonal().mean()
            eye = torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
            chol, info = torch.linalg.cholesky_ex(K)
            jitter = self.jitter
            while int(info) != 0:
                if jitter > 1e-6:
                    raise ConfigError("model.jitter", self.jitter, "a larger value: Θ₀(X, X) is singular "
                                      "(duplicate training points?)")
                chol, info = torch.linalg.cholesky_ex(K + jitter * scale * eye)
                self.jitter_used, jitter = jitter, jitter * 10
            self._chol = chol  # (P, P) lower triangular
        return self._chol

    def features(self, x: Tensor) -> Tensor:
        """Φ(x) = Θ₀(x, X)C⁻ᵀ (P_x, P), cached by tensor identity; F(x) = αΦ(x)θ."""
        for xc, phi in self._features:
            if xc is x:
                return phi
        C = self._cholesky()
        with torch.no_grad():
            K = ntk(self.net, x.to(C), self.x_train.to(C))  # (P_x, P)
            phi = torch.linalg.solve_triangular(C, K.T, upper=False).T  # K C⁻ᵀ
        self._features = [*self._features[-3:], (x, phi)]
        return phi

    def forward(self, x: Tensor) -> Tensor:
        """F(x) = Θ₀(x, X)a, a = C⁻ᵀθ; x (P_x, ...) → (P_x,)."""
        return self.alpha * (self.features(x) @ self._theta())

    def dual_coefficients(self) -> Tensor:
        """a (P,) with F(x) = Σ_ν Θ₀(x, x_ν)a_ν."""
        C = self._cholesky()
        return torch.linalg.solve_triangular(C.T, self._theta().detach().unsqueeze(1), upper=True).squeeze(1)

    def _theta(self) -> nn.Parameter:
        """θ (P,); created at ``setup``, once the training set is known."""
        if self.theta is None:
            raise RuntimeError("KernelFlow: θ does not exist before setup (it needs trainer.datamodule.x_train)")
        return self.theta
