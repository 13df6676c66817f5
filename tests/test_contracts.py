"""The typed contracts between module, callbacks and summary (lightning_phase.contracts): a missing key or
attribute is an error that names what is there, never a silent skip."""

from __future__ import annotations

import typing

import pytest
import pytorch_lightning as pl
import torch

from lightning_phase import PhaseModule
from lightning_phase.callbacks import StopRules
from lightning_phase.contracts import (
    STEP_OUTPUT_KEYS,
    PhaseDataLike,
    PhaseModuleLike,
    StepOutput,
    phase_module,
    protocol_names,
    step_output,
)
from lightning_phase.data import PhaseDataModule
from lightning_phase.errors import ContractError
from lightning_phase.nets import FullyConnected


def _module() -> PhaseModule:
    return PhaseModule(FullyConnected(width=4, depth=1, input_dim=3), alpha_tilde=1.0)


def test_step_output_keys_are_the_typed_dict_keys_less_the_optional_one():
    assert set(STEP_OUTPUT_KEYS) == set(typing.get_type_hints(StepOutput)) - {"stop_checked"}


def test_training_step_returns_every_step_output_key():
    m = _module()
    out = m.step_outputs((torch.randn(5, 3), torch.tensor([1.0, -1, 1, -1, 1])), log=False)
    assert step_output(out, "test") is out and set(out) == set(STEP_OUTPUT_KEYS)


def test_stop_rules_name_the_keys_there_when_n_delta_is_missing():
    rules = StopRules()
    with pytest.raises(ContractError, match=r"StopRules: the training step's output has no n_delta; it has "
                                            r"delta_max, loss, loss_value, outputs"):
        rules.on_train_batch_end(None, _module(), {"loss": 1, "loss_value": 1, "delta_max": 0, "outputs": 0},
                                 None, 0)
    with pytest.raises(ContractError, match="returned Tensor; expected a dict with the keys delta_max, loss"):
        rules.on_train_batch_end(None, _module(), torch.tensor(1.0), None, 0)


def test_phase_module_and_data_module_satisfy_their_protocols():
    m = _module()
    assert phase_module(m, "test") is m
    dm = PhaseDataModule(dataset="random", n_train=8, n_test=4, dim=3)
    assert all(hasattr(dm, n) for n in protocol_names(PhaseDataLike))
    names = set(protocol_names(PhaseModuleLike))
    assert {"net", "flow_time", "member_active", "n_params", "evaluate", "shape"} <= names


def test_a_foreign_module_is_refused_naming_what_it_lacks():
    class Plain(pl.LightningModule):
        flow_time = 0.0

    with pytest.raises(ContractError, match=r"StopRules: the module Plain lacks alpha, alpha_tilde, evaluate, "
                                            r"freeze_member, lazy_limit"):
        phase_module(Plain(), "StopRules")
