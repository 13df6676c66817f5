"""Per-step and per-trial overhead at the quick start's size (digits, P = 500, FC h = 64, L = 2, SGD, float64).

Per step: the Trainer's training time (first to last step, from a callback) against a plain PyTorch loop doing
the same full-batch steps on the same data and initial weights, timed in the same process; the final
weights of the two agree to round-off (printed). Per trial: the time ``run.fit`` spends outside training
(parse, data, net, Trainer, summary, logs) after a warm-up call.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py [--steps 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lightning_phase.run import build, fit  # noqa: E402

QUICK = ROOT / "configs" / "quickstart.yaml"


class TrainClock(pl.Callback):
    """Wall time between the start and the end of the training loop."""

    def on_train_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.t0


def plain_loop(module, x, y, steps: int, lr: float) -> tuple[float, list[torch.Tensor]]:
    """The same full-batch GD on F = α(f − f₀), L = mean ℓ(yF)/α², in plain PyTorch."""
    net, net0 = copy.deepcopy(module.net), module.net0
    with torch.no_grad():
        f0 = net0(x)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    alpha, loss_fn = module.alpha, module.loss_fn
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        F = alpha * (net(x) - f0)
        loss = loss_fn(y * F).mean() / alpha**2
        loss.backward()
        opt.step()
    return time.perf_counter() - t0, [p.detach() for p in net.parameters()]


def step_ratio(steps: int, extra: list[str]) -> tuple[float, float, float]:
    """(trainer seconds, plain seconds, max |w_trainer − w_plain|) for ``steps`` steps."""
    overrides = [f"--trainer.max_steps={steps}", "--stop.when_fitted=false", "--trainer.enable_progress_bar=false",
                 *extra]
    run = build(QUICK, overrides)
    clock = TrainClock()
    run.trainer.callbacks.append(clock)
    module = run.module
    run.datamodule.setup("fit")
    x, y = run.datamodule.x_train.double(), run.datamodule.y_train.double()
    start = copy.deepcopy(module).double()
    run.trainer.fit(module, datamodule=run.datamodule)
    t_plain, w_plain = plain_loop(start, x, y, steps, lr=0.5)
    err = max(float((a - b).abs().max()) for a, b in zip(module.net.parameters(), w_plain, strict=True))
    return clock.seconds, t_plain, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.chdir(tempfile.mkdtemp())
    print(f"per step, quick start size, {args.steps} steps (best of {args.repeats}):")
    for label, extra in (("no logger", ["--trainer.logger=false"]), ("TensorBoard logger", []),
                         ("steps_per_call=10, logger", ["--model.steps_per_call=10"])):
        best = min((step_ratio(args.steps, extra) for _ in range(args.repeats)), key=lambda r: r[0] / r[1])
        t, t_ref, err = best
        print(f"  {label:28s} trainer {t:.3f}s | plain loop {t_ref:.3f}s | ×{t / t_ref:.2f} | max|Δw| {err:.1e}")
    fit(QUICK, ["--trainer.max_steps=5", "--trainer.enable_progress_bar=false"])  # warm-up
    outside = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        rec = fit(QUICK, ["--trainer.max_steps=20", "--trainer.enable_progress_bar=false", "--stop.when_fitted=false"])
        total = time.perf_counter() - t0
        outside.append(total - rec["train_seconds"] if "train_seconds" in rec else total)
    print(f"per trial outside training (run.fit after warm-up, best of {args.repeats}): {min(outside):.3f}s "
          f"(median {sorted(outside)[len(outside) // 2]:.3f}s)")


if __name__ == "__main__":
    main()
