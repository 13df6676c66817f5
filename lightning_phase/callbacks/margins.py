"""Margins: N_Δ, the Δ distribution and its exponents θ, γ near jamming ([JAM])."""

from __future__ import annotations

from typing import Any

import torch

from lightning_phase.callbacks.schedule import (
    LogSpacedSchedule,
    ScheduledCallback,
    full_set,
    log_metrics,
    member_metrics,
    n_members,
    tensorboard,
)
from lightning_phase.errors import check_bool, check_choice, check_positive_int
from lightning_phase.observables import margins, n_delta, tail_exponents
from lightning_phase.observables.members import delta_stats


class Margins(ScheduledCallback):
    """On the whole training set (``trainer.datamodule.x_train, y_train``), Δ = 1 − yF at the scheduled steps
    and at the end: ``margins/n_delta`` (N_Δ = #{Δ > 0}), ``margins/n_delta_over_p``, ``margins/min``,
    ``margins/median``, and with a TensorBoardLogger a histogram ``margins/delta``. At the end: θ, γ with
    bootstrap errors (``observables.tail_exponents``; ``k_min``, ``n_boot``, ``seed`` passed on) as
    ``margins/theta``, ``margins/theta_err``, ``margins/gamma``, ``margins/gamma_err`` and the figure
    ``margins/tails`` (log–log tails with fitted lines). Rank 0 only, on the full set, so N_Δ is global.

    Summary: margins_n_delta, margins_n_delta_over_p (final, full training set), theta, theta_err, gamma,
    gamma_err, k_pos, k_neg (the values the tail fits used), and the fit's flags tail_floor_pos,
    tail_floor_neg (cutoff at its floor k_min), tail_pos_below_tol (θ fitted on Δ ≤ 1e-3: SAT leftovers, not a
    jamming tail), tail_cutoff. ``cutoff``: "ks_pass" (widest KS-passing range) or "csn" (KS-minimising).

    Members (``model.members`` K): Δ (K, P) from one batched forward; ``margins/*`` are the member means,
    ``member_<k>/margins/*`` each member's (K ≤ 16), the histogram pools the members' Δ. At the end the
    tail fit runs once per member (a loop over K: an end-of-run observable), the figure shows member 0's;
    summary.json's ``members[k]`` has member k's fields, the top level member 0's.
    """

    def __init__(self, schedule: LogSpacedSchedule | None = None, histogram: bool = True, tails: bool = True,
                 k_min: int = 50, n_boot: int = 200, seed: int = 0, cutoff: str = "ks_pass"):
        super().__init__(schedule)
        check_bool("Margins.histogram", histogram)
        check_bool("Margins.tails", tails)
        check_positive_int("Margins.k_min", k_min, minimum=2)
        check_positive_int("Margins.n_boot", n_boot, minimum=0)
        check_positive_int("Margins.seed", seed, minimum=0)
        check_choice("Margins.cutoff", cutoff, ("ks_pass", "csn"))
        self.cutoff = cutoff
        self.histogram, self.tails = histogram, tails
        self.k_min, self.n_boot, self.seed = k_min, n_boot, seed
        self.fit: dict[str, Any] = {}
        self.member_fits: list[dict[str, Any]] = []
        self._xy: tuple[torch.Tensor, torch.Tensor] | None = None  # (x, y) training set, from on_train_start

    @property
    def state_key(self) -> str:
        return self._generate_state_key(points_per_decade=self.schedule.points_per_decade)

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._xy = (full_set(trainer, pl_module, "x_train"), full_set(trainer, pl_module, "y_train"))
        super().on_train_start(trainer, pl_module)

    def _delta(self, pl_module) -> torch.Tensor:
        assert self._xy is not None  # set by on_train_start, before any measure
        x, y = self._xy
        with torch.no_grad():
            return margins(pl_module(x), y)  # (P,), or (K, P) with members

    def measure_members(self, trainer, pl_module, step: int) -> dict[str, torch.Tensor]:
        delta = self._delta(pl_module)  # (K, P)
        writer = tensorboard(trainer)
        if self.histogram and writer is not None and bool(torch.isfinite(delta).all()):
            writer.add_histogram("margins/delta", delta.detach().cpu(), global_step=step)  # pooled
        return {f"margins/{k}": v for k, v in delta_stats(delta).items()}

    def measure(self, trainer, pl_module, step: int) -> dict[str, float]:
        delta = self._delta(pl_module)
        writer = tensorboard(trainer)
        if self.histogram and writer is not None:
            writer.add_histogram("margins/delta", delta.detach().cpu(), global_step=step)
        if not bool(torch.isfinite(delta).all()):   # NaN margins would count as met: no count at all
            nan = float("nan")
            return {"margins/n_delta": nan, "margins/n_delta_over_p": nan, "margins/min": nan, "margins/median": nan}
        n = int(n_delta(delta))
        return {"margins/n_delta": n, "margins/n_delta_over_p": n / len(delta),
                "margins/min": float(delta.min()), "margins/median": float(delta.median())}

    def on_fit_end_measure(self, trainer, pl_module, step: int) -> None:
        if not self.tails:
            return
        if n_members(pl_module) > 1:
            self._member_tails(trainer, pl_module, step)
            return
        delta = self._delta(pl_module).cpu().double().numpy()
        fit = tail_exponents(delta, k_min=self.k_min, n_boot=self.n_boot, seed=self.seed, cutoff=self.cutoff)
        self.fit = fit.as_dict()
        keys = ("theta", "theta_err", "gamma", "gamma_err")
        log_metrics(trainer, {f"margins/{k}": getattr(fit, k) for k in keys}, step)
        writer = tensorboard(trainer)
        if writer is not None:
            from lightning_phase.callbacks._figures import tails_figure  # matplotlib only when drawing

            writer.add_figure("margins/tails", tails_figure(delta, fit), global_step=step)

    def _member_tails(self, trainer, pl_module, step: int) -> None:
        """θ, γ of every member (one ``tail_exponents`` per member, same k_min, n_boot, seed)."""
        deltas = self._delta(pl_module).cpu().double().numpy()  # (K, P)
        fits = [tail_exponents(d, k_min=self.k_min, n_boot=self.n_boot, seed=self.seed, cutoff=self.cutoff)
                for d in deltas]
        self.member_fits = [f.as_dict() for f in fits]
        self.fit = self.member_fits[0]
        keys = ("theta", "theta_err", "gamma", "gamma_err")
        nan = float("nan")
        values = {f"margins/{k}": torch.tensor([nan if getattr(f, k) is None else getattr(f, k) for f in fits],
                                               dtype=torch.float64) for k in keys}
        log_metrics(trainer, member_metrics(values)[0], step)
        writer = tensorboard(trainer)
        if writer is not None:
            from lightning_phase.callbacks._figures import tails_figure  # matplotlib only when drawing

            writer.add_figure("margins/tails", tails_figure(deltas[0], fits[0]), global_step=step)  # member 0

    def summary_of(self, last: dict[str, float], k: int | None = None) -> dict[str, float | int | None]:
        fit = self.fit if k is None else (self.member_fits[k] if self.member_fits else {})
        out = {f"margins_{key}": last.get(f"margins/{key}") for key in ("n_delta", "n_delta_over_p")}
        for key in ("theta", "theta_err", "gamma", "gamma_err", "k_pos", "k_neg"):
            out[key] = fit.get(key)
        for key in ("floor_pos", "floor_neg", "pos_below_tol", "cutoff"):
            out[f"tail_{key}"] = fit.get(key)
        if out["margins_n_delta"] is not None and out["margins_n_delta"] == out["margins_n_delta"]:
            out["margins_n_delta"] = int(out["margins_n_delta"])
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fit": dict(self.fit), "member_fits": [dict(f) for f in self.member_fits]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.fit = dict(state_dict.get("fit", {}))
        self.member_fits = [dict(f) for f in state_dict.get("member_fits", [])]
