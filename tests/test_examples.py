"""Every shipped config and sweep spec parses and is accepted by `fit` (as the hydra template's test_configs)."""

from pathlib import Path

import pytest
import yaml

from lightning_phase.cli import main
from lightning_phase.run import build_run
from lightning_phase.sweep.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_is_accepted(config, capsys):
    assert main(["fit", "--config", str(config), "--print_config"]) == 0
    assert "model:" in capsys.readouterr().out
    assert config.read_text().startswith("# lightning-phase fit --config configs/")  # first comment: the command


@pytest.mark.parametrize("spec", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweep_spec_builds_accepted_run_configs(spec, capsys):
    if "crossover:" in spec.read_text():   # a `lightning-phase crossover` spec: its widths at both α̃ ends
        from lightning_phase.sweep.crossover import ALPHA_KEY, parse

        s, c = parse(str(spec))
        first, last = ({**s.points()[0], ALPHA_KEY: c.alpha_min}, {**s.points()[-1], ALPHA_KEY: c.alpha_max})
    else:
        s = load_spec(spec)
        assert s.n_points >= 2
        first, last = s.points()[0], s.points()[-1]
    Path("base.yaml").write_text(yaml.safe_dump(s.base))
    for params in (first, last):   # built (data, net, trainer) as a trial would be, without training
        _, module, _ = build_run("base.yaml", [*s.overrides(params), "--trainer.logger=false"])
        assert module.n_params > 0
    assert spec.read_text().startswith("# lightning-phase ")
