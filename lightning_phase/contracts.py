"""The typed contracts between the module, the callbacks and the run summary (DESIGN.md: "Contracts between
module, callbacks and summary are typed").

- :class:`StepOutput`: what ``PhaseModule.training_step`` returns and what the stop rules (and any callback
  reading ``outputs`` in ``on_train_batch_end``) read. :func:`step_output` checks a step output against it and
  raises :class:`~lightning_phase.errors.ContractError` naming the keys that are there when one is missing.
- :class:`PhaseModuleLike`: the attributes and methods of a module that the callbacks and the summary read
  (``PhaseModule`` and ``KernelFlow`` satisfy it); :func:`phase_module` checks a module against it.
- :class:`PhaseDataLike`: the data module's full sets and record fields (``PhaseDataModule`` satisfies it);
  :func:`phase_data` checks a data module against it.
- :class:`NetShape` / :func:`net_shape`: width h, depth L and output dimension of a net. A net is any
  ``nn.Module`` (a user's own too), so these attributes are optional; this is the one place they are looked up.

Shapes: one net gives () scalars and (P,) or (P, C) outputs; K members (``model.members``) add a leading
axis: (K,) and (K, P) or (K, P, C).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, Protocol, TypedDict, cast, runtime_checkable

import pytorch_lightning as pl
from torch import Tensor, nn

from lightning_phase.errors import ContractError


class StepOutput(TypedDict):
    """One training step's output (``PhaseModule.step_outputs``); tensors are () for one net, (K,) for K
    members (``outputs``: (P,), (P, C), (K, P) or (K, P, C))."""

    loss: Tensor  # L = α²L / α² to differentiate (members: Σ_k L_k over the active members)
    loss_value: Tensor  # α²L = mean_μ ℓ(z_μ), detached
    n_delta: Tensor  # N_Δ = #{μ : Δ_μ > 0}, Δ = 1 − z (integer count)
    delta_max: Tensor  # max_μ Δ_μ, detached
    outputs: Tensor  # F on the batch, detached
    stop_checked: NotRequired[bool]  # steps_per_call > 1: the stop rules already checked this step


# The required keys (spelled out: with postponed annotations Python 3.11 counts NotRequired keys as required).
STEP_OUTPUT_KEYS: tuple[str, ...] = ("delta_max", "loss", "loss_value", "n_delta", "outputs")


def step_output(outputs: object, reader: str) -> StepOutput:
    """``outputs`` as a :class:`StepOutput`; ContractError naming the reader, the missing keys and the keys
    that are there (a module whose ``training_step`` does not return PhaseModule's step output)."""
    if not isinstance(outputs, Mapping):
        raise ContractError(f"{reader}: the training step returned {type(outputs).__name__}; expected a dict "
                            f"with the keys {', '.join(STEP_OUTPUT_KEYS)} (lightning_phase.contracts.StepOutput)")
    missing = [k for k in STEP_OUTPUT_KEYS if k not in outputs]
    if missing:
        raise ContractError(f"{reader}: the training step's output has no {', '.join(missing)}; it has "
                            f"{', '.join(sorted(map(str, outputs))) or 'no keys'} "
                            "(lightning_phase.contracts.StepOutput)")
    return cast(StepOutput, outputs)


@dataclass(frozen=True)
class NetShape:
    """h = ``width``, L = ``depth`` (hidden layers), C = ``out_dim`` (1: one output per sample); None where the
    net does not define it (a user's own nn.Module)."""

    width: int | None
    depth: int | None
    out_dim: int


def net_shape(net: nn.Module) -> NetShape:
    """The net's optional ``width``, ``depth`` and ``out_dim`` attributes (integers, else None / 1)."""
    def integer(name: str) -> int | None:
        value = getattr(net, name, None)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return NetShape(integer("width"), integer("depth"), integer("out_dim") or 1)


class PhaseModuleLike(Protocol):
    """What callbacks and the run summary read from the LightningModule (``PhaseModule``, ``KernelFlow``)."""

    net: nn.Module
    shape: NetShape  # of one member's net
    members: int  # K
    steps_per_call: int
    alpha: float  # α
    alpha_tilde: float | None  # α̃ = √h·α; None without an integer width, or in the lazy limit
    lazy_limit: bool  # KernelFlow: α̃ = ∞
    loss_name: str
    flow_time: float  # t = Σ dt (members: max_k t_k)
    member_flow_time: list[float]  # t_k
    member_active: list[bool]  # False once member k stopped
    member_alpha: list[float]  # α_k (all α unless model.alpha/alpha_tilde is a list)
    member_alpha_tilde: list[float | None]  # α̃_k

    @property
    def n_params(self) -> int: ...  # N of one member

    def __call__(self, x: Tensor) -> Tensor: ...

    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, Any]: ...

    def margin_and_loss(self, F_out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]: ...

    def freeze_member(self, k: int) -> None: ...


