"""Invariants of the data sets (SCIENCE.md §5), the loaders and the torchvision on-disk formats."""

from __future__ import annotations

import math
import os
import pickle
import random
import struct
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lightning_phase.data import DATASETS, PhaseDataModule, TensorLoader
from lightning_phase.data.preprocess import interleave_classes, normalise_rows, pca_basis, pool_mean
from lightning_phase.data.sources import make_teacher
from lightning_phase.errors import ConfigError

SMALL = dict(n_train=60, n_test=40, n_kernel=20)


def all_parts(dm):
    return [(dm.x_test, dm.y_test), (dm.x_kernel, dm.y_kernel), (dm.x_train, dm.y_train)]


def fake_trainer(precision="64-true", rank=0, world=1, epoch=0):
    return SimpleNamespace(precision=precision, global_rank=rank, world_size=world, current_epoch=epoch)


# ------------------------------------------------------------------------------------ preprocessing
@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
@pytest.mark.parametrize("pca_dim", [None, 7])
def test_every_sample_has_norm_sqrt_D(dataset, pca_dim):
    dm = PhaseDataModule(dataset, pca_dim=pca_dim, **SMALL)
    D = pca_dim or {"digits": 64, "mnist1d": 40}[dataset]
    assert dm.input_dim == D and dm.x_train.shape == (60, D)
    for x, _ in all_parts(dm):
        assert x.dtype == torch.float64
        torch.testing.assert_close(x.norm(dim=1), torch.full((len(x),), math.sqrt(D), dtype=torch.float64))


def test_input_shape_is_image_shape_without_pca_and_flat_with_it():
    assert PhaseDataModule("digits", **SMALL).input_shape == (1, 8, 8)
    assert PhaseDataModule("digits", pca_dim=5, **SMALL).input_shape == (5,)
    assert PhaseDataModule("stripe", dim=6, **SMALL).input_shape == (6,)


@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
def test_labels_are_pm1_and_every_window_balanced(dataset):
    dm = PhaseDataModule(dataset, n_train=300, n_test=100, n_kernel=50)
    for _, y in all_parts(dm):
        assert set(y.tolist()) <= {-1.0, 1.0}
        assert y.cumsum(0).abs().max() <= 1  # classes alternate in parity along the interleaved order
    assert dm.y_test.sum() == 0 and dm.y_train.sum() == 0


