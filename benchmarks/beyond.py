"""Cost of the [SB] load curve and the [DIFF] relative stability, in units of training measured in the same run.

Run:  OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/beyond.py

1. Load curve ([SB] sizes: digits, 1400 training points, MLP of 8 hidden layers × 100 with BatchNorm, 10
   classes): one LoadCurve measurement (eval forward with hooks + log D of 9 layers by the O(NpK) form) against
   one full-batch Adam training step (forward, backward, update) on the same 1400 points; and the O(NpK) form
   against the direct Tr(Σ_w pinv(Σ_b)) at p = 100 and p = 2000 (BEYOND.md §A.7), with their relative difference.
2. Relative stability: R_f on 500 images × 10 deformations (8×8 digits upsampled to 28×28, ConvNet width
   32) against one training epoch of the same net (mini-batches of 100 over 1297 images, Adam).
Times are the minimum over repeats.
"""

from __future__ import annotations

import math
import time

import torch
from torch.nn import functional as F

from lightning_phase.data import PhaseDataModule
from lightning_phase.nets import MLP, ConvNet
from lightning_phase.observables.diffeo import relative_stability, temperature_for_displacement
from lightning_phase.observables.separation import class_covariances, log_separation, network_load_curve


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def load_curve_cost() -> None:
    dm = PhaseDataModule("digits", n_train=1400, n_test=397, labels="class")
    x, y = dm.x_train.float(), dm.y_train
    net = MLP(100, 8, input_dim=64, out_dim=10, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        net.train()
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()

    def measure():
        network_load_curve(net.eval(), x, y)

    step()
    t_step, t_load = best(step, 5), best(measure, 5)
    print(f"load curve (N=1400, 9 layers of p<=100) {t_load * 1e3:7.1f} ms | training step {t_step * 1e3:7.1f} ms"
          f" | ratio {t_load / t_step:.2f}")
    g = torch.Generator().manual_seed(0)
    for n, p in ((2560, 100), (2560, 2000)):
        labels = torch.arange(n) % 10
        h = torch.randn(n, p, generator=g, dtype=torch.float64) + torch.randn(10, p, generator=g,
                                                                                dtype=torch.float64)[labels]

        def direct(h=h, labels=labels):
            sw, sb = class_covariances(h, labels)
            return math.log(float(torch.trace(sw @ torch.linalg.pinv(sb, rtol=1e-10, hermitian=True))))

        fast_v, direct_v = log_separation(h, labels), direct()
        t_fast, t_direct = best(lambda h=h, labels=labels: log_separation(h, labels)), best(direct, 1)
        print(f"log D N={n} p={p:5d}: O(NpK) {t_fast * 1e3:8.1f} ms | direct pinv {t_direct * 1e3:8.1f} ms"
              f" | ×{t_direct / t_fast:.0f} | rel diff {abs(fast_v - direct_v) / abs(direct_v):.1e}")


def stability_cost() -> None:
    dm = PhaseDataModule("digits", n_train=1297, n_test=500, labels="class")

    def up(t):  # 8×8 → 28×28 images
        return F.interpolate(t.float().reshape(-1, 1, 8, 8), size=28, mode="bilinear", align_corners=False)

    x_train, y_train, x_test = up(dm.x_train), dm.y_train, up(dm.x_test)
    net = ConvNet(32, kernel_size=3, input_dim=784, out_dim=10, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def epoch():
        perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))
        for idx in perm.split(100):
            opt.zero_grad()
            F.cross_entropy(net(x_train[idx]), y_train[idx]).backward()
            opt.step()

    T = temperature_for_displacement(1.0, 28, 3)

    def stab():
        with torch.no_grad():
            return relative_stability(net, x_test, T, 3, n_samples=10)

    t_epoch, t_stab = best(epoch, 2), best(stab, 2)
    s = stab()
    print(f"R_f (500 images × 10 deformations, 28×28, ConvNet h=32) {t_stab:6.2f} s | one epoch (1297 images) "
          f"{t_epoch:6.2f} s | ratio {t_stab / t_epoch:.2f} | R_f = {s.R:.3f} ± {s.R_err:.3f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    load_curve_cost()
    stability_cost()
