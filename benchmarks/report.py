"""`lightning-phase report` on a generated 1,000-trial study: seconds per stage, and the table load as a
ratio against Optuna's own ``Study.trials_dataframe()`` timed in the same run.

    OMP_NUM_THREADS=1 python benchmarks/report.py [--widths 9] [--seeds 10]

The study is tests/analysis_helpers.synthetic_study (known exponents), v2 trial records, one outputs.npz per
trial. Prints whether torch or Lightning were imported (they must not be).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", type=int, default=9)
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()
    from analysis_helpers import ALPHAS, synthetic_study

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        widths = tuple(int(w) for w in np.geomspace(4, 4 * 2 ** (args.widths - 1), args.widths))
        t0 = time.perf_counter()
        st = synthetic_study(root / "s.journal", widths=widths, alphas=ALPHAS, seeds=tuple(range(args.seeds)),
                             runs_dir=root / "runs")
        n = len(widths) * len(ALPHAS) * args.seeds
        print(f"generated {n} trials in {time.perf_counter() - t0:.1f} s")

        import optuna

        from lightning_phase.analysis import load_study
        from lightning_phase.analysis.report import build_report
        from lightning_phase.analysis.tables import open_existing_storage

        t0 = time.perf_counter()
        ref = optuna.load_study(study_name="toy", storage=open_existing_storage(st)).trials_dataframe()
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        df = load_study("toy", st)
        t_load = time.perf_counter() - t0
        assert len(df) == len(ref) == n
        t0 = time.perf_counter()
        fits = build_report(df, root / "rep", n_boot=2000)
        t_report = time.perf_counter() - t0
        print(f"load_study {t_load:.2f} s | optuna trials_dataframe {t_ref:.2f} s | ×{t_load / t_ref:.2f}")
        print(f"analyse + {len(fits['figures'])} figures (PNG+SVG) + report.md/fits.json: {t_report:.1f} s")
        print(f"crossover exponent {fits['crossover']['exponent']['exponent']:+.3f} (true −0.5), "
              f"fluctuation exponent {fits['fluctuations']['exponent']['exponent']:+.3f} (true −1)")
        print(f"torch imported: {'torch' in sys.modules}, Lightning imported: {'pytorch_lightning' in sys.modules}")


if __name__ == "__main__":
    main()
