"""Bad inputs, tried as a new user would: each must give ONE line on stderr, exit status 2, and write
nothing. Prints one row per case and the count that are clean.

    python benchmarks/bad_inputs.py [-k SUBSTRING]

Runs in a temporary folder, in-process (the package is imported once), ~1 s per training-command case.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quickstart.yaml")
TINY = {"trainer": {"max_steps": 3, "enable_progress_bar": False},
        "model": {"net": {"class_path": "lightning_phase.nets.FullyConnected", "init_args": {"width": 4, "depth": 2}},
                  "alpha_tilde": 1.0, "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}},
        "data": {"dataset": "random", "n_train": 10, "n_test": 10, "dim": 3}}


def fit_cases() -> list[tuple[str, list[str]]]:
    f = ["fit", "--config", "tiny.yaml"]
    return [
        ("lr < 0", [*f, "--model.optimizer.init_args.lr=-1"]),
        ("lr = 0", [*f, "--model.optimizer.init_args.lr=0"]),
        ("optimizer init_args without class", ["fit", "--config", "notorch.yaml", "--model.optimizer.init_args.lr=1"]),
        ("Adam betas out of range", [*f, "--model.optimizer=torch.optim.Adam",
                                     "--model.optimizer.init_args.betas=[1.5, 0.9]"]),
        ("max_steps < 0", [*f, "--trainer.max_steps=-5"]),
        ("seed -1", [*f, "--seed_everything=-1"]),
        ("seed 2^36", [*f, "--seed_everything=68719476736"]),
        ("missing ckpt_path", [*f, "--ckpt_path=/no/such/last.ckpt"]),
        ("prefix abbreviation", [*f, "--trainer.max_step=10"]),
        ("unknown key (typo)", [*f, "--model.alpah_tilde=3"]),
        ("alpha_tilde < 0", [*f, "--model.alpha_tilde=-1"]),
        ("alpha_tilde not a number", [*f, "--model.alpha_tilde=abc"]),
        ("width 0", [*f, "--model.net.init_args.width=0"]),
        ("n_train 0", [*f, "--data.n_train=0"]),
        ("unknown dataset", [*f, "--data.dataset=nope"]),
        ("unknown loss", [*f, "--model.loss=nope"]),
        ("missing config file", ["fit", "--config", "/no/such.yaml"]),
        ("unknown command", ["fitt", "--config", "tiny.yaml"]),
        ("validate with bad key", ["validate", "--config", "tiny.yaml", "--model.widht=3"]),
    ]


def sweep_cases() -> list[tuple[str, list[str]]]:
    s = ["sweep", "spec.yaml", "--storage", "s.journal", "--no-progress"]
    return [
        ("study name ../../x", [*s, "--study", "../../x"]),
        ("study name /abs", [*s, "--study", "/tmp/abs"]),
        ("fixed: alpha_tilde -1", ["sweep", "fixed_bad.yaml", "--storage", "s.journal", "--no-progress"]),
        ("bad value after the first grid point", ["sweep", "late_bad.yaml", "--storage", "s.journal",
                                                  "--no-progress"]),
        ("unreachable postgresql", [*s, "--storage", "postgresql://nobody@127.0.0.1:1/none"]),
        ("missing database driver (mysql)", [*s, "--storage", "mysql://nobody@127.0.0.1:1/none"]),
        ("missing spec", ["sweep", "nope.yaml", "--storage", "s.journal"]),
        ("garbage journal", [*s, "--storage", "garbage.journal"]),
        ("workers 0", [*s, "--workers", "0"]),
        ("results of a missing study", ["results", "nope", "--storage", "s.journal"]),
    ]


def prepare(folder: Path) -> None:
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (folder / "notorch.yaml").write_text(yaml.safe_dump({**TINY, "model": {**TINY["model"], "optimizer": None}}))
    (folder / "spec.yaml").write_text(yaml.safe_dump({"base": "tiny.yaml", "grid": {"seed_everything": [0, 1]}}))
    (folder / "fixed_bad.yaml").write_text(yaml.safe_dump(
        {"base": "tiny.yaml", "fixed": {"model.alpha_tilde": -1}, "grid": {"seed_everything": [0, 1]}}))
    (folder / "late_bad.yaml").write_text(yaml.safe_dump(
        {"base": "tiny.yaml", "grid": {"model.net.init_args.width": [4, 0]}}))
    (folder / "garbage.journal").write_bytes(b'{"op_code":0,"worker_id":"w","study_name":"x","directions":[1]}\n'
                                             b"garbage\n")


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def run_case(argv: list[str], folder: Path) -> tuple[int, str, bool]:
    from lightning_phase.cli import main

    before = snapshot(folder)
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # noqa: BLE001 - a case that escapes is counted, not fatal
            import traceback

            traceback.print_exc(file=err)
            code = f"raised {type(exc).__name__}"
    written = snapshot(folder) - before
    return code, err.getvalue(), not written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cases = [c for c in fit_cases() + sweep_cases() if args.k in c[0]]
    clean = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.chdir(folder)
        prepare(folder)
        for name, argv in cases:
            code, err, nothing_written = run_case(argv, folder)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            ok = code == 2 and len(lines) == 1 and nothing_written
            clean += ok
            print(f"{'ok ' if ok else 'BAD'} {name:38s} exit={code} lines={len(lines)} "
                  f"written={'no' if nothing_written else 'yes'} | {lines[-1][:150] if lines else ''}")
    print(f"\nbad inputs tried: {len(cases)}, clean (one line, exit 2, nothing written): {clean}")
    return 0 if clean == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
