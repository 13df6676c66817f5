"""The whole-batch loader: a few tensors handed out as one batch, or as index mini-batches.

No ``torch.utils.data``, no per-sample Python work. Full batch: every epoch yields the very same tensor
objects (the module may cache f(w₀, x) by tensor identity). Under DDP, rank r of W takes indices r::W.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from lightning_phase.data.sources import generator


def shard_indices(n: int, rank: int = 0, world: int = 1) -> Tensor:
    """Indices r, r+W, r+2W, … < n of rank r among W; (⌈(n−r)/W⌉,) int64."""
    return torch.arange(rank, n, world)


class TensorLoader:
    """Iterate (x, y) batches over x (P, ...), y (P,).

    ``batch_size=None``: one batch per epoch, ``(x, y)`` themselves (or this rank's shard x[r::W],
    built once), the same objects every epoch. ``batch_size=B``: each epoch draws a permutation of the
    P samples from a generator seeded by (``seed``, epoch), cuts it into ⌈P/B⌉ consecutive batches of
    B (the last may be smaller; B is the global batch over all ranks) and yields this rank's part
    b[r::W] of each, as fresh tensors (x[idx], y[idx]). Every rank sees the same number of batches; a
    last batch with fewer than W samples, which would leave a rank empty, is dropped.
    The epoch is read from ``epoch_fn`` when given (the trainer's current epoch, so a resumed run
    draws the same batches), else counted by this loader.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        epoch_fn: Callable[[], int] | None = None,
    ):
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.rank, self.world, self.epoch_fn, self._epoch = rank, world, epoch_fn, 0
        if world > 1:
            idx = shard_indices(len(x), rank, world)
            self.full = (x[idx], y[idx])
        else:
            self.full = (x, y)

    def __len__(self) -> int:
        if self.batch_size is None:
            return 1
        n, last = math.ceil(len(self.x) / self.batch_size), len(self.x) % self.batch_size
        return n - 1 if 0 < last < self.world else n  # see __iter__: a last batch too small to shard is dropped

    def permutation(self, epoch: int) -> Tensor:
        """The permutation of the P samples used in epoch ``epoch``; (P,) int64, same on every rank."""
        return torch.randperm(len(self.x), generator=generator(self.seed, epoch))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.batch_size is None:
            yield self.full
            return
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._epoch
        self._epoch = epoch + 1
        perm = self.permutation(epoch)
        for batch in perm.split(self.batch_size):
            if len(batch) < self.world:  # some rank would get no sample (a NaN mean): drop that last batch
                continue
            idx = batch[self.rank :: self.world]
            yield self.x[idx], self.y[idx]

    def tensors(self) -> tuple[Tensor, ...]:
        """The tensors this loader hands out unchanged (safe to cache on a device by identity)."""
        return self.full if self.batch_size is None else ()


class NoisyLoader:
    """[SB] data noise, redrawn at every step: each batch of ``loader`` becomes (x + q_x·s·ξ, ỹ), ξ ~ N(0, I),
    s = ``x_std`` (the standard deviation of the training inputs over all entries), and ỹ = y except for a
    random fraction q_y of the samples whose label is replaced by a uniform draw (a class index 0…K−1 for
    integer labels, ±1 otherwise; it may hit the true label). q_x = ``input_noise``, q_y = ``label_noise``.
    Batch b of epoch e draws from a generator seeded by (seed, e, b, rank): a resumed run sees the same noise.
    With ``model.steps_per_call`` n > 1 the n steps of one call share one noisy batch.
    """

    def __init__(self, loader: TensorLoader, input_noise: float, label_noise: float, x_std: float,
                 n_classes: int, seed: int, rank: int = 0, epoch_fn: Callable[[], int] | None = None):
        self.loader, self.input_noise, self.label_noise = loader, input_noise, label_noise
        self.x_std, self.n_classes, self.seed, self.rank = x_std, n_classes, seed, rank
        self.epoch_fn, self._epoch = epoch_fn, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._epoch
        self._epoch = epoch + 1
        for b, (x, y) in enumerate(self.loader):
            g = generator(self.seed, 7, epoch, b, self.rank)
            if self.input_noise:
                x = x + (self.input_noise * self.x_std) * torch.randn(x.shape, generator=g, dtype=x.dtype)
            if self.label_noise:
                hit = torch.rand(y.shape, generator=g) < self.label_noise
                if y.is_floating_point():
                    new = (2 * torch.randint(0, 2, y.shape, generator=g) - 1).to(y.dtype)
                else:
                    new = torch.randint(0, self.n_classes, y.shape, generator=g, dtype=y.dtype)
                y = torch.where(hit, new, y)
            yield x, y

    def tensors(self) -> tuple[Tensor, ...]:
        return ()  # fresh tensors every step: nothing to cache by identity