class PhaseDataLike(Protocol):
    """What callbacks and the run summary need from the data module (``PhaseDataModule``): the full sets
    x (P, ...) and y (P,) of the train and test splits. The kernel split (``x_kernel``, ``y_kernel``) is
    checked by the callbacks that use it (NTKChange.check_data); the descriptive fields of summary.json
    come from :func:`data_record`."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


DATA_RECORD_FIELDS = ("data_seed", "dataset", "labels", "n_train")


def data_record(datamodule: object) -> dict[str, Any]:
    """summary.json's data fields ``data_seed``, ``dataset``, ``labels``, ``n_train`` (PhaseDataModule's
    ``data.*`` values); None for a field a data module (a test stand-in) does not define."""
    return {name: getattr(datamodule, name, None) for name in DATA_RECORD_FIELDS}


def protocol_names(protocol: type) -> tuple[str, ...]:
    """The public attributes and methods a protocol declares (the checks below use ``hasattr``, not
    ``runtime_checkable``: from Python 3.12 that looks attributes up statically and misses an nn.Module's
    submodules, such as ``net``)."""
    names = set(protocol.__dict__.get("__annotations__", {}))
    names |= {n for n, v in protocol.__dict__.items()
              if (callable(v) or isinstance(v, property)) and not n.startswith("_")}
    return tuple(sorted(names))


def _missing(obj: object, protocol: type) -> list[str]:
    return [n for n in protocol_names(protocol) if not hasattr(obj, n)]


def phase_module(pl_module: object, reader: str) -> PhaseModuleLike:
    """``pl_module`` as a :class:`PhaseModuleLike`; ContractError naming what it lacks."""
    if not _missing(pl_module, PhaseModuleLike):
        return cast(PhaseModuleLike, pl_module)
    raise ContractError(f"{reader}: the module {type(pl_module).__name__} lacks "
                        f"{', '.join(_missing(pl_module, PhaseModuleLike))} "
                        "(lightning_phase.contracts.PhaseModuleLike; use lightning_phase.PhaseModule)")


def phase_data(trainer: pl.Trainer, reader: str) -> PhaseDataLike:
    """``trainer.datamodule`` as a :class:`PhaseDataLike`; ContractError naming what it lacks."""
    datamodule = trainer_datamodule(trainer)
    if datamodule is not None and not _missing(datamodule, PhaseDataLike):
        return cast(PhaseDataLike, datamodule)
    what = "no data module" if datamodule is None else \
        f"the data module {type(datamodule).__name__} lacks {', '.join(_missing(datamodule, PhaseDataLike))}"
    raise ContractError(f"{reader}: {what} (lightning_phase.contracts.PhaseDataLike; use "
                        "lightning_phase.data.PhaseDataModule)")


@runtime_checkable
class ChecksData(Protocol):
    """A callback that checks the data module before a run dir exists (``run.build``): ConfigError naming the
    ``data.*`` key when it cannot use the data (NTKChange: data.n_kernel too small, ...)."""

    def check_data(self, datamodule: Any) -> None: ...


# Lightning sets ``Trainer.callbacks`` and ``Trainer.datamodule`` from its connectors (CallbackConnector,
# DataConnector) without declaring them on the class, so a type checker does not see them: read them here.
def trainer_callbacks(trainer: pl.Trainer) -> list[pl.Callback]:
    """``trainer.callbacks`` (every callback, ours and Lightning's)."""
    return trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning's CallbackConnector


def trainer_datamodule(trainer: pl.Trainer) -> pl.LightningDataModule | None:
    """``trainer.datamodule`` (None when fit was given loaders, not a data module)."""
    return trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's DataConnector
