"""NTK speed: ``observables.ntk`` against the per-sample autograd loop, measured in the same process.

Run:  OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ntk.py [--quick]

Reports, per case: time of each method (min of 3 for ``ntk``), their ratio, max |Θ − Θ_loop| / max |Θ_loop|,
peak memory above the baseline, and for the layer-wise path the ratio of its time to that of the GEMMs of
its formula (A_ℓA_ℓᵀ and B_ℓB_ℓᵀ of every layer, full P×P, timed alone on the same shapes; the symmetric
case computes only the upper block triangle, so the ratio can fall below 1).
Memory: Linux VmHWM after ``malloc_trim(0)`` (free heap pages back to the OS, so reuse of memory freed by
earlier cases is counted) and resetting VmHWM through /proc/self/clear_refs: resident memory, so torch's
allocations are seen, unlike tracemalloc.
When the loop's P×N Jacobian would not fit (``loop_rows``), the loop is timed on that many rows and
extrapolated: gradients linearly in P, the J·Jᵀ product quadratically (it is P²N flops); max |Δ| is then
measured on those rows only. Last table: one NTK on the kernel set in units of one full-batch training step.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import os
import time

import torch

from lightning_phase.losses import get_loss
from lightning_phase.nets import ConvNet, FullyConnected
from lightning_phase.observables import ntk, ntk_loop

f64 = torch.float64


_LIBC = ctypes.CDLL("libc.so.6") if os.path.exists("/proc/self/status") else None


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def measure(fn):
    """(result, seconds, peak MB above the resident baseline). glibc's free heap pages are first returned
    to the OS (malloc_trim), so memory freed by earlier cases cannot hide this call's peak."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    base = _rss_kb("VmRSS")
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    return out, dt, max(_rss_kb("VmHWM") - base, 0) / 1024


def per_sample_grads(net, x):
    """(P, N) Jacobian, one backward per sample: the loop's first half."""
    params = list(net.parameters())
    rows = []
    for xi in x:
        g = torch.autograd.grad(net(xi.unsqueeze(0)).sum(), params)
        rows.append(torch.cat([gi.reshape(-1) for gi in g]))
    return torch.stack(rows)


def gemm_floor(net, P):
    """Time of the GEMMs the layer-wise formula cannot avoid: per layer A Aᵀ (P×n_in) and B Bᵀ (P×n_out)."""
    mats = [torch.randn(P, n, dtype=f64) for layer in net.layers for n in (layer.n_in, layer.n_out)]
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for m in mats:
            m @ m.T
        best = min(best, time.perf_counter() - t)
    return best


def best_of(fn, n=3):
    """Minimum wall time over n calls (the machine is shared: the minimum is the least disturbed)."""
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def fc_case(P, d, h, L, loop_rows=None):
    net = FullyConnected(h, L, "relu", input_dim=d, seed=0).to(f64)
    x = torch.randn(P, d, dtype=f64, generator=torch.Generator().manual_seed(1))
    N = net.n_params
    theta, t_new, mem_new = measure(lambda: ntk(net, x))
    t_new = min(t_new, best_of(lambda: ntk(net, x), 2))
    t_floor = gemm_floor(net, P)
    if loop_rows is None:
        ref, t_loop, mem_loop = measure(lambda: ntk_loop(net, x))
        err = float((theta - ref).abs().max() / ref.abs().max())
        note = ""
    else:
        m = loop_rows
        J, t_grad, mem_grad = measure(lambda: per_sample_grads(net, x[:m]))
        ref, t_prod, _ = measure(lambda: J @ J.T)
        t_loop = t_grad * P / m + t_prod * (P / m) ** 2
        mem_loop = mem_grad * P / m  # the P×N Jacobian dominates
        err = float((theta[:m, :m] - ref).abs().max() / ref.abs().max())
        note = f"  (loop: {m} rows timed, extrapolated; J alone = {P * N * 8 / 2**30:.1f} GiB)"
    print(f"| FC P={P} d={d} h={h} L={L} N={N} | {t_new:.3f} | {t_loop:.1f} | ×{t_loop / t_new:.0f} | "
          f"{mem_new:.0f} / {mem_loop:.0f} | {err:.1e} | {t_new / t_floor:.2f} |{note}")


