"""`lightning-phase sweep | threshold`: argument parsing and the two commands (``results``: analysis.results).

    lightning-phase sweep SPEC [--storage URL] [--workers K] [--study NAME]
    lightning-phase threshold SPEC [--storage URL] [--workers K] [--study NAME]

Exit status: 0 done (failed trials are recorded, not fatal), 1 stopped unfinished (workers died or were
interrupted: run the same command again to continue), 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from pathlib import Path

from lightning_phase.errors import ConfigError
from lightning_phase.storage import DEFAULT_STORAGE, describe, open_storage
from lightning_phase.sweep.runner import DEFAULT_RUNNER


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2 (argparse's own prints usage over several lines)
        raise _UsageError(f"{self.prog}: {message}")


def _positive(kind, name):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise argparse.ArgumentTypeError(f"{name}: got {text!r}; expected a number > 0")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lightning-phase")
    sub = p.add_subparsers(dest="command", required=True)
    for name, helptext in (("sweep", "run every point of a spec's grid (Optuna GridSampler study)"),
                           ("threshold", "find the jamming width h* per group by bisection")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("spec", help="sweep spec YAML (sweeps/*.yaml)")
        s.add_argument("--storage", default=None,
                       help=f"journal file path (default {DEFAULT_STORAGE}) or postgresql://user@host:port/db")
        s.add_argument("--workers", type=_positive(int, "--workers"), default=1,
                       help="worker processes on this machine (one trial each at a time)")
        s.add_argument("--study", default=None, help="study name (default: the spec's file name)")
        s.add_argument("--runs-dir", default="runs", help="trial runs go to RUNS_DIR/STUDY/trial_NNNNN_<point>")
        s.add_argument("--heartbeat", type=_positive(float, "--heartbeat"), default=5.0,
                       help="seconds between heartbeats of a running trial")
        s.add_argument("--grace", type=_positive(float, "--grace"), default=30.0,
                       help="a RUNNING trial silent this long is failed (STALE) and its point redone once")
        s.add_argument("--threads", type=_positive(int, "--threads"), default=1, help="torch threads per trial")
        s.add_argument("--runner", default=DEFAULT_RUNNER, help=argparse.SUPPRESS)
        s.add_argument("--no-progress", action="store_true", help="no progress bar")
        if name == "threshold":
            s.add_argument("--json", default=None, metavar="FILE",
                           help="write every group's h*, N*, bracket, verdicts and the N* = aP fits to FILE")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        return cmd_run(args)
    except (_UsageError, ConfigError) as exc:
        print(f"lightning-phase: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


def _prepare(args):
    """Everything that can fail on bad input, before anything starts: spec, options, storage, study."""
    from lightning_phase.sweep.launch import ensure_study
    from lightning_phase.sweep.runner import load_runner
    from lightning_phase.sweep.spec import load_spec
    from lightning_phase.sweep.worker import WorkerOptions

    spec = load_spec(args.spec)
    if args.command == "sweep" and spec.threshold is not None:
        raise ConfigError("spec", args.spec, "a spec without `threshold:` (run it with `lightning-phase threshold`)")
    if args.command == "threshold" and spec.threshold is None:
        raise ConfigError("spec", args.spec, "a spec with a `threshold:` section (seeds, width_min, width_max)")
    if args.grace <= 2 * args.heartbeat:
        raise ConfigError("--grace", args.grace, f"more than twice --heartbeat ({args.heartbeat})")
    spec = dataclasses.replace(spec, name=check_study_name(args.study or spec.name))
    runner = load_runner(args.runner)
    opts = WorkerOptions(runs_dir=Path(args.runs_dir).resolve(), heartbeat=args.heartbeat, grace=args.grace,
                         threads=args.threads)
    # the storage is opened (a new journal file created) only after the trials' configs were checked
    return spec, runner, opts, lambda: ensure_study(open_storage(args.storage), spec, opts.max_retries)


STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_study_name(name: str) -> str:
    """A study name is also a folder under --runs-dir: letters, digits, '_', '.', '-', no leading '.'/'-'."""
    if not STUDY_NAME.fullmatch(name) or ".." in name:
        raise ConfigError("--study", name, "1-100 letters, digits, '_', '.', '-' (starting with a letter or digit; "
                          "it names the folder RUNS_DIR/STUDY)")
    return name


def _warm_data(base: dict, fixed: dict) -> None:
    """Generate the trials' generated data set (mnist1d: base ``data:`` with the spec's fixed ``data.*``) once
    here, before the workers and their trials are forked, so trials do not regenerate it
    (``data.sources.warm_cache``)."""
    from lightning_phase.data.sources import warm_cache

    data = base.get("data") if isinstance(base, dict) else None
    data = dict(data) if isinstance(data, dict) else {}
    data.update({k.split(".", 1)[1]: v for k, v in (fixed or {}).items() if k.startswith("data.")})
    try:
        warm_cache(data)
    except (TypeError, ValueError):
        pass  # a bad value is reported by the config check, with its field name


def cmd_run(args) -> int:
    from lightning_phase.sweep import launch, threshold
    from lightning_phase.sweep.grid import point_status
    from lightning_phase.sweep.runner import preload, warm_build
    from lightning_phase.sweep.worker import trial_overrides, write_base

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    spec, runner, opts, make_study = _prepare(args)
    preload(args.runner)
    import_s = _process_age()   # interpreter start + every import, paid once per sweep command
    _warm_data(spec.base, spec.fixed)
    _check_configs(args.runner, spec)
    h = make_study()
    base = write_base(spec, opts.runs_dir)
    warm_build(args.runner, base, trial_overrides(spec, check_points(spec)[0], opts.runs_dir, "warm-up"))
    show = not args.no_progress
    print(f"{args.command} {spec.name}: storage {describe(args.storage)}, {args.workers} worker(s), "
          f"runs in {opts.runs_dir / spec.name}", file=sys.stderr)
    t_start = time.time()
    if args.command == "sweep":
        procs = launch.start_workers(args.workers, args.storage, spec, opts, runner)
        ok = launch.watch(h, procs, lambda: point_status(h.trials(), spec.n_points, opts.max_retries)[0],
                          spec.n_points, show)
        counts, reasons = point_status(h.trials(), spec.n_points, opts.max_retries)
        failed = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none"
        print(f"{spec.name}: {counts['done']}/{spec.n_points} grid points done, {counts['failed']} failed "
              f"({failed}), {counts['rerun']} to redo on the next run; trials in storage: {len(h.trials())}",
              file=sys.stderr)
        finished = ok and counts["done"] + counts["failed"] == spec.n_points
    else:
        import multiprocessing
        import threading

        stop = multiprocessing.get_context("fork").Event()
        procs = launch.start_workers(args.workers, args.storage, spec, opts, runner, stop=stop)
        box: dict = {}
        driver = threading.Thread(target=lambda: box.update(
            r=threshold.drive(h, stop, alive=lambda: any(p.is_alive() for p in procs))), daemon=True)
        driver.start()
        total = len(threshold.groups(spec)) * len(spec.threshold.seeds) * threshold.max_widths(spec.threshold)
        ok = launch.watch(h, procs, lambda: threshold.status_counts(h), total, show)
        stop.set()
        driver.join(timeout=30)
        results = box.get("r") or []
        from lightning_phase.analysis.jamming_line import format_line, format_results, jamming_line

        print(format_results(results))

        fits = jamming_line(results)
        if fits:
            print(format_line(fits))
        if args.json:
            from lightning_phase.summary import write_json_atomic

            write_json_atomic(Path(args.json), {"study": spec.name, "groups": results, "jamming_line": fits})
            print(f"{spec.name}: results written to {args.json}", file=sys.stderr)
        finished = ok and bool(results) and all(r["finished"] for r in results)
    launch.report_timing(h, import_s, time.time() - t_start, args.workers)
    if not finished:
        print(f"{spec.name}: unfinished; run the same command again to continue", file=sys.stderr)
    return 0 if finished else 1


def _process_age() -> float:
    """Seconds since this process started (Linux /proc), i.e. interpreter start-up and imports so far."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines()
                     if ln.startswith("btime"))
        return time.time() - (btime + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return float("nan")


def check_points(spec) -> list[dict]:
    """The points whose runs are built before the first trial: every grid point when there are at most 64,
    else each value of each grid key once (beside the first values of the others); for a threshold search,
    each group at width_min and width_max, and each seed."""
    if spec.threshold is None:
        points = spec.points()
        if len(points) <= 64:
            return points
        first = points[0]
        return [first] + [{**first, k: v} for k, vals in spec.grid.items() for v in vals[1:]]
    thr = spec.threshold
    groups = spec.points() if spec.grid else [{}]
    out = [{**g, thr.width_key: w, thr.seed_key: thr.seeds[0]} for g in groups[:64]
           for w in (thr.width_min, thr.width_max)]
    return out + [{**groups[0], thr.width_key: thr.width_min, thr.seed_key: s} for s in thr.seeds[1:]]


def _check_configs(runner_ref: str, spec) -> None:
    """A typo in a grid key or a bad grid/fixed value fails here, in seconds, before any trial or storage;
    the check writes only in a temporary folder."""
    import tempfile

    import yaml

    from lightning_phase.sweep.runner import check_configs
    from lightning_phase.sweep.worker import trial_overrides

    with tempfile.TemporaryDirectory(prefix="lp-check-") as tmp:
        base = Path(tmp) / "base.yaml"
        base.write_text(yaml.safe_dump(spec.base, sort_keys=False))
        trials = [trial_overrides(spec, p, Path(tmp), "check") for p in check_points(spec)]
        error = check_configs(runner_ref, base, trials, Path(tmp) / "check.log")
    if error:
        error = error.removeprefix("lightning-phase: error: ")
        raise ConfigError("spec", spec.name, f"run configs that `fit` accepts ({error})")


def main_sweep(argv: list[str]) -> int:
    """``lightning-phase sweep SPEC [...]``."""
    return main(["sweep", *argv])


def main_threshold(argv: list[str]) -> int:
    """``lightning-phase threshold SPEC [...]``."""
    return main(["threshold", *argv])


if __name__ == "__main__":
    raise SystemExit(main())
