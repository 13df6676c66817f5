"""Per-step and per-trial overhead at the quick start's size (digits, P = 500, FC h = 64, L = 2, SGD, float64).

Per step: the Trainer's training time (first to last step, from a callback) against a plain PyTorch loop doing
the same full-batch steps on the same data and initial weights, timed in the same process; the final
weights of the two agree to round-off (printed). Per trial: the time ``run.fit`` spends outside training
(parse, data, net, Trainer, summary, logs) after a warm-up call. Per sweep trial (``--sweep``): a small sweep
(the phase-diagram sweep's base and callbacks, 20 steps, widths 8/32 × α̃ 1/100/10⁴, one worker), timed by the
sweep's own ``timing:`` line; ``--against DIR`` first runs the same sweep with the package of another checkout
(e.g. ``git worktree add /tmp/old <commit>``), so before and after are measured in one run.

    OMP_NUM_THREADS=1 python benchmarks/overhead.py [--steps 400] [--repeats 3]
    OMP_NUM_THREADS=1 python benchmarks/overhead.py --sweep [--against /tmp/old] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import statistics
import subprocess
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


SWEEP = """base: {root}/configs/lazy_vs_feature.yaml
fixed:
  data.n_train: 200
  data.n_test: 500
  data.n_kernel: 50
  trainer.max_steps: 20
  trainer.callbacks:
    - class_path: lightning_phase.callbacks.NTKChange
      init_args: {{n_points: 50}}
    - class_path: lightning_phase.callbacks.WeightsChange
    - class_path: lightning_phase.callbacks.TimeScale
    - class_path: lightning_phase.callbacks.DynamicsLogger
grid:
  model.net.init_args.width: [8, 32]
  model.alpha_tilde: [1, 100, 10000]
objective: test_error
"""
TIMING = re.compile(r"train ([\d.]+) s \| trial process outside training ([\d.]+) s \| "
                    r"storage \(claim\+record\) ([\d.]+) s")


def sweep_timing(package_root: Path, study: str) -> tuple[str, tuple[float, float, float]]:
    """Run the small sweep with the package found at ``package_root``; (its timing line, (train, outside
    training, storage) medians per trial in seconds)."""
    spec = Path(f"{study}.yaml")
    spec.write_text(SWEEP.format(root=ROOT))
    env = {**os.environ, "PYTHONPATH": str(package_root), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "lightning_phase", "sweep", str(spec), "--workers", "1",
                          "--runs-dir", f"runs_{study}", "--storage", f"{study}.journal", "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=1800)
    line = next((ln for ln in out.stderr.splitlines() if ln.startswith("timing:")), "")
    m = TIMING.search(line)
    if out.returncode != 0 or m is None:
        raise SystemExit(f"sweep with {package_root} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return line, (float(m.group(1)), float(m.group(2)), float(m.group(3)))


def main_sweep(args: argparse.Namespace) -> None:
    roots = ([("before", Path(args.against))] if args.against else []) + [("this tree", ROOT)]
    medians: dict[str, list[float]] = {label: [] for label, _ in roots}
    for r in range(args.repeats):
        for label, root in roots:   # interleaved, so both see the same machine load
            line, (_, outside, _) = sweep_timing(root, f"s{r}_{len(medians[label])}_{label.split()[0]}")
            medians[label].append(outside)
            print(f"[{label}] {line}")
    for label, values in medians.items():
        print(f"per sweep trial outside training, {label}: median {statistics.median(values):.3f} s "
              f"over {len(values)} sweeps of 6 trials ({', '.join(f'{v:.3f}' for v in values)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep", action="store_true", help="per sweep trial, from the sweep's own timing line")
    ap.add_argument("--against", default=None, help="with --sweep: another checkout to time first (before)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.chdir(tempfile.mkdtemp())
    if args.sweep:
        main_sweep(args)
        return
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
