"""Speed of GradientFlow inside the Lightning trainer, as ratios against plain PyTorch timed in this run.

    OMP_NUM_THREADS=1 python benchmarks/gradient_flow.py [--width 128] [--steps 100] [--repeats 5]

1. GradientFlow (SCIENCE.md §3) in ``Trainer.fit``, and alone with a plain closure, vs a plain loop that
   implements the same accept/reject rule on flat vectors, same net and data (P = 1000, d = 50,
   h = --width, L = 2, float64, soft hinge, α̃ = 1): time per accepted step, and the parameter difference
   between the two trajectories (same rule ⇒ same dt sequence ⇒ agreement to rounding).
2. The trainer's own cost per step for a tiny full-batch model (P = 1000, d = 50, h = 100, L = 3, SGD):
   Lightning vs a plain loop.
Both are shown for PhaseModule as it is (train/* logged only on the steps the logger writes, every
``log_every_n_steps``) and with ``self.log_dict`` on every evaluation (``LogEveryStep``, as the first
PhaseModule did) to show what that costs. Trainer: no checkpointing, no progress bar, no model summary,
no sanity validation, CSV logger writing every 100 steps. Runs are interleaved; each line gives the median and the
minimum over repeats (the minimum is the least disturbed by other processes on a shared machine) and
the ratio of each to the plain loop's.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.nn.utils import parameters_to_vector, vector_to_parameters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_phase import PhaseModule  # noqa: E402
from lightning_phase.data import TensorLoader  # noqa: E402
from lightning_phase.losses import soft_hinge  # noqa: E402
from lightning_phase.nets import FullyConnected  # noqa: E402
from lightning_phase.optim import GradientFlow  # noqa: E402

warnings.filterwarnings("ignore")
P, D, WARMUP = 1000, 50, 10


class LogEveryStep(PhaseModule):
    """PhaseModule calling self.log_dict(train/*) on every evaluation of training_step (for comparison)."""

    def _logs_this_step(self) -> bool:
        return True


class Data(pl.LightningDataModule):
    def __init__(self, x, y):
        super().__init__()
        self.x_train, self.y_train = x, y

    def train_dataloader(self):
        return TensorLoader(self.x_train, self.y_train)


class Clock(pl.Callback):
    """Wall time from the end of step WARMUP to the end of the last step."""

    def on_train_batch_end(self, trainer, *_):
        if trainer.global_step == WARMUP:
            self.t0 = time.perf_counter()
        self.t1 = time.perf_counter()


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(P, D, generator=g, dtype=torch.float64)
    return x, torch.sign(x[:, 0] + 0.3 * x[:, 1] ** 2)


def lightning_time(module_cls, net, x, y, steps, **module_kw) -> tuple[float, PhaseModule]:
    clock, tmp = Clock(), tempfile.mkdtemp()
    trainer = pl.Trainer(max_steps=steps, precision="64-true", accelerator="cpu", devices=1,
                         callbacks=[clock], logger=CSVLogger(tmp), log_every_n_steps=100,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    model = module_cls(net, **module_kw)
    trainer.fit(model, Data(x, y))
    return (clock.t1 - clock.t0) / (steps - WARMUP), model


def plain_gradient_flow(net, x, y, alpha, steps, max_dgrad=1e-4, max_dout=0.1) -> tuple[float, torch.Tensor]:
    """The same rule written directly: flat parameter vector, one forward/backward per trial step."""
    params = list(net.parameters())
    with torch.no_grad():
        f0 = net(x)

    def evaluate():
        for p in params:
            p.grad = None
        F = alpha * (net(x) - f0)
        (soft_hinge(y * F).mean() / alpha**2).backward()
        return torch.cat([p.grad.reshape(-1) for p in params]), F.detach()

    g, F = evaluate()
    dt, t0 = 1.0, None
    for step in range(steps):
        if step == WARMUP:
            t0 = time.perf_counter()
        w = parameters_to_vector(params).detach()
        while True:
            with torch.no_grad():
                vector_to_parameters(w - dt * g, params)
            g2, F2 = evaluate()
            d_grad = float((g2 - g).norm() ** 2 / (g.norm() * g2.norm()))
            d_out = float((F2 - F).abs().max())
            if d_grad < max_dgrad and d_out < max_dout:
                break
            dt /= 10
        g, F = g2, F2
        if d_grad < max_dgrad / 2 and d_out < max_dout / 2:
            dt *= 1.1
    return (time.perf_counter() - t0) / (steps - WARMUP), parameters_to_vector(params).detach()


def optimiser_alone(net, x, y, alpha, steps) -> float:
    """GradientFlow.step with a plain closure, no trainer: the optimiser's own cost vs the hand loop."""
    with torch.no_grad():
        f0 = net(x)
    opt, last = GradientFlow(net.parameters()), {}
    opt.watch_outputs(lambda: last["F"])

    def closure():
        opt.zero_grad()
        F = alpha * (net(x) - f0)
        last["F"] = F.detach()
        loss = soft_hinge(y * F).mean() / alpha**2
        loss.backward()
        return loss

    for step in range(steps):
        if step == WARMUP:
            t0 = time.perf_counter()
        opt.step(closure)
    return (time.perf_counter() - t0) / (steps - WARMUP)


def plain_sgd(net, x, y, steps, lr=0.1) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    with torch.no_grad():
        f0 = net(x)
    for step in range(steps):
        if step == WARMUP:
            t0 = time.perf_counter()
        opt.zero_grad()
        soft_hinge(y * (net(x) - f0)).mean().backward()
        opt.step()
    return (time.perf_counter() - t0) / (steps - WARMUP)


def report(timings: dict[str, list[float]]) -> None:
    """One line per variant: median and min ms/step, and both as ratios to the plain loop."""
    med0, min0 = statistics.median(timings["plain"]), min(timings["plain"])
    labels = {"plain": "plain loop              ", "optimiser": "GradientFlow, no trainer",
              "lightning": "Lightning (PhaseModule) ", "log_every_step": "Lightning, log each eval"}
    for key, label in labels.items():
        if key not in timings:
            continue
        med, mn = statistics.median(timings[key]), min(timings[key])
        print(f"  {label}  median {med * 1e3:6.2f} ms (×{med / med0:.2f})"
              f"   min {mn * 1e3:6.2f} ms (×{mn / min0:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    x, y = data()
    h, n = args.width, args.steps

    def fc(width, depth):
        return FullyConnected(width, depth, "softplus", 5.0, input_dim=D, seed=1).double()

    alpha = 1.0 / math.sqrt(h)  # α̃ = 1
    timings = {"plain": [], "optimiser": [], "lightning": [], "log_every_step": []}
    for _ in range(args.repeats):
        t, w_plain = plain_gradient_flow(fc(h, 2), x, y, alpha, n)
        timings["plain"].append(t)
        timings["optimiser"].append(optimiser_alone(fc(h, 2), x, y, alpha, n))
        for key, cls in (("log_every_step", LogEveryStep), ("lightning", PhaseModule)):
            t, model = lightning_time(cls, fc(h, 2), x, y, n, alpha=alpha, optimizer=GradientFlow)
            timings[key].append(t)
    err = float((parameters_to_vector(model.net.parameters()).detach() - w_plain).abs().max())
    print(f"GradientFlow, P={P} d={D} h={h} L=2 float64, {n} accepted steps, {args.repeats} repeats:")
    report(timings)
    print(f"  max|w_lightning − w_plain| after {n} steps: {err:.1e}")

    sgd = {"plain": [], "lightning": [], "log_every_step": []}
    for _ in range(args.repeats):
        sgd["plain"].append(plain_sgd(fc(100, 3), x, y, n))
        for key, cls in (("lightning", PhaseModule), ("log_every_step", LogEveryStep)):
            sgd[key].append(lightning_time(cls, fc(100, 3), x, y, n, alpha=1.0,
                                           optimizer=partial(torch.optim.SGD, lr=0.1))[0])
    print(f"Trainer cost per step, SGD, P={P} d={D} h=100 L=3 float64, {n} steps, {args.repeats} repeats:")
    report(sgd)


if __name__ == "__main__":
    main()
