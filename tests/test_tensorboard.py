"""TensorBoard: flow-time tags hold t, final/* sit at the last step, coordinates come first in HPARAMS."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from lightning_phase.losses import get_loss
from lightning_phase.run import fit

QUICK = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")


def test_flow_time_tags_hold_t_and_final_metrics_sit_at_the_last_step():
    rec = fit(QUICK, ["--data.n_train=100", "--data.n_test=100", "--model.net.init_args.width=16",
                      "--trainer.max_steps=300", "--trainer.enable_progress_bar=false",
                      "--trainer.log_every_n_steps=5"])
    (run,) = Path("runs/quickstart").iterdir()
    ev = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    loss = ev.Scalars("flow_time/train/loss")
    assert loss[0].step == 0 and loss[0].wall_time == 0.0
    assert loss[0].value == pytest.approx(float(get_loss("soft_hinge")(torch.zeros(1))), rel=1e-6)  # ℓ(0) at t=0
    for e in loss[1:-1]:  # SGD lr 0.5: the outputs of step s are evaluated at t = 0.5·s
        assert e.wall_time == pytest.approx(0.5 * e.step, rel=1e-12) and e.step % 5 == 4
    assert loss[-1].step == rec["steps"] and loss[-1].wall_time == pytest.approx(rec["flow_time"], rel=1e-12)
    assert loss[-1].value == pytest.approx(rec["train_loss"], rel=1e-6)
    assert ev.Scalars("flow_time/train/n_delta")[-1].value == rec["n_delta"]
    final = ev.Scalars("final/train_loss")
    assert [e.step for e in final] == [rec["steps"]] and final[0].value == pytest.approx(rec["train_loss"], rel=1e-6)
    content = ev.PluginTagToContent("hparams")["_hparams_/experiment"]
    names = [h.name for h in HParamsPluginData.FromString(content).experiment.hparam_infos]
    assert names[:4] == ["width", "alpha_tilde", "n_train", "seed"]