def test_interleaved_prefixes_hold_every_class_equally():
    classes = np.repeat(np.arange(10), [30, 31, 32, 33, 34, 35, 36, 37, 38, 39])
    order = interleave_classes(classes, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(len(classes)))  # a permutation of the pool
    for n in range(10, 301, 10):  # up to 10 · smallest class
        assert np.bincount(classes[order[:n]], minlength=10).tolist() == [n // 10] * 10


def test_train_test_kernel_share_no_sample():
    everything = PhaseDataModule("digits", n_train=1000, n_test=500, n_kernel=297)  # the whole pool
    for dm in (everything, PhaseDataModule("random", **SMALL)):
        rows = [set(map(tuple, x.tolist())) for x, _ in all_parts(dm)]
        assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
        assert sum(map(len, rows)) == dm.n_total  # nor duplicates inside a set


@pytest.mark.parametrize("dataset", ["digits", "mnist1d", "random", "teacher", "stripe"])
def test_same_seed_same_split_other_seed_other_split(dataset):
    a, b = (PhaseDataModule(dataset, data_seed=0, **SMALL) for _ in range(2))
    c = PhaseDataModule(dataset, data_seed=1, **SMALL)
    for (xa, ya), (xb, yb), (xc, _) in zip(all_parts(a), all_parts(b), all_parts(c), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not torch.equal(xa, xc)


@pytest.mark.parametrize("dataset", ["digits", "mnist1d", "random", "teacher", "stripe"])
def test_changing_n_train_leaves_test_set_unchanged(dataset):
    a = PhaseDataModule(dataset, n_train=50, n_test=40, n_kernel=10)
    b = PhaseDataModule(dataset, n_train=1500, n_test=40, n_kernel=10)  # > 1 block of synthetic data
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
    assert torch.equal(a.x_kernel, b.x_kernel)
    assert torch.equal(a.x_train, b.x_train[:50])  # a larger train set extends the smaller one


def test_pca_gives_pca_dim_components_and_whitening_equalises_their_variance():
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data)
    mean = pool_mean(x)
    basis, std = pca_basis(x, mean, 10)
    z = (x - mean) @ basis  # (N, 10)
    torch.testing.assert_close(z.var(0, correction=0), std**2)
    assert std[0] > 2 * std[-1]  # without whitening the variances differ
    white = z / std
    torch.testing.assert_close(white.T @ white / len(x), torch.eye(10, dtype=torch.float64))
    raw = PhaseDataModule("digits", n_train=1000, n_test=500, pca_dim=10).x_train.var(0)
    dm = PhaseDataModule("digits", n_train=1000, n_test=500, pca_dim=10, whiten=True)
    assert dm.x_train.shape == (1000, 10) and dm.input_dim == 10
    var = dm.x_train.var(0)  # after the per-sample rescaling to √D only approximately equal
    assert var.max() / var.min() < 1.6 < raw.max() / raw.min()


# ------------------------------------------------------------------------------------ synthetic sets
def test_stripe_labels_follow_the_rule():
    dm = PhaseDataModule("stripe", dim=5, n_train=2000, n_test=100)
    x1 = dm.x_train[:, 0]
    expected = torch.where((x1 > -0.3) & (x1 < 1.18549), -1.0, 1.0).double()
    assert torch.equal(dm.y_train, expected)
    assert abs(dm.y_train.mean()) < 0.1  # P(−0.3 < x₁ < 1.18549) ≈ 1/2


def test_random_labels_are_balanced_and_independent_of_x():
    dm = PhaseDataModule("random", dim=8, n_train=4000, n_test=100)
    y, x = dm.y_train, dm.x_train
    assert set(y.tolist()) == {-1.0, 1.0}
    assert abs(y.mean()) < 4 / math.sqrt(4000)
    corr = (x * y[:, None]).mean(0)  # E[x_i y] = 0 for labels independent of x
    assert corr.abs().max() < 4 / math.sqrt(4000)
    torch.testing.assert_close(x.var(0), torch.ones(8, dtype=torch.float64), atol=0.1, rtol=0)


def test_teacher_labels_are_the_sign_of_the_teacher():
    dm = PhaseDataModule("teacher", dim=6, teacher_width=16, teacher_depth=2, data_seed=5, **SMALL)
    teacher = make_teacher(6, 16, 2, 5)
    for x, y in all_parts(dm):
        assert torch.equal(y, torch.where(teacher(x) >= 0, 1.0, -1.0).double())
    assert len(set(dm.y_train.tolist())) == 2


@pytest.mark.parametrize("dataset", ["digits", "mnist1d", "random", "teacher", "stripe"])
def test_construction_leaves_global_rngs_untouched(dataset):
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    PhaseDataModule(dataset, **SMALL)
    assert torch.equal(torch.get_rng_state(), states[0])
    after = np.random.get_state()
    assert after[0] == states[1][0] and np.array_equal(after[1], states[1][1]) and after[2:] == states[1][2:]
    assert random.getstate() == states[2]


# --------------------------------------------------------------------------- torchvision on-disk formats
def write_idx(path, array: np.ndarray):
    """IDX file as published: big-endian magic 0x0000 08 nd (08 = uint8), the sizes, then the bytes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def fake_pool(n, shape, classes, rng):
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = (np.arange(n) % len(classes)) + classes[0]
    return images, labels.astype(np.uint8)


def check_pool(dm, raw: np.ndarray, labels: np.ndarray):
    """Every sample is one raw row, centred by the pool mean, at norm √D, with the parity label."""
    raw = torch.tensor(raw.reshape(len(raw), -1), dtype=torch.float64)
    expected = normalise_rows(raw - raw.mean(0))
    for x, y in all_parts(dm):
        match = torch.cdist(x, expected).argmin(1)
        torch.testing.assert_close(x, expected[match])
        assert torch.equal(y, torch.where(torch.tensor(labels[match.numpy()]) % 2 == 0, 1.0, -1.0).double())


@pytest.mark.parametrize(
    "dataset,folder,prefixes,classes",
    [
        ("mnist", "MNIST", ("train", "t10k"), range(10)),
        ("fashion", "FashionMNIST", ("train", "t10k"), range(10)),
        ("kmnist", "KMNIST", ("train", "t10k"), range(10)),
        ("emnist_letters", "EMNIST", ("emnist-letters-train", "emnist-letters-test"), range(1, 27)),
    ],
)
def test_idx_files_load_as_merged_parity_labelled_pool(tmp_path, dataset, folder, prefixes, classes):
    rng = np.random.default_rng(0)
    parts = [fake_pool(n, (28, 28), list(classes), rng) for n in (52, 26)]
    for prefix, (images, labels) in zip(prefixes, parts, strict=True):
        write_idx(tmp_path / folder / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(tmp_path / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
    dm = PhaseDataModule(dataset, root=str(tmp_path), n_train=30, n_test=26, n_kernel=0)
    assert dm.pool_size == 78 and dm.input_shape == (1, 28, 28) and dm.in_channels == 1
    images = np.concatenate([p[0] for p in parts])
    if dataset == "emnist_letters":  # stored transposed on disk; we turn them upright
        images = images.transpose(0, 2, 1)
    check_pool(dm, images, np.concatenate([p[1] for p in parts]))
    dmc = PhaseDataModule(dataset, root=str(tmp_path), n_train=30, n_test=26, labels="class")  # same samples
    assert dmc.out_dim == dmc.n_classes == len(classes) and dmc.y_train.dtype == torch.int64
    assert torch.equal(dm.y_train, torch.where((dmc.y_train + classes[0]) % 2 == 0, 1.0, -1.0).double())


def test_cifar10_pickles_load_as_merged_parity_labelled_pool(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    # torchvision checks the md5 sums of the published files; ours are tiny stand-ins in the same format
    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    rng, folder = np.random.default_rng(1), tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rows, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data, lab = fake_pool(10, (3 * 32 * 32,), list(range(10)), rng)  # rows in C, H, W order
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": lab.tolist()}, f)
        rows.append(data)
        labels.append(lab)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                     "horse", "ship", "truck"]}, f)  # fmt: skip
    dm = PhaseDataModule("cifar10", root=str(tmp_path), n_train=30, n_test=20, n_kernel=10)
    assert dm.pool_size == 60 and dm.input_shape == (3, 32, 32) and dm.in_channels == 3
    check_pool(dm, np.concatenate(rows), np.concatenate(labels))
    assert (dm.y_train < 0).sum() == 15  # car, cat, dog, horse, truck (odd indices) → −1, balanced


# --------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(dataset="imagenet"), "data.dataset"),
        (dict(dataset="mnist"), "data.root"),
        (dict(dataset="mnist", root="/nonexistent/folder"), "data.root"),
        (dict(n_train=1500, n_test=500), "data.n_train"),
        (dict(n_test=-1), "data.n_test"),
        (dict(n_kernel=-2), "data.n_kernel"),
        (dict(pca_dim=65), "data.pca_dim"),
        (dict(pca_dim=0), "data.pca_dim"),
        (dict(dataset="random", pca_dim=3), "data.pca_dim"),
        (dict(whiten=True), "data.whiten"),
        (dict(batch_size=0), "data.batch_size"),
        (dict(n_train="abc"), "data.n_train"),
        (dict(n_train=1.5), "data.n_train"),
        (dict(data_seed=-1), "data.data_seed"),
        (dict(dataset="random", dim=0), "data.dim"),
        (dict(download="yes"), "data.download"),
    ],
)
def test_bad_value_raises_config_error_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        PhaseDataModule(**{"n_train": 50, "n_test": 50, **kwargs})
    assert str(err.value).startswith(field + ":") and "\n" not in str(err.value)


def test_too_large_request_names_the_pool_size():
    with pytest.raises(ConfigError, match="1797"):
        PhaseDataModule("digits", n_train=1500, n_test=300)


def test_missing_mnist_files_are_named_and_download_suggested(tmp_path):
    with pytest.raises(ConfigError, match=r"train-images-idx3-ubyte.*download: true"):
        PhaseDataModule("mnist", root=str(tmp_path))


def test_every_dataset_name_is_accepted():
    assert set(DATASETS) == {"digits", "mnist1d", "random", "teacher", "stripe", "mnist", "fashion",
                             "kmnist", "emnist_letters", "cifar10"}  # fmt: skip


# ------------------------------------------------------------------------------------------------ loaders
def test_full_batch_yields_the_same_tensors_every_epoch():
    dm = PhaseDataModule("random", **SMALL)
    loader = dm.train_dataloader()
    batches = [b for _ in range(3) for b in loader]
    assert len(loader) == 1 and len(batches) == 3
    assert all(x is dm.x_train and y is dm.y_train for x, y in batches)
    [(x, y)], [(x2, _)] = list(dm.val_dataloader()), list(dm.test_dataloader())
    assert x is dm.x_test and x2 is dm.x_test and y is dm.y_test


def test_mini_batches_cover_the_train_set_once_per_epoch_in_new_orders():
    x = torch.arange(23, dtype=torch.float64)[:, None]
    loader = TensorLoader(x, x[:, 0], batch_size=5, seed=1)
    epochs = [[b[0][:, 0] for b in loader] for _ in range(2)]
    assert len(loader) == 5 and [len(b) for b in epochs[0]] == [5, 5, 5, 5, 3]
    orders = [torch.cat(e) for e in epochs]
    assert all(sorted(o.tolist()) == list(range(23)) for o in orders)
    assert not torch.equal(orders[0], orders[1])
    again = torch.cat([b[0][:, 0] for b in TensorLoader(x, x[:, 0], batch_size=5, seed=1)])
    assert torch.equal(again, orders[0])  # same batch seed → same batches


@pytest.mark.parametrize("batch_size", [None, 4, 7])
def test_ddp_shards_are_disjoint_and_cover_everything(batch_size):
    dm = PhaseDataModule("random", dim=1, n_train=32, n_test=11, batch_size=batch_size)  # 32 = 4·8 = 4·7 + 4
    seen, n_batches = [], set()
    for rank in range(3):
        dm.trainer = fake_trainer(rank=rank, world=3, epoch=2)
        batches = list(dm.train_dataloader())
        n_batches.add(len(batches))
        seen += [v for b in batches for v in b[0][:, 0].tolist()]
    assert len(n_batches) == 1  # every rank steps the same number of times
    assert sorted(seen) == sorted(dm.x_train[:, 0].tolist())


def test_ddp_never_hands_a_rank_an_empty_mini_batch():
    dm = PhaseDataModule("random", dim=1, n_train=30, n_test=11, batch_size=4)  # last batch: 2 < 3 ranks
    sizes = []
    for rank in range(3):
        dm.trainer = fake_trainer(rank=rank, world=3, epoch=0)
        loader = dm.train_dataloader()
        batches = list(loader)
        assert len(batches) == len(loader) == 7  # the 8th, 2-sample batch is dropped on every rank
        sizes += [len(b[1]) for b in batches]
    assert min(sizes) >= 1 and sum(sizes) == 28


def test_setup_casts_to_the_trainer_precision():
    dm = PhaseDataModule("random", **SMALL)
    dm.trainer = fake_trainer("64-true")
    dm.setup("fit")
    assert dm.x_train.dtype == torch.float64
    dm.trainer = fake_trainer("32-true")
    dm.setup("fit")
    assert all(t.dtype == torch.float32 for part in all_parts(dm) for t in part)
    assert next(iter(dm.train_dataloader()))[0] is dm.x_train


def test_device_copy_of_the_full_batch_is_made_once():
    dm = PhaseDataModule("random", **SMALL)
    batch = next(iter(dm.train_dataloader()))
    first = dm.transfer_batch_to_device(batch, torch.device("meta"), 0)
    second = dm.transfer_batch_to_device(next(iter(dm.train_dataloader())), torch.device("meta"), 0)
    assert first[0].device.type == "meta" and first[0] is second[0] and first[1] is second[1]
    fresh = (dm.x_train[:5], dm.y_train[:5])  # a mini-batch: moved, never cached
    moved = dm.transfer_batch_to_device(fresh, torch.device("meta"), 0)
    assert moved[0].shape == (5, dm.input_dim) and len(dm._device_cache) == 2


def test_real_trainer_gets_the_cached_full_batch_in_float64():
    import pytorch_lightning as pl

    class Probe(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w, self.seen = torch.nn.Parameter(torch.zeros(5)), []

        def training_step(self, batch, batch_idx):
            self.seen.append(batch[0])
            return (batch[0] @ self.w - batch[1]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm, probe = PhaseDataModule("random", dim=5, **SMALL), Probe()
    trainer = pl.Trainer(precision="64-true", accelerator="cpu", devices=1, max_epochs=3, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0)  # fmt: skip
    trainer.fit(probe, datamodule=dm)
    assert len(probe.seen) == 3 and all(x is dm.x_train for x in probe.seen)
    assert dm.x_train.dtype == torch.float64
