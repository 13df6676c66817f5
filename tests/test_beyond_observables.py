"""[SB] separation / load curve / spring–block and [DIFF] diffeomorphisms, each against a brute-force
float64 definition or an exact result (BEYOND.md §A.6, §B.6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_phase.observables.diffeo import (
    apply_displacement,
    displacement_variance,
    matched_noise,
    relative_stability,
    sample_displacement,
    stabilities,
    temperature_for_displacement,
    temperature_range,
)
from lightning_phase.observables.separation import class_covariances, load_curve, log_separation
from lightning_phase.observables.spring_block import spring_block

f64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _direct_log_d(h: torch.Tensor, y: torch.Tensor) -> float:
    sw, sb = class_covariances(h, y)
    return math.log(float(torch.trace(sw @ torch.linalg.pinv(sb, rtol=1e-10, hermitian=True))))


# ---- separation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n,p,k", [(60, 5, 3), (80, 30, 4), (50, 3, 7), (40, 12, 2)])
def test_fast_separation_equals_direct_pinv_formula(n, p, k):
    g = _gen(n + p + k)
    y = torch.arange(n) % k
    h = torch.randn(n, p, generator=g, dtype=f64) + 0.7 * torch.randn(k, p, generator=g, dtype=f64)[y]
    assert log_separation(h, y) == pytest.approx(_direct_log_d(h, y), rel=1e-10, abs=1e-10)


def test_separation_of_two_gaussian_classes_matches_closed_form():
    # means ±m, covariance Σ, equal counts: Σ_b = m mᵀ, Σ_b⁺ = m mᵀ/‖m‖⁴, D = mᵀΣm/‖m‖⁴.
    g = _gen(0)
    p, n = 4, 40_000
    m = torch.tensor([1.0, 0.5, 0.0, -0.3], dtype=f64)
    A = torch.randn(p, p, generator=g, dtype=f64)
    sigma = A @ A.T / p + 0.1 * torch.eye(p, dtype=f64)
    y = torch.arange(n) % 2
    z = torch.randn(n, p, generator=g, dtype=f64) @ torch.linalg.cholesky(sigma).T
    h = z + torch.where(y[:, None] == 0, m, -m)
    expected = float(m @ sigma @ m / m.dot(m) ** 2)
    assert math.exp(log_separation(h, y)) == pytest.approx(expected, rel=0.03)


def test_separation_is_invariant_under_invertible_maps_when_sigma_b_is_full_rank():
    # p ≤ K − 1: Σ_b invertible, D = Tr(Σ_w Σ_b⁻¹) is invariant under any invertible h ↦ Bh.
    g = _gen(1)
    y = torch.arange(90) % 6
    h = torch.randn(90, 4, generator=g, dtype=f64) + torch.randn(6, 4, generator=g, dtype=f64)[y]
    B = torch.randn(4, 4, generator=g, dtype=f64) + 2 * torch.eye(4, dtype=f64)
    assert log_separation(h @ B.T, y) == pytest.approx(log_separation(h, y), rel=1e-9)


def test_separation_is_invariant_under_rotation_and_scale_for_any_width():
    g = _gen(2)
    y = torch.arange(100) % 3
    h = torch.randn(100, 20, generator=g, dtype=f64) + torch.randn(3, 20, generator=g, dtype=f64)[y]
    Q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=f64))
    assert log_separation(3.7 * h @ Q.T, y) == pytest.approx(log_separation(h, y), rel=1e-9)


def test_separation_is_not_invariant_under_shears_when_sigma_b_is_rank_deficient():
    # Σ_b = e₁e₁ᵀ, Σ_w = I/2: D = 1/2; after h ↦ Bh with B = [[1,0],[1,1]]: D = ½‖BᵀBe₁‖²/‖Be₁‖⁴ = 5/8.
    dev = torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]], dtype=f64)
    h = torch.cat([dev + torch.tensor([1.0, 0], dtype=f64), dev - torch.tensor([1.0, 0], dtype=f64)])
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    B = torch.tensor([[1.0, 0], [1, 1]], dtype=f64)
    assert math.exp(log_separation(h, y)) == pytest.approx(0.5, rel=1e-12)
    assert math.exp(log_separation(h @ B.T, y)) == pytest.approx(0.625, rel=1e-12)


def test_separation_limits_and_bad_labels():
    h = torch.tensor([[0.0], [0.0], [2.0], [2.0]], dtype=f64)
    assert log_separation(h, torch.tensor([0, 0, 1, 1])) == -math.inf  # Σ_w = 0
    assert log_separation(torch.ones(4, 3), torch.tensor([0, 1, 0, 1])) == math.inf  # Σ_b = 0
    with pytest.raises(ValueError, match="at least 2"):
        log_separation(h, torch.zeros(4))
    with pytest.raises(ValueError, match="labels"):
        log_separation(h, torch.zeros(3))


# ---- load curve -----------------------------------------------------------------------------------
def test_load_curve_of_a_straight_line_has_zero_curvature_and_spread():
    c = load_curve([3.0, 2.5, 2.0, 1.5, 1.0])
    assert c.loads == pytest.approx((0.5,) * 4)
    assert c.curvature == pytest.approx(0, abs=1e-12) and c.spread == pytest.approx(0, abs=1e-12)
    assert c.pearson_r == pytest.approx(-1.0) and c.shallow_fraction == pytest.approx(0.5)


def test_load_curve_curvature_sign_follows_the_shape():
    concave = load_curve([3.0, 2.9, 2.7, 2.2, 1.0])  # deep layers do the work
    convex = load_curve([3.0, 1.8, 1.3, 1.1, 1.0])  # shallow layers do the work
    assert concave.curvature == pytest.approx(0.1 - 1.2) and concave.curvature < 0
    assert convex.curvature == pytest.approx(1.2 - 0.1) and convex.curvature > 0
    assert convex.shallow_fraction > 0.5 > concave.shallow_fraction
    assert concave.curvature_norm == pytest.approx(-1.1 / 2.0)
    with pytest.raises(ValueError):
        load_curve([1.0])


# ---- spring–block ---------------------------------------------------------------------------------
def test_spring_block_zero_noise_profile_is_exact():
    d = spring_block(n_blocks=7, k=1.0, mu_forward=0.1, noise=0.0)
    assert d.shape == (1, 8)
    torch.testing.assert_close(d[0], torch.tensor([0, 0, 0, 0, 0.1, 0.2, 0.3, 0.4], dtype=f64), rtol=0, atol=1e-8)


def test_spring_block_without_friction_loads_every_spring_equally():
    d = spring_block(n_blocks=7, mu_forward=0.0)
    torch.testing.assert_close(d[0], torch.full((8,), 1 / 8, dtype=f64), rtol=0, atol=1e-8)


def test_spring_block_noise_spreads_the_load():
    d = spring_block(n_blocks=7, mu_forward=0.1, noise=0.3, n_chains=8, generator=_gen(0)).mean(0)
    torch.testing.assert_close(d.sum(), torch.tensor(1.0, dtype=f64))
    assert float(d[0]) > 0.03  # the shallowest spring moves once the noise is of the order of μ
    assert float(d.max() - d.min()) < 0.2  # nearly uniform (zero noise: 0.4)


# ---- diffeomorphisms ------------------------------------------------------------------------------
def test_zero_temperature_is_the_identity():
    x = torch.rand(3, 2, 7, 9, generator=_gen(0), dtype=f64)
    tau = sample_displacement(3, (7, 9), 0.0, 3, _gen(1))
    assert tau.abs().max() == 0
    torch.testing.assert_close(apply_displacement(x, tau), x, rtol=0, atol=1e-14)


def test_displacement_vanishes_on_the_border():
    tau = sample_displacement(50, (12, 10), 0.05, 5, _gen(2))
    assert tau.abs().max() > 0.1
    for edge in (tau[..., 0, :], tau[..., -1, :], tau[..., :, 0], tau[..., :, -1]):
        assert edge.abs().max() < 1e-13


def test_mean_squared_displacement_matches_exact_mode_sum_and_grows_linearly_with_temperature():
    size, c, n = (16, 16), 3, 4000
    for T in (1e-3, 4e-3):
        tau = sample_displacement(n, size, T, c, _gen(3 + int(T * 1e4)))
        msd = tau.pow(2).sum(1).mean(0)  # (H, W), pixels²
        exact = displacement_variance(size, T, c)
        centre = (8, 8)
        assert float(msd[centre]) == pytest.approx(float(exact[centre]), rel=0.08)
        assert float(msd.mean()) == pytest.approx(float(exact.mean()), rel=0.05)
    assert float(displacement_variance(size, 4e-3, c).mean()) == pytest.approx(
        4 * float(displacement_variance(size, 1e-3, c).mean()), rel=1e-12)


def test_coefficient_variance_and_cutoff():
    # recover C_ij from τ by projecting on the sine basis (orthogonal on a fine grid up to the border terms)
    c, n, T = 3, 64, 1.0
    tau = sample_displacement(3000, (n, n), T, c, _gen(4))[:, 0] / n  # (B, H, W), √T = 1
    u = torch.linspace(0, 1, n, dtype=f64)
    s = torch.stack([torch.sin(math.pi * k * u) for k in range(1, c + 2)])  # (c+1, n)
    coef = torch.einsum("byx,ix,jy->bij", tau, s, s) * (2 / (n - 1)) ** 2
    var = coef.var(0)
    for i in range(1, c + 2):
        for j in range(1, c + 2):
            want = 1 / (i * i + j * j) if math.hypot(i, j) < c + 0.5 else 0.0
            assert float(var[i - 1, j - 1]) == pytest.approx(want, rel=0.15, abs=2e-3)


def _brute_bilinear(img: np.ndarray, tau: np.ndarray) -> np.ndarray:
    C, H, W = img.shape
    out = np.zeros_like(img)
    for y in range(H):
        for x in range(W):
            sx = min(max(x - tau[0, y, x], 0), W - 1)
            sy = min(max(y - tau[1, y, x], 0), H - 1)
            x0, y0 = int(math.floor(sx)), int(math.floor(sy))
            x1, y1 = min(x0 + 1, W - 1), min(y0 + 1, H - 1)
            ax, ay = sx - x0, sy - y0
            out[:, y, x] = ((1 - ax) * (1 - ay) * img[:, y0, x0] + ax * (1 - ay) * img[:, y0, x1]
                            + (1 - ax) * ay * img[:, y1, x0] + ax * ay * img[:, y1, x1])
    return out


def test_vectorised_warp_equals_brute_force_bilinear():
    x = torch.rand(4, 2, 6, 7, generator=_gen(5), dtype=f64)
    tau = sample_displacement(4, (6, 7), 0.2, 3, _gen(6))  # large: exercises the clamp at the border
    got = apply_displacement(x, tau)
    for b in range(4):
        np.testing.assert_allclose(got[b].numpy(), _brute_bilinear(x[b].numpy(), tau[b].numpy()), atol=1e-12)


def test_matched_noise_has_the_norm_of_the_deformation():
    x = torch.rand(20, 1, 8, 8, generator=_gen(7), dtype=f64)
    x_def = apply_displacement(x, sample_displacement(20, (8, 8), 0.01, 3, _gen(8)))
    eta = matched_noise(x, x_def, _gen(9))
    torch.testing.assert_close(eta.flatten(1).norm(dim=1), (x_def - x).flatten(1).norm(dim=1), rtol=1e-12, atol=0)


def test_temperature_helpers():
    assert temperature_for_displacement(1.0, 32, 3) == pytest.approx(1.13e-3, rel=0.01)
    t_min, t_max = temperature_range(32, 3)
    assert t_min == pytest.approx(2.8e-4, rel=0.02) and t_max == pytest.approx(1.3e-2, rel=0.02)


def test_random_linear_maps_are_as_stable_to_deformations_as_to_noise():
    # f(x) = Wx with Gaussian W: E_W‖Wδ‖² = K‖δ‖² for every δ, so D_f/G_f → 1 (isotropy).
    x = torch.rand(64, 1, 10, 10, generator=_gen(10), dtype=f64)
    ratios = []
    for seed in range(6):
        W = torch.randn(200, 100, generator=_gen(100 + seed), dtype=f64)
        s = relative_stability(lambda b, W=W: b.flatten(1) @ W.T, x, 0.01, 3, n_samples=4, seed=seed, n_boot=20)
        ratios.append(s.R)
        assert 0 < s.D and 0 < s.G and s.n == 256
    assert float(np.mean(ratios)) == pytest.approx(1.0, abs=0.06)


def test_smooth_function_is_more_stable_to_deformations_than_to_noise():
    # f = the image blurred to one number per quadrant: smooth deformations barely move it, noise does
    x = torch.rand(64, 1, 12, 12, generator=_gen(11), dtype=f64)
    s = relative_stability(lambda b: torch.nn.functional.avg_pool2d(b, 6).flatten(1), x, 0.005, 3,
                           n_samples=4, agg="median")
    assert s.R < 1 and s.R_err > 0


def test_constant_function_gives_zero_without_dividing_by_zero():
    x = torch.rand(10, 1, 6, 6, generator=_gen(12), dtype=f64)
    s = relative_stability(lambda b: torch.ones(len(b), 3, dtype=f64), x, 0.01, 3, n_samples=2)
    assert s.D == 0 and s.G == 0 and math.isnan(s.R)


def test_stabilities_mean_estimator_against_definition():
    g = _gen(13)
    fx, ft, fe = (torch.randn(*shape, generator=g, dtype=f64) for shape in ((7, 3), (2, 7, 3), (2, 7, 3)))
    pair = torch.stack([((fx[i] - fx[j]) ** 2).sum() for i in range(7) for j in range(7)]).mean()
    s = stabilities(fx, ft, fe, "mean", n_boot=0)
    assert s.D == pytest.approx(float(((ft - fx) ** 2).sum(-1).mean() / pair), rel=1e-12)
    assert s.G == pytest.approx(float(((fe - fx) ** 2).sum(-1).mean() / pair), rel=1e-12)
    assert s.R == pytest.approx(s.D / s.G)