def generic_case(name, net, x):
    """Both generic paths (``method="modules"`` and ``"jacobian"``) against the loop on the same net."""
    net = net.to(x.dtype)
    ref, t_loop, mem_loop = measure(lambda: ntk_loop(net, x))
    n = sum(p.numel() for p in net.parameters())
    for method in ("modules", "jacobian"):
        theta, t_new, mem_new = measure(lambda: ntk(net, x, method=method))  # noqa: B023
        err = float((theta - ref).abs().max() / ref.abs().max())
        print(f"| {name} P={len(x)} N={n} | {method} | {t_new:.3f} | {t_loop:.2f} | ×{t_loop / t_new:.1f} | "
              f"{mem_new:.0f} / {mem_loop:.0f} | {err:.1e} |")


def step_cost(P, d, h, L, P_k, n_steps=20):
    """One NTK on P_k kernel points in units of one full-batch GD step (forward, backward, SGD), P points."""
    net = FullyConnected(h, L, "relu", input_dim=d, seed=0).to(f64)
    net0 = copy.deepcopy(net).requires_grad_(False)
    g = torch.Generator().manual_seed(2)
    x, xk = torch.randn(P, d, dtype=f64, generator=g), torch.randn(P_k, d, dtype=f64, generator=g)
    y = torch.sign(torch.randn(P, dtype=f64, generator=g))
    loss_fn, alpha = get_loss("soft_hinge"), 1.0
    with torch.no_grad():
        f0 = net0(x)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def train():
        for _ in range(n_steps):
            opt.zero_grad()
            (loss_fn(y * alpha * (net(x) - f0)).mean() / alpha**2).backward()
            opt.step()

    train()  # warm-up
    t = time.perf_counter()
    train()
    t_step = (time.perf_counter() - t) / n_steps
    ntk(net, xk)
    t = time.perf_counter()
    ntk(net, xk)
    t_ntk = time.perf_counter() - t
    print(f"| P={P} d={d} h={h} L={L}, P_k={P_k} | {1e3 * t_step:.2f} ms | {1e3 * t_ntk:.2f} ms | "
          f"{t_ntk / t_step:.1f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float64\n")
    print("| FC net | ntk layer-wise (s) | per-sample loop (s) | speed-up | peak MB new / loop | max rel |Δ| "
          "| time / GEMM floor |")
    print("|---|---|---|---|---|---|---|")
    if args.quick:
        fc_case(200, 32, 64, 2)
    else:
        fc_case(1000, 64, 256, 2)
        fc_case(2000, 784, 500, 2, loop_rows=200)
    print("\n| generic net | method | ntk (s) | per-sample loop (s) | speed-up | peak MB new / loop "
          "| max rel |Δ| |")
    print("|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(3)
    P = 100 if args.quick else 500
    generic_case("FC d=64 h=256 L=2", FullyConnected(256, 2, "relu", input_dim=64, seed=0),
                 torch.randn(P, 64, dtype=f64, generator=g))
    generic_case("ConvNet 8×8 h=16 k=3", ConvNet(16, 1, 3, "relu", input_dim=64, seed=0),
                 torch.randn(P, 64, dtype=f64, generator=g))
    x_img = torch.randn(P // 2, 784, dtype=f64, generator=g)
    generic_case("ConvNet 28×28 h=8 k=5", ConvNet(8, 1, 5, "relu", input_dim=784, seed=0), x_img)
    generic_case("ConvNet 28×28 h=8 k=5, float32", ConvNet(8, 1, 5, "relu", input_dim=784, seed=0),
                 x_img.float())
    print("\n| CPU experiment (SCIENCE/DESIGN sizes) | GD step | NTK on kernel set | NTK / step |")
    print("|---|---|---|---|")
    step_cost(1000, 50, 100, 3, 100)
    step_cost(1000, 50, 100, 3, 500)
    if not args.quick:
        step_cost(5000, 10, 500, 2, 500)


if __name__ == "__main__":
    main()
