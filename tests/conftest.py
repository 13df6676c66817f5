"""Shared test setup: one thread per process (2-core CI), runs written under each test's tmp_path."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own folder, so relative `runs/` paths never collide or litter the repo."""
    monkeypatch.chdir(tmp_path)
    yield
