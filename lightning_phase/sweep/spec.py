"""Sweep specs: a base run config plus a grid of dotted-key overrides, read from YAML and checked at once.

A spec (``sweeps/*.yaml``)::

    base: ../configs/quickstart.yaml        # a run config (path relative to the spec) or an inline mapping
    fixed: {trainer.max_steps: 500}         # optional overrides applied to every trial
    grid:                                   # dotted key -> values; the grid is their product
      model.net.init_args.width: {range: [8, 64, 8]}     # 8, 16, ..., 64 (stop included)
      model.alpha_tilde: {logspace: [-2, 2, 5]}          # 1e-2, 1e-1, 1, 1e1, 1e2
      seed_everything: [0, 1, 2]
    objective: test_error                   # any numeric summary.json field is the trial's value
    direction: minimize
    threshold: {...}                        # only for `lightning-phase threshold` (see threshold.py)
    members: seed                           # optional: the seed axis runs as members of one trial (below)

Value forms: a list; ``{range: [start, stop, step]}`` (integers, stop included when hit);
``{logspace: [a, b, n]}`` (n floats 10^a … 10^b); ``{geomspace: [start, stop, n]}`` (n log-spaced values,
rounded to distinct integers when start and stop are integers). Every error is a ConfigError naming the
field, the value and what is accepted, so a typo fails in a second rather than after 400 trials.

``members: seed`` folds the grid's seed axis (``seed_everything`` or ``model.net.init_args.seed``, K
consecutive integers s, s+1, …, s+K−1) into each trial: the axis keeps the single value s and every trial
trains ``model.members: K`` (member k = the run with seed s + k, see docs/members.md). The analysis
(``load_study``, ``results``) expands each trial back into one row per seed.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_phase.errors import ConfigError, check_choice, check_positive_int

SPEC_KEYS = ("base", "fixed", "grid", "objective", "direction", "threshold", "members")
MEMBER_SEED_KEYS = ("seed_everything", "model.net.init_args.seed")  # grid axes ``members: seed`` can fold
THRESHOLD_KEYS = ("width_key", "seed_key", "seeds", "width_min", "width_max", "max_doublings", "budget_key",
                  "budget_max", "data_seed_key")
VALUE_FORMS = ("range", "logspace", "geomspace")
DIRECTIONS = ("minimize", "maximize")
# Common objectives: any numeric summary.json field is accepted (e.g. ntk_rel_change, t1), plus two ratios
# computed from the summary (runner.objective_value); a trial whose summary lacks it fails NO_OBJECTIVE.
OBJECTIVES = ("test_error", "train_error", "train_loss", "n_delta", "steps", "flow_time", "wall_seconds",
              "n_delta_over_p", "n_delta_over_n")
OBJECTIVE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
GridValue = str | int | float | bool | None


@dataclass(frozen=True)
class ThresholdSpec:
    """Where to look for h*: widths [width_min, width_max] (doubled up to ``max_doublings`` times when
    width_max does not fit), ``seeds`` run at every width tried; fitted = a strict majority of the seeds' runs
    SAT (summary ``fit_state``). A run that ends UNDECIDED is run again with its budget ``budget_key`` (the
    base's value, e.g. trainer.max_steps) doubled, while the doubled budget is ≤ ``budget_max`` (None: no
    reruns). ``data_seed_key`` (e.g. data.data_seed): if set, each seed also draws its own data set."""

    seeds: tuple[int, ...]
    width_min: int
    width_max: int
    width_key: str = "model.net.init_args.width"
    seed_key: str = "seed_everything"
    max_doublings: int = 3
    budget_key: str = "trainer.max_steps"
    budget_max: int | None = None
    data_seed_key: str | None = None


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated sweep spec; ``grid`` maps dotted keys to their expanded value lists."""

    name: str
    base: dict[str, Any]
    grid: dict[str, list[GridValue]]
    fixed: dict[str, Any] = field(default_factory=dict)
    objective: str = "test_error"
    direction: str = "minimize"
    threshold: ThresholdSpec | None = None
    members: str | None = None  # the seed key folded into model.members (``members: seed``), else None

    @property
    def n_points(self) -> int:
        return math.prod(len(v) for v in self.grid.values())

    def points(self) -> list[dict[str, GridValue]]:
        """Every grid point as {dotted key: value}, keys sorted (GridSampler's order of names)."""
        keys = sorted(self.grid)
        return [dict(zip(keys, vals, strict=False)) for vals in itertools.product(*(self.grid[k] for k in keys))]

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a stored study to be continued with this spec."""
        thr = None if self.threshold is None else self.threshold.__dict__
        out = {"base": self.base, "fixed": self.fixed, "grid": self.grid, "objective": self.objective,
               "direction": self.direction, "threshold": thr}
        return out if self.members is None else {**out, "members": self.members}

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """The command-line overrides of one trial on top of ``base``: ``fixed``, then the trial's ``params``
        (``["--model.alpha_tilde=100", ...]``), applied by jsonargparse as on the command line."""
        return [override(key, value) for key, value in {**self.fixed, **params}.items()]


def override(key: str, value: Any) -> str:
    """``--key=value`` with the value written so that jsonargparse reads back exactly ``value``."""
    if isinstance(value, str) and yaml.safe_load(value) == value and "\n" not in value:
        return f"--{key}={value}"
    return f"--{key}={json.dumps(value)}"


# ---- reading -------------------------------------------------------------------------------------
def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a spec file; raise ConfigError (field, value, accepted) on the first problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError("spec", str(path), "an existing sweep YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError("spec", str(path), f"valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(raw, dict):
        raise ConfigError("spec", type(raw).__name__, "a mapping with keys " + ", ".join(SPEC_KEYS))
    return parse_spec(raw, name=path.stem, root=path.parent)


def parse_spec(raw: dict[str, Any], name: str = "sweep", root: Path | None = None) -> SweepSpec:
    """Check a spec mapping (as read from YAML); ``root`` resolves a relative ``base`` path."""
    for key in raw:
        check_choice("spec key", key, SPEC_KEYS)
    base = _load_base(raw.get("base"), root or Path.cwd())
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError("fixed", fixed, "a mapping of dotted keys to values")
    for key in fixed:
        check_dotted_key("fixed", key)
    grid = raw.get("grid", {} if "threshold" in raw else None)
    if not isinstance(grid, dict) or (not grid and "threshold" not in raw):
        raise ConfigError("grid", grid, "a non-empty mapping of dotted keys to value lists or ranges")
    grid = {check_dotted_key("grid", k): expand_values(f"grid.{k}", v) for k, v in grid.items()}
    objective = raw.get("objective", "test_error")
    if not isinstance(objective, str) or not OBJECTIVE_NAME.fullmatch(objective):
        raise ConfigError("objective", objective, "the name of a numeric summary.json field (e.g. "
                          + ", ".join(OBJECTIVES[:4]) + ", ntk_rel_change), or n_delta_over_p / n_delta_over_n")
    direction = raw.get("direction", "minimize")
    check_choice("direction", direction, DIRECTIONS)
    members = None
    if "members" in raw:
        if "threshold" in raw:
            raise ConfigError("members", raw["members"], "no members with threshold (it sets the seeds itself)")
        members, grid, fixed = _fold_members(raw["members"], grid, fixed)
    threshold = _parse_threshold(raw["threshold"], grid) if "threshold" in raw else None
    if threshold is not None and threshold.budget_max is not None:
        budget = {**_flatten(base), **fixed}.get(threshold.budget_key)
        if isinstance(budget, bool) or not isinstance(budget, int) or not 0 < budget <= threshold.budget_max:
            raise ConfigError("threshold.budget_max", threshold.budget_max,
                              f"a cap ≥ the base's {threshold.budget_key} (an integer > 0 in base or fixed; "
                              f"got {budget!r})")
    return SweepSpec(name=name, base=base, grid=grid, fixed=fixed, objective=objective,
                     direction=direction, threshold=threshold, members=members)


def _fold_members(value: Any, grid: dict[str, list], fixed: dict[str, Any]) -> tuple[str, dict, dict]:
    """``members: seed``: the grid's seed axis of K consecutive integers s…s+K−1 → that axis = [s] and
    ``model.members: K`` in ``fixed``. Returns (seed key, grid, fixed)."""
    if value != "seed":
        raise ConfigError("members", value, "seed (the grid's seed axis runs as model.members of one trial)")
    keys = [k for k in MEMBER_SEED_KEYS if k in grid]
    if len(keys) != 1:
        raise ConfigError("members", value, "a grid with one seed axis, " + " or ".join(MEMBER_SEED_KEYS)
                          + f" (found {len(keys)})")
    if "model.members" in grid or "model.members" in fixed:
        raise ConfigError("model.members", grid.get("model.members", fixed.get("model.members")),
                          "not set in grid or fixed with members: seed (the sweep sets it)")
    key = keys[0]
    seeds = grid[key]
    if any(isinstance(v, bool) or not isinstance(v, int) for v in seeds) \
            or seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ConfigError(f"grid.{key}", seeds, "consecutive increasing integers s, s+1, … (members: seed)")
    return key, {**grid, key: [seeds[0]]}, {**fixed, "model.members": len(seeds)}


def _load_base(base: Any, root: Path) -> dict[str, Any]:
    if isinstance(base, dict):
        cfg = base
    elif isinstance(base, str):
        p = (root / base) if not Path(base).is_absolute() else Path(base)
        if not p.is_file():
            raise ConfigError("base", base, f"a run config file (looked for {p})")
        cfg = yaml.safe_load(p.read_text()) or {}
    else:
        raise ConfigError("base", base, "a path to a run config YAML or an inline run config mapping")
    if not isinstance(cfg, dict):
        raise ConfigError("base", base, "a run config mapping")
    return copy.deepcopy(cfg)


def _parse_threshold(raw: Any, grid: dict[str, list]) -> ThresholdSpec:
    if not isinstance(raw, dict):
        raise ConfigError("threshold", raw, "a mapping with keys " + ", ".join(THRESHOLD_KEYS))
    for key in raw:
        check_choice("threshold key", key, THRESHOLD_KEYS)
    for key in ("seeds", "width_min", "width_max"):
        if key not in raw:
            raise ConfigError(f"threshold.{key}", None, "a value (required)")
    seeds = expand_values("threshold.seeds", raw["seeds"])
    for s in seeds:
        check_positive_int("threshold.seeds", s, minimum=0)
    wmin = check_positive_int("threshold.width_min", raw["width_min"])
    wmax = check_positive_int("threshold.width_max", raw["width_max"], minimum=wmin + 1)
    width_key = check_dotted_key("threshold.width_key", raw.get("width_key", ThresholdSpec.width_key))
    seed_key = check_dotted_key("threshold.seed_key", raw.get("seed_key", ThresholdSpec.seed_key))
    doublings = check_positive_int("threshold.max_doublings", raw.get("max_doublings", 3), minimum=0)
    budget_key = check_dotted_key("threshold.budget_key", raw.get("budget_key", ThresholdSpec.budget_key))
    budget_max = raw.get("budget_max")
    if budget_max is not None:
        budget_max = check_positive_int("threshold.budget_max", budget_max)
    data_seed_key = raw.get("data_seed_key")
    if data_seed_key is not None:
        data_seed_key = check_dotted_key("threshold.data_seed_key", data_seed_key)
    spec = ThresholdSpec(seeds=tuple(int(s) for s in seeds if isinstance(s, int)),  # all ints: checked above
                         width_min=wmin, width_max=wmax, width_key=width_key,
                         seed_key=seed_key, max_doublings=doublings, budget_key=budget_key,
                         budget_max=budget_max, data_seed_key=data_seed_key)
    keys = [spec.width_key, spec.seed_key] + ([spec.budget_key] if budget_max is not None else []) \
        + ([data_seed_key] if data_seed_key is not None else [])
    for key in keys:
        if key in grid:
            raise ConfigError("grid", key, f"no entry for {key}: the threshold search sets it")
    return spec


# ---- values and keys -----------------------------------------------------------------------------
def expand_values(fieldname: str, spec: Any) -> list[GridValue]:
    """A grid entry → its list of values: a list, or one of {range, logspace, geomspace} (module doc)."""
    if isinstance(spec, list):
        values = spec
    elif isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in VALUE_FORMS:
        form, args = next(iter(spec.items()))
        values = _expand_form(f"{fieldname}.{form}", form, args)
    else:
        raise ConfigError(fieldname, spec, "a list of values or one of {range: [start, stop, step]}, "
                          "{logspace: [a, b, n]}, {geomspace: [start, stop, n]}")
    if not values:
        raise ConfigError(fieldname, spec, "at least one value")
    for v in values:
        if not (v is None or isinstance(v, (str, int, float, bool))):
            raise ConfigError(fieldname, v, "scalars (number, string, bool, null)")
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(fieldname, v, "finite numbers")
    if len({json.dumps(v) for v in values}) != len(values):
        raise ConfigError(fieldname, spec, "distinct values")
    return list(values)


def _expand_form(fieldname: str, form: str, args: Any) -> list[Any]:
    def is_num(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if not (isinstance(args, list) and len(args) == 3 and all(is_num(a) for a in args)):
        raise ConfigError(fieldname, args, "a list of three numbers")
    a, b, n = args
    if form == "range":
        if not all(isinstance(x, int) for x in args) or n == 0 or (b - a) * n < 0:
            raise ConfigError(fieldname, args, "[start, stop, step], integers, step != 0 and pointing from "
                              "start to stop")
        return list(range(a, b + (1 if n > 0 else -1), n))
    if not isinstance(n, int) or n < 1:
        raise ConfigError(fieldname, args, "a count n >= 1 as third entry")
    ts = [a + (b - a) * i / (n - 1) for i in range(n)] if n > 1 else [a]
    if form == "logspace":
        return [float(f"{10.0 ** t:.12g}") for t in ts]
    if a <= 0 or b <= 0:
        raise ConfigError(fieldname, args, "[start, stop, n] with start, stop > 0")
    values = [math.exp(math.log(a) + (math.log(b) - math.log(a)) * i / (n - 1)) if n > 1 else a for i in range(n)]
    if isinstance(a, int) and isinstance(b, int):
        return sorted({int(round(v)) for v in values})
    return [float(f"{v:.12g}") for v in values]


def check_dotted_key(fieldname: str, key: Any) -> str:
    """A dotted run-config key (``model.net.init_args.width``); whether the run accepts it is checked by
    building the trials' runs before the first one starts."""
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")) or key.startswith("-"):
        raise ConfigError(fieldname, key, "a dotted run-config key such as model.net.init_args.width")
    return key


def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """{"trainer": {"max_steps": 5}} → {"trainer.max_steps": 5} (leaves only)."""
    if not isinstance(cfg, dict):
        return {prefix: cfg} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
