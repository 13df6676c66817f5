"""The front door: `lightning-phase fit` from YAML, summary.json, bad input → one line, exit 2, no run dir."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _runs import run_dir_in
from torch import nn

from lightning_phase.cli import main
from lightning_phase.summary import SCHEMA_VERSION

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUICK = str(CONFIGS / "quickstart.yaml")


class TinyNet(nn.Module):
    """A net defined only in this test file: plugs in through `--model.net.class_path`."""

    def __init__(self, hidden: int = 8, input_dim: int | None = None):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(input_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.body(x.flatten(1))


class TwoOutputs(TinyNet):
    def forward(self, x):
        return torch.cat([super().forward(x)] * 2, dim=1)


def _fit(*args) -> dict:
    assert main(["fit", "--config", QUICK, "--trainer.enable_progress_bar=false", *args]) == 0
    runs = sorted(Path("runs").glob("*/*/summary.json"))
    assert len(runs) == 1
    return json.loads(runs[0].read_text())


def test_quickstart_learns_digits_parity():
    s = _fit()
    assert s["schema_version"] == SCHEMA_VERSION and s["status"] == "completed"
    assert s["test_error"] < 0.2  # chance is 0.5
    assert s["n_params"] == 64 * 64 + 64 * 64 + 64
    assert s["alpha_tilde"] == pytest.approx(8 * s["alpha"])
    assert s["stop_reason"] in ("ALL_MARGINS_MET", "STEP_BUDGET")
    for key in ("config_hash", "train_loss", "n_delta", "train_error", "steps", "wall_seconds", "versions",
                "seed", "data_seed", "width", "depth"):
        assert key in s
    assert s["config"]["model"]["init_args"]["alpha_tilde"] == 1.0
    assert Path(s["config"]["trainer"]["logger"]["init_args"]["save_dir"]) == Path("runs")
    assert list(Path(s["run_dir"]).glob("events.out.tfevents.*"))
    assert Path(s["run_dir"]) == Path("runs/quickstart/a~1_h64_L2_P500_s0")  # named by its coordinates


def test_large_alpha_fits_every_margin_in_float64():
    s = _fit("--model.alpha_tilde=1000", "--trainer.max_steps=3000")
    assert s["fit_state"] == "SAT" and s["stop_reason"] == "ALL_MARGINS_MET"
    assert s["n_delta_tol"] == 0 and s["delta_max"] <= s["delta_tol"] == 1e-3  # strict n_delta may be > 0
    assert s["precision"] == "64-true"
    assert s["test_error"] < 0.2


def test_plugged_in_external_net_trains():
    s = _fit("--model.net=test_cli.TinyNet", "--model.net.hidden=16", "--model.alpha=1.0", "--model.alpha_tilde=null",
             "--trainer.max_steps=300")
    assert s["width"] is None and s["n_params"] == 64 * 16 + 16 + 16 + 1
    assert s["train_loss"] < 0.5 * 1.0  # α²L fell well below ℓ(0) ≈ 1


def test_same_seed_same_result_bit_for_bit():
    a = _fit("--trainer.max_steps=50", "--stop.when_fitted=false")
    for p in Path("runs").iterdir():
        import shutil
        shutil.rmtree(p)
    b = _fit("--trainer.max_steps=50", "--stop.when_fitted=false")
    assert a["train_loss"] == b["train_loss"] and a["test_error"] == b["test_error"]
    assert a["config_hash"] == b["config_hash"]


@pytest.mark.parametrize("args,needle", [
    (["--data.dataset=imagenet"], "data.dataset"),
    (["--data.dataset=mnist"], "data.root"),
    (["--data.dataset=mnist", "--data.root=/nonexistent"], "data.root"),
    (["--model.alpha_tilde=-1"], "model.alpha_tilde"),
    (["--model.alpha=1.0"], "alpha"),  # both alpha and alpha_tilde
    (["--model.alpha_tilde=null"], "alpha"),  # neither
    (["--model.net.width=0"], "model.net.init_args.width"),
    (["--model.net.width=abc"], "width"),
    (["--data.n_train=5000"], "data.n_train"),
    (["--data.pca_dim=100"], "data.pca_dim"),
    (["--model.loss=mse"], "model.loss"),
    (["--model.net.activation=gelu"], "model.net.init_args.activation"),
    (["--model.net=test_cli.TwoOutputs", "--model.alpha=1", "--model.alpha_tilde=null"], "model.net"),
    (["--model.net.widht=3"], "widht"),
    (["--stop.max_time=-3"], "stop.max_time"),
])
def test_bad_input_one_line_exit_2_nothing_written(args, needle, capsys):
    code = main(["fit", "--config", QUICK, *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and needle in err, err
    assert not Path("runs").exists() or not any(Path("runs").rglob("*"))


def test_console_script_prints_where_the_results_are(tmp_path):
    exe = Path(sys.executable).with_name("lightning-phase")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lightning_phase"]
    out = subprocess.run([*cmd, "fit", "--config", QUICK, "--trainer.max_steps=20", "--stop.when_fitted=false"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "summary:" in out.stdout and "tensorboard --logdir" in out.stdout
    where = next(line.split()[-1] for line in out.stdout.splitlines() if line.startswith("summary:"))
    assert Path(where).exists() and Path(where).parent == run_dir_in("runs/quickstart")
    bad = subprocess.run([*cmd, "fit", "--config", QUICK, "--data.dataset=nope"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_print_config_round_trips(capsys):
    assert main(["fit", "--config", QUICK, "--print_config"]) == 0
    out = capsys.readouterr().out
    Path("resolved.yaml").write_text(out)
    assert "alpha_tilde: 1.0" in out and "stop:" in out
    assert main(["fit", "--config", "resolved.yaml", "--trainer.max_steps=5",
                 "--trainer.enable_progress_bar=false"]) == 0


def test_validate_and_test_subcommands_run():
    assert main(["validate", "--config", QUICK, "--trainer.enable_progress_bar=false"]) == 0
    assert main(["test", "--config", QUICK, "--trainer.enable_progress_bar=false"]) == 0


def test_kernel_set_too_small_for_ntk_change_is_refused_before_the_run(capsys):
    config = str(CONFIGS / "observables.yaml")
    assert main(["fit", "--config", config, "--data.n_kernel=10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data.n_kernel" in err, err
    assert not Path("runs").exists() or not any(Path("runs").rglob("*"))


def test_runs_are_named_by_their_coordinates_and_a_rerun_gets_a_version_suffix():
    """runs/<name>/a~<α̃>_h<width>_L<depth>_P<n_train>_s<seed>: readable in TensorBoard's run selector;
    the same coordinates again → _v1 (nothing overwritten); a version set in the config is kept."""
    from lightning_phase.run import fit

    args = ["--trainer.max_steps=2", "--trainer.enable_progress_bar=false", "--data.n_train=60",
            "--model.net.init_args.width=8", "--model.alpha_tilde=100", "--seed_everything=3"]
    first, again = fit(QUICK, args), fit(QUICK, args)
    assert Path(first["run_dir"]) == Path("runs/quickstart/a~100_h8_L2_P60_s3")
    assert Path(again["run_dir"]) == Path("runs/quickstart/a~100_h8_L2_P60_s3_v1")
    assert (Path(first["run_dir"]) / "summary.json").is_file() and (Path(again["run_dir"]) / "summary.json").is_file()
    kept = fit(QUICK, [*args, "--trainer.logger.init_args.version=mine"])
    assert Path(kept["run_dir"]) == Path("runs/quickstart/mine")


def test_coordinates_name_is_a_safe_folder_name():
    from lightning_phase.run_name import coordinates_name

    assert coordinates_name(0.001, 64, 2, 500, 0) == "a~0.001_h64_L2_P500_s0"
    assert coordinates_name(float("inf"), 16, None, 40, 1, members=4) == "a~inf_h16_P40_s1_K4"
    assert coordinates_name(10**0.5 * 10) == "a~31.6228" and coordinates_name(1e6) == "a~1e+06"
    assert coordinates_name() == "run"
    # members over α̃ name every value; members over seeds (one α̃) name it once
    assert coordinates_name([1.0, 10.0, 100.0], 8, members=3) == "a~1-10-100_h8_K3"
    assert coordinates_name([5.0, 5.0], 8, members=2) == "a~5_h8_K2"


def test_trial_name_carries_the_grid_point_and_finds_its_folder(tmp_path):
    from lightning_phase.run_name import trial_folder, trial_name

    name = trial_name(3, {"model.net.init_args.width": 8, "model.alpha_tilde": 10.0, "data.n_train": 100})
    assert name == "trial_00003_a~10_h8_P100"
    assert trial_name(12, {"model.loss": "hinge"}) == "trial_00012_losshinge" and trial_name(1, {}) == "trial_00001"
    (tmp_path / name).mkdir()
    (tmp_path / "trial_00030_a~1").mkdir()   # another trial whose number starts the same way
    assert trial_folder(tmp_path, 3) == tmp_path / name and trial_folder(tmp_path, 4) is None
