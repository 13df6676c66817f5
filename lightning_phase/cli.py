"""`lightning-phase`: a thin dispatcher. Each subcommand is a function ``main_xxx(argv) -> exit code`` named
in :data:`COMMANDS` and imported only when chosen, so ``--help`` (and the commands that don't train) never
import torch or Lightning.

Exit status of every command: 0 done, 1 crash or unfinished, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import importlib
import sys

# subcommand → ("package.module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("lightning_phase.run:main_fit", "train one run from a YAML config (+ --key=value overrides)"),
    "validate": ("lightning_phase.run:main_validate", "evaluate one run's config on the validation set"),
    "test": ("lightning_phase.run:main_test", "evaluate one run's config on the test set"),
    "sweep": ("lightning_phase.sweep.commands:main_sweep", "run every point of a sweep spec's grid (Optuna)"),
    "threshold": ("lightning_phase.sweep.commands:main_threshold",
                  "find the jamming width h* per group by bisection"),
    "results": ("lightning_phase.analysis.results:main_results",
                "every trial of a study sorted by its grid keys (--format table|csv|json)"),
    "crossover": ("lightning_phase.sweep.crossover:main_crossover",
                  "find the lazy/feature crossover α̃*(h) per width by bisection in log α̃"),
    "report": ("lightning_phase.analysis.report:main_report",
               "report.md, fits.json and figures (PNG, SVG) of studies or run folders"),
    "load-diagram": ("lightning_phase.analysis.load_diagram:main_load_diagram",
                     "[SB] grid of load curves over test-error cells from LoadCurve runs"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: lightning-phase COMMAND [--help] [ARGS ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {helptext}" for name, (_, helptext) in COMMANDS.items()]
    lines += ["", "`lightning-phase COMMAND --help` shows a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lightning-phase``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"lightning-phase: error: command: got {name!r}; expected one of {', '.join(COMMANDS)}{hint}",
              file=sys.stderr)
        return 2
    module, _, function = COMMANDS[name][0].partition(":")
    return int(getattr(importlib.import_module(module), function)(rest))


if __name__ == "__main__":
    raise SystemExit(main())
