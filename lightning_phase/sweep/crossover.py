"""`lightning-phase crossover SPEC`: the α̃ twin of `threshold` — for each width, bisection in log α̃ for
α̃* where an observable (default the kernel change ‖ΔΘ‖/‖Θ₀‖) crosses a level c ([FL], [PD]).

A spec is a sweep spec whose grid is replaced by a ``crossover`` section::

    base: ../configs/lazy_vs_feature.yaml
    fixed: {data.n_kernel: 50, trainer.callbacks: [...NTKChange...]}
    crossover:
      widths: [8, 32, 128]
      alpha_min: 0.1          # α̃ bracket to search (the observable must be > c at alpha_min, < c at alpha_max)
      alpha_max: 1.0e4
      tolerance: 0.1          # stop when log10(hi/lo) ≤ tolerance
      level: 1.0              # c
      observable: ntk_rel_change

Every run is a trial of the Optuna study (the spec's name), recorded like a sweep trial (one attribute per
summary field, value = the observable), so the command resumes where it stopped: the bisection is replayed
from the stored trials. Each round runs the next α̃ of every unfinished width, up to ``--workers`` at a
time, each in its own forked child. α̃* is interpolated in log–log inside the final bracket
(``analysis.crossover.crossing``). Exit status: 0 finished, 1 interrupted or a run failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_phase.errors import ConfigError, check_positive_float
from lightning_phase.run_name import trial_name

ALPHA_KEY = "model.alpha_tilde"
WIDTH_KEY = "model.net.init_args.width"
RESULTS_ATTR = "lp_crossover"


@dataclass(frozen=True)
class CrossoverSpec:
    widths: tuple[int, ...]
    alpha_min: float
    alpha_max: float
    tolerance: float = 0.1
    level: float = 1.0
    observable: str = "ntk_rel_change"


def parse(path: str) -> tuple[Any, CrossoverSpec]:
    """(SweepSpec with the widths as its grid, CrossoverSpec); ConfigError naming the field."""
    from lightning_phase.sweep.spec import parse_spec

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError):
        raise ConfigError("spec", str(path), "an existing, valid crossover YAML file") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("crossover"), dict):
        raise ConfigError("crossover", (raw or {}).get("crossover") if isinstance(raw, dict) else raw,
                          "a mapping with widths, alpha_min, alpha_max (and tolerance, level, observable)")
    c = dict(raw.pop("crossover"))
    for key in c:
        if key not in CrossoverSpec.__dataclass_fields__:
            raise ConfigError(f"crossover.{key}", c[key], "one of " + ", ".join(CrossoverSpec.__dataclass_fields__))
    widths = c.get("widths")
    if not isinstance(widths, list) or not widths or not all(isinstance(w, int) and w >= 1 for w in widths):
        raise ConfigError("crossover.widths", widths, "a non-empty list of integers >= 1")
    lo = check_positive_float("crossover.alpha_min", c.get("alpha_min"))
    hi = check_positive_float("crossover.alpha_max", c.get("alpha_max"))
    if hi <= lo:
        raise ConfigError("crossover.alpha_max", hi, f"a number > crossover.alpha_min ({lo})")
    spec = CrossoverSpec(tuple(widths), lo, hi, check_positive_float("crossover.tolerance", c.get("tolerance", 0.1)),
                         check_positive_float("crossover.level", c.get("level", 1.0)),
                         str(c.get("observable", "ntk_rel_change")))
    raw["grid"] = {WIDTH_KEY: list(widths)}
    raw["objective"] = spec.observable
    return parse_spec(raw, name=p.stem, root=p.parent), spec


def next_alpha(spec: CrossoverSpec, done: dict[float, float]) -> tuple[float | None, dict[str, Any]]:
    """The next α̃ to run for one width given ``done`` (α̃ → observable), or None with the width's result:
    ``bracket`` [lo, hi] (observable > c at lo, ≤ c at hi), ``alpha_tilde_star``, ``crossed``."""
    from lightning_phase.analysis.crossover import crossing

    for a in (spec.alpha_min, spec.alpha_max):
        if a not in done:
            return a, {}
    c = spec.level
    if done[spec.alpha_min] <= c or done[spec.alpha_max] > c:        # not bracketed by the search range
        cr = crossing(list(done), list(done.values()), c)
        return None, {"bracket": list(cr.bracket), "alpha_tilde_star": None, "crossed": False}
    lo = max(a for a, v in done.items() if v > c and a < min(b for b, w in done.items() if w <= c))
    hi = min(a for a, v in done.items() if v <= c and a > lo)
    if math.log10(hi / lo) <= spec.tolerance:
        cr = crossing([lo, hi], [done[lo], done[hi]], c)
        return None, {"bracket": [lo, hi], "alpha_tilde_star": cr.value, "crossed": True}
    mid = float(f"{math.sqrt(lo * hi):.6g}")   # geometric midpoint, 6 digits: the same value on resume
    return mid, {}


def main_crossover(argv: list[str]) -> int:
    """Entry point of ``lightning-phase crossover``."""
    p = argparse.ArgumentParser(prog="lightning-phase crossover", description=__doc__.split("\n\n")[0])
    p.add_argument("spec")
    p.add_argument("--storage", default=None, help="journal file or database URL (default runs/sweeps.journal)")
    p.add_argument("--workers", type=int, default=1, help="runs at a time (default 1)")
    p.add_argument("--runs-dir", default="runs", help="run directories go to RUNS_DIR/STUDY/trial_NNNNN_<point>")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--runner", default=None, help=argparse.SUPPRESS)
    try:
        args = p.parse_args(argv)
        if args.workers < 1:
            raise ConfigError("--workers", args.workers, "an integer >= 1")
        sweep, spec = parse(args.spec)
        return run(sweep, spec, args)
    except ConfigError as exc:
        print(f"lightning-phase: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


def run(sweep, spec: CrossoverSpec, args) -> int:
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    from lightning_phase.storage import open_storage
    from lightning_phase.summary import trial_attrs
    from lightning_phase.sweep.runner import DEFAULT_RUNNER, classify, load_runner, preload, start_child, stop_child
    from lightning_phase.sweep.worker import trial_overrides, write_base

    ref = args.runner or DEFAULT_RUNNER
    runner = load_runner(ref)
    storage = open_storage(args.storage)
    study = optuna.create_study(study_name=sweep.name, storage=storage, load_if_exists=True)
    runs_dir = Path(args.runs_dir).resolve()
    base = write_base(sweep, runs_dir)
    preload(ref)
    dists = {WIDTH_KEY: IntDistribution(1, 2**30, log=True), ALPHA_KEY: FloatDistribution(1e-12, 1e12, log=True)}
    results: dict[int, dict[str, Any]] = {}
    failed = False
    while True:
        done: dict[int, dict[float, float]] = {w: {} for w in spec.widths}
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            w, a = t.params.get(WIDTH_KEY), t.params.get(ALPHA_KEY)
            if w in done and a is not None and t.value is not None:
                done[w][a] = t.value
        todo = []
        for w in spec.widths:
            a, res = next_alpha(spec, done[w])
            if a is None:
                results[w] = res
            else:
                todo.append((w, a))
        if not todo or failed:
            break
        running: list = []
        try:
            for w, a in todo:
                while len(running) >= args.workers:
                    failed |= _reap(running, study, sweep, spec, classify, trial_attrs, block=True)
                study.enqueue_trial({WIDTH_KEY: w, ALPHA_KEY: a})
                trial = study.ask(dists)
                version = trial_name(trial.number, {WIDTH_KEY: w, ALPHA_KEY: a})
                run_dir = runs_dir / sweep.name / version
                run_dir.mkdir(parents=True, exist_ok=True)
                over = trial_overrides(sweep, {WIDTH_KEY: w, ALPHA_KEY: a}, runs_dir, version)
                trial.set_user_attr("run_dir", str(run_dir))
                running.append((trial, run_dir, start_child(runner, base, over, run_dir, args.threads)))
            while running:
                failed |= _reap(running, study, sweep, spec, classify, trial_attrs, block=True)
        except KeyboardInterrupt:
            for trial, _, proc in running:
                stop_child(proc)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            print(f"{sweep.name}: interrupted; run the same command again to continue", file=sys.stderr)
            return 1
    lines = []
    for w in spec.widths:
        r = results.get(w, {"bracket": None, "alpha_tilde_star": None, "crossed": False})
        star = r["alpha_tilde_star"]
        lines.append(f"h={w}: α̃*={star:.4g}  α*={star / math.sqrt(w):.4g}  bracket={r['bracket']}" if star
                     else f"h={w}: not bracketed in [{spec.alpha_min:g}, {spec.alpha_max:g}] (bracket {r['bracket']})")
    study.set_user_attr(RESULTS_ATTR, {str(w): results.get(w) for w in spec.widths})
    print("\n".join(lines))
    if failed:
        print(f"{sweep.name}: a run failed; its α̃ is retried when the command is run again", file=sys.stderr)
    return 1 if failed else 0


def _reap(running: list, study, sweep, spec: CrossoverSpec, classify, trial_attrs, block: bool) -> bool:
    """Record the finished children (value = the observable); True if one failed."""
    import optuna

    while True:
        for item in list(running):
            trial, run_dir, proc = item
            if proc.is_alive():
                continue
            proc.join()
            running.remove(item)
            outcome, summary, value, reason = classify(proc.exitcode, run_dir, spec.observable)
            for k, v in trial_attrs(summary).items():
                trial.set_user_attr(k, v)
            if value is None:
                trial.set_user_attr("fail_reason", outcome.value)
                trial.set_user_attr("error", reason)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                return True
            study.tell(trial, value)
            return False
        if not block:
            return False
        time.sleep(0.1)
