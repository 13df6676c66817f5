"""RunSummary: writes summary.json at the end of fit (or of a crash) into the logger's run directory."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_phase.callbacks.schedule import full_set
from lightning_phase.contracts import (
    PhaseDataLike,
    PhaseModuleLike,
    data_record,
    phase_data,
    phase_module,
    trainer_callbacks,
    trainer_datamodule,
)
from lightning_phase.nets.members import Members
from lightning_phase.summary import (
    OUTPUTS_FILE,
    SCHEMA_VERSION,
    SUMMARY_FILE,
    config_hash,
    package_versions,
    write_json_atomic,
    write_npz_atomic,
)


@runtime_checkable
class SummaryFields(Protocol):
    """A callback whose ``summary()`` fields RunSummary merges into summary.json (each documented in
    docs/summary.md)."""

    def summary(self) -> dict[str, Any]: ...


@runtime_checkable
class MemberSummaryFields(Protocol):
    """A callback with per-member summary fields (``model.members`` K > 1): ``member_summaries()[k]`` goes
    into summary.json's ``members[k]`` (None: nothing to add)."""

    def member_summaries(self) -> list[dict[str, Any]] | None: ...


def run_dir(trainer: pl.Trainer) -> str | None:
    """The run's directory: the logger's own log_dir. Not ``trainer.log_dir``, which under DDP is a broadcast
    that every rank must join — and only rank 0 writes (or is still alive, after an exception)."""
    return getattr(trainer.logger, "log_dir", None) if trainer.logger is not None else None


class RunSummary(pl.Callback):
    """Collects the run's record and writes ``<log_dir>/summary.json`` once, atomically, on rank 0.

    Fields: schema_version, config (resolved) and config_hash, n_params, width, depth, alpha, alpha_tilde,
    seed, data_seed, n_train, train_loss (α²L), n_delta, train_error, test_loss, test_error (measured
    on the full sets at the end), steps, flow_time, stop_reason, status, wall_seconds, versions — plus
    ``cb.summary()`` of every other callback that defines it (measurement callbacks, stop rules).

    With K members (``model.members``): ``members`` lists, for each member k, ``member`` k, ``seed`` (its
    init seed), ``seed_source`` ("net.seed" or "seed_everything"), ``alpha`` and ``alpha_tilde`` (its own with
    a list of α̃) and the fields of its single run's summary (train_loss, n_delta, n_delta_over_p,
    train_error, test_loss, test_error, steps, flow_time, stop_reason, and the measurement callbacks'
    fields); the top-level fields of these names are member 0's, so a reader of single runs reads
    member 0 as the run with the configured seed. ``n_members`` = K.

    Beside it, unless the run crashed, ``outputs.npz`` (:func:`final_outputs`): the final outputs F on the
    train, test and (when it is not empty) kernel sets with their labels, float64.
    """

    def __init__(self, config: dict[str, Any] | None = None, seed: int | None = None):
        self.config, self.seed = config, seed
        self.path: Path | None = None
        self.record: dict[str, Any] | None = None
        self.write_error: str | None = None   # why summary.json could not be written (ENOSPC ...), if so
        self._t0 = time.monotonic()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.monotonic()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module, status="completed")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        extra = {"stop_reason": "INTERRUPTED" if interrupted else "CRASHED",
                 "error": f"{type(exception).__name__}: {exception}"}
        self._write(trainer, pl_module, status="crashed", extra=extra)

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, status: str,
               extra: dict[str, Any] | None = None) -> None:
        log_dir = run_dir(trainer)
        if not trainer.is_global_zero or log_dir is None:
            return
        module = phase_module(pl_module, "RunSummary")
        dm: PhaseDataLike | None = None if trainer_datamodule(trainer) is None else phase_data(trainer, "RunSummary")
        shape = module.shape
        rec: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "status": status,
            "config": self.config,
            "config_hash": config_hash(self.config),
            "n_params": module.n_params,
            "width": shape.width,
            "depth": shape.depth,
            "alpha": module.alpha,
            "alpha_tilde": module.alpha_tilde,
            "lazy_limit": module.lazy_limit,  # KernelFlow: α̃ = ∞
            "loss": module.loss_name,
            "seed": self.seed,
            **data_record(dm),  # data_seed, dataset, labels, n_train
            "out_dim": shape.out_dim,
            "run_dir": str(log_dir),
            "steps": trainer.global_step,
            "flow_time": module.flow_time,
            "precision": str(trainer.precision),
            "wall_seconds": time.monotonic() - self._t0,
            "versions": package_versions(),
        }
        evals: dict[str, dict[str, Any]] = {}
        if dm is not None:
            for split in ("train", "test"):
                x, y = full_set(trainer, pl_module, f"x_{split}"), full_set(trainer, pl_module, f"y_{split}")
                if len(y) == 0:
                    continue
                ev = module.evaluate(x, y)
                if isinstance(ev["loss"], list):  # members: one value per member
                    evals[split] = ev
                    continue
                rec[f"{split}_loss"], rec[f"{split}_error"] = ev["loss"], ev["error"]
                if split == "train":
                    rec["n_delta"] = ev["n_delta"]
                    rec["n_delta_over_p"] = None if ev["n_delta"] is None else ev["n_delta"] / max(len(y), 1)
        for cb in trainer_callbacks(trainer):
            if cb is not self and isinstance(cb, SummaryFields):
                rec.update(cb.summary())
        if module.members > 1:
            per_member = [cb.member_summaries() for cb in trainer_callbacks(trainer)
                          if cb is not self and isinstance(cb, MemberSummaryFields)]
            _member_records(rec, module, evals, 0 if dm is None else len(dm.y_train),
                            [m for m in per_member if m is not None])
        rec.update(extra or {})
        if rec.get("stop_reason") == "DIVERGED":
            rec["status"] = "diverged"
        self._log_hparams(trainer, rec)
        self.path = Path(log_dir) / SUMMARY_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if status != "crashed" and dm is not None:
            try:
                write_npz_atomic(self.path.with_name(OUTPUTS_FILE), final_outputs(trainer, pl_module))
            except Exception as exc:  # the summary must be written even if the outputs cannot be
                rec["outputs_error"] = f"{type(exc).__name__}: {exc}"
        self.record = rec
        try:
            write_json_atomic(self.path, rec)
        except OSError as exc:   # disk full, quota, read-only: the record must still reach the terminal
            import json
            import sys

            self.write_error = f"{type(exc).__name__}: {exc}"
            print(f"lightning-phase: summary.json could not be written ({self.write_error}); the record: "
                  f"{json.dumps(rec, default=str)}", file=sys.stderr)

    @staticmethod
    def _log_hparams(trainer: pl.Trainer, rec: dict[str, Any]) -> None:
        """TensorBoard's HPARAMS tab: the run's coordinates with its final metrics (``final/*``, written at the
        last step, so their curves are a point at the end of the run), logged once."""
        logger = trainer.logger
        if logger is None:
            return
        # The phase-diagram coordinates first (TensorBoard shows the first hparams ticked), then the rest.
        params = {k: rec[k] for k in ("width", "alpha_tilde", "n_train", "seed", "n_params", "depth", "alpha",
                                      "dataset", "loss", "data_seed") if rec.get(k) is not None}
        metrics = {f"final/{k}": float(rec[k]) for k in ("train_loss", "n_delta", "train_error", "test_error",
                                                          "test_loss", "flow_time", "steps")
                   if isinstance(rec.get(k), (int, float))}
        try:
            logger.log_hyperparams(params, metrics, step=trainer.global_step)  # final/* at the last step
            logger.save()
        except Exception as exc:  # a logger that cannot take hparams must not lose the summary
            rec["hparams_error"] = f"{type(exc).__name__}: {exc}"


