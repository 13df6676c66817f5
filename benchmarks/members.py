"""K seeds of a small FC net: ``model.members: K`` (one batched Trainer fit) against K sequential Trainer fits
and K plain PyTorch loops, timed in the same process (float64, CPU, one thread).

Random data (d = 10, P = 200, y = ±1), FC L = 2, ReLU, α̃ = 1, soft hinge, full-batch SGD lr 0.5, a fixed
number of steps (no stop rule), no logger. Prints seconds, the ratios and max |w_member − w_sequential|,
then for each h the smallest K > 1 from which members beat K plain loops (and K fits) at every larger K
tried, "never" if none.
``--accelerator gpu`` runs all three on the GPU (CUDA synchronised before each clock read).

    OMP_NUM_THREADS=1 python benchmarks/members.py [--ks 1 4 16 64] [--widths 16 64 256] [--steps 100]
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import pytorch_lightning as pl
import torch

from lightning_phase import PhaseModule
from lightning_phase.callbacks import StopRules
from lightning_phase.data import TensorLoader
from lightning_phase.nets import FullyConnected

D, P = 10, 200


class Data(pl.LightningDataModule):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x_train = torch.randn(P, D, generator=g, dtype=torch.float64)
        self.y_train = torch.where(torch.rand(P, generator=g) < 0.5, -1.0, 1.0).double()

    def train_dataloader(self):
        return TensorLoader(self.x_train, self.y_train)


def _sgd(params):
    return torch.optim.SGD(params, lr=0.5)


ACCELERATOR = "cpu"


def _sync() -> None:
    if ACCELERATOR == "gpu":
        torch.cuda.synchronize()


def _fit(net, members: int, steps: int, data: Data) -> tuple[float, PhaseModule]:
    module = PhaseModule(net, alpha_tilde=1.0, optimizer=_sgd, members=members).double()
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, precision="64-true",
                         num_sanity_val_steps=0, accelerator=ACCELERATOR, devices=1,
                         callbacks=[StopRules(when_fitted=False)])
    _sync()
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    _sync()
    return time.perf_counter() - t0, module.cpu()


def _plain(net, steps: int, data: Data) -> float:
    device = "cuda" if ACCELERATOR == "gpu" else "cpu"
    net = copy.deepcopy(net).double().to(device)
    net0 = copy.deepcopy(net)
    alpha = 1.0 / net.width**0.5
    x, y = data.x_train.to(device), data.y_train.to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    _sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        f0 = net0(x)
    for _ in range(steps):
        opt.zero_grad()
        F = alpha * (net(x) - f0)
        (torch.nn.functional.softplus(1 - y * F, beta=20).mean() / alpha**2).backward()
        opt.step()
    _sync()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    args = ap.parse_args()
    global ACCELERATOR
    ACCELERATOR = args.accelerator
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    data = Data()
    _fit(FullyConnected(8, 2, input_dim=D, seed=0), 1, 5, data)  # warm-up
    print(f"P = {P}, d = {D}, L = 2, {args.steps} full-batch SGD steps, float64, 1 thread, {ACCELERATOR}")
    print(f"{'h':>4} {'K':>3} | {'members':>8} | {'K fits':>8} | {'K plain':>8} | fits/members | "
          "plain/members | max|Δw|")
    pays: dict[int, tuple[int | None, int | None]] = {}
    for h in args.widths:
        first_plain = first_fits = None
        for k in args.ks:
            nets = [FullyConnected(h, 2, input_dim=D, seed=s) for s in range(k)]
            t_mem, many = _fit(nets[0], k, args.steps, data)
            t_seq, err = 0.0, 0.0
            for s, net in enumerate(nets):
                t, single = _fit(net, 1, args.steps, data)
                t_seq += t
                member = many.net.member(s) if k > 1 else many.net
                for a, b in zip(member.parameters(), single.net.parameters(), strict=True):
                    err = max(err, float((a - b).abs().max()))
            t_plain = sum(_plain(net, args.steps, data) for net in nets)
            print(f"{h:>4} {k:>3} | {t_mem:7.2f}s | {t_seq:7.2f}s | {t_plain:7.2f}s | ×{t_seq / t_mem:11.2f} | "
                  f"×{t_plain / t_mem:12.2f} | {err:.1e}", flush=True)
            if k > 1:  # K = 1 is the single-net path itself; "from K" = from there on at every K tried
                first_plain = (first_plain or k) if t_plain > t_mem else None
                first_fits = (first_fits or k) if t_seq > t_mem else None
        pays[h] = (first_plain, first_fits)
    for h, (first_plain, first_fits) in pays.items():
        print(f"h = {h:>4}: members beat K plain loops from K = {first_plain or 'never'}, "
              f"K Trainer fits from K = {first_fits or 'never'} (K tried: {args.ks})")


if __name__ == "__main__":
    main()
