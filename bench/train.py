"""Benchmark: walk-forward training of the demo chicago/between config (8 windows, 20 trials, 4 folds).

    .venv/bin/python bench/train.py --workers 1 2

Builds the demo data in a temporary SQLite file and trains into a temporary MLflow store, once per
worker count. Prints wall time, seconds per fit and the share of wall time spent in MLflow logging.
Target on a 2-core machine: the whole run under 5 minutes, MLflow overhead under 10 %.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date
from pathlib import Path

from _workspace import scratch_workspace

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()

    import mlflow

    from kwx.config import load_config
    from kwx.data.demo import load_demo
    from kwx.training import runner

    config = load_config(REPO / "configs" / "elasticnet_chi_between.yaml",
                         overrides={"trials": args.trials, "cv_splits": 4})
    with scratch_workspace() as (tmp, engine):
        started = time.perf_counter()
        load_demo(engine, ["chicago"], config.start, config.end, seed=42)
        print(f"demo data {config.start}..{config.end}: {time.perf_counter() - started:.1f} s")
        for workers in args.workers:
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / f'mlflow-{workers}.db'}"
            summary = runner.train(config, engine, workers=workers)
            mlflow.set_tracking_uri(None)
            t = summary.timings
            print(f"workers={workers}: {len(summary.versions)} windows, {int(t['fits'])} fits, "
                  f"wall {t['wall_seconds']:.1f} s, {t['seconds_per_fit']:.3f} s/fit, "
                  f"MLflow {t['mlflow_seconds']:.1f} s = {100 * t['mlflow_fraction']:.1f} % of wall")
    print(f"(config: {config.summary()}; bench date {date.today()})")


if __name__ == "__main__":
    main()