def _member_records(rec: dict[str, Any], pl_module: PhaseModuleLike, evals: dict[str, dict[str, Any]],
                    n_train: int, callbacks: Sequence[list[dict[str, Any]]] = ()) -> None:
    """rec["members"]: one single-run record per member (with the measurement callbacks' per-member fields,
    ``callbacks[i][k]``); the top-level fields of those names = member 0's."""
    k_all = pl_module.members
    stops = rec.pop("member_stop", None) or [{"stop_reason": rec.get("stop_reason"), "steps": rec.get("steps")}] * k_all
    net = pl_module.net
    seeds = net.seeds if isinstance(net, Members) else None  # [(source, init seed)] per member
    members = []
    for k in range(k_all):
        m: dict[str, Any] = {"member": k, "seed": seeds[k][1] if seeds else None,
                             "seed_source": seeds[k][0] if seeds else None,
                             "alpha": pl_module.member_alpha[k], "alpha_tilde": pl_module.member_alpha_tilde[k],
                             "flow_time": pl_module.member_flow_time[k], **stops[k]}
        for split, ev in evals.items():
            m[f"{split}_loss"], m[f"{split}_error"] = ev["loss"][k], ev["error"][k]
            if split == "train":
                m["n_delta"] = ev["n_delta"][k]
                nd = ev["n_delta"][k]
                m["n_delta_over_p"] = None if nd is None else nd / max(n_train, 1)
        for fields in callbacks:
            m.update(fields[k])
        members.append(m)
    rec["members"], rec["n_members"] = members, k_all
    rec.update({key: v for key, v in members[0].items() if key not in ("member", "seed", "seed_source")})


@torch.no_grad()
def final_outputs(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, np.ndarray]:
    """The module's outputs F = α(f(w, x) − f(w₀, x)) on the data module's full sets, as float64 numpy:
    ``train_F``, ``train_y``, ``test_F``, ``test_y`` and, when the kernel set is not empty, ``kernel_F``,
    ``kernel_y``. F has the module's output shape: (P,) for one net, a leading members axis (M, P) where
    the module trains several; y is (P,). Rank 0 only (called from RunSummary)."""
    out: dict[str, np.ndarray] = {}
    dm = phase_data(trainer, "final_outputs")
    for split in ("train", "test", "kernel"):
        if getattr(dm, f"x_{split}", None) is None:  # the kernel split is optional
            continue
        x, y = full_set(trainer, pl_module, f"x_{split}"), full_set(trainer, pl_module, f"y_{split}")
        if len(y) == 0 and split == "kernel":
            continue
        out[f"{split}_F"] = pl_module(x).detach().to("cpu", torch.float64).numpy()
        out[f"{split}_y"] = y.detach().to("cpu", torch.float64).numpy()
    return out
