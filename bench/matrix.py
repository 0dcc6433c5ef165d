"""Benchmark: `kwx train --matrix` end to end on demo data, once per worker count.

    .venv/bin/python bench/matrix.py                                   # all 21 configs, 2 trials, 1 and 2 workers
    .venv/bin/python bench/matrix.py --configs 'elasticnet_*_between.yaml' --trials 3 --workers 2

Builds demo data for every city of the chosen configs over their date range into a temporary SQLite file
(timed), then runs the matrix as `kwx train --matrix` does (prepare every config, then train each into its
own parent run and registered model) into a fresh temporary MLflow store per worker count, and prints the
wall time per run and per config.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date
from pathlib import Path

import yaml
from _workspace import scratch_workspace

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["elasticnet_*.yaml"],
                        help="config paths or globs relative to configs/ (default: all 21)")
    parser.add_argument("--trials", type=int, default=2, help="path trials per window (the configs say 12)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to run")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="further overrides for every config, e.g. cv_splits=3")
    args = parser.parse_args()

    import mlflow

    from kwx.config import MatrixConfig, parse_config
    from kwx.data.demo import load_demo
    from kwx.training import matrix

    overrides = {"trials": args.trials} | {k: yaml.safe_load(v) for k, _, v in
                                           (item.partition("=") for item in args.overrides)}
    spec = parse_config({"configs": args.configs, "overrides": overrides}, MatrixConfig, "bench",
                        context={"config_dir": REPO / "configs"})
    members = spec.load_members()
    windows = {}  # city -> (first, last) day any of its configs needs
    for _, cfg in members:
        first, last = windows.get(cfg.city, (cfg.start, cfg.end))
        windows[cfg.city] = (min(first, cfg.start), max(last, cfg.end))
    print(f"settings: {len(members)} configs ({', '.join(p.stem.removeprefix('elasticnet_') for p, _ in members)}); "
          f"overrides {overrides}; workers {args.workers}; {os.cpu_count()} CPU cores")

    with scratch_workspace() as (tmp, engine):
        started = time.perf_counter()
        candles = 0
        for city, (first, last) in windows.items():
            candles += load_demo(engine, [city], first, last, seed=42)["candles"]
        print(f"demo data, {len(windows)} cities ({', '.join(f'{c} {a}..{b}' for c, (a, b) in windows.items())}): "
              f"{candles:,} candles in {time.perf_counter() - started:.1f} s")

        per_config: dict[str, dict[int, float]] = {}
        for workers in args.workers:
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / f'mlflow-{workers}.db'}"
            started = time.perf_counter()
            entries, failures = matrix.prepare_all(members, engine)
            prepared = time.perf_counter() - started
            results = matrix.train_matrix(entries, engine, workers=workers)
            wall = time.perf_counter() - started
            mlflow.set_tracking_uri(None)
            n_windows = sum(len(r.summary.versions) for r in results)
            print(f"workers={workers}: {len(results)} configs, {n_windows} windows, wall {wall:.1f} s "
                  f"(prepare {prepared:.1f} s, train {wall - prepared:.1f} s)"
                  + (f"; could not train: {', '.join(p.name for p in failures)}" if failures else ""))
            for r in results:
                per_config.setdefault(r.path.name, {})[workers] = r.seconds

    print("per config (s): " + " ".join(f"{'workers=' + str(w):>10}" for w in args.workers))
    for name, seconds in per_config.items():
        print(f"  {name:<30}" + " ".join(f"{seconds.get(w, float('nan')):>10.1f}" for w in args.workers))
    print(f"(bench date {date.today()})")


if __name__ == "__main__":
    main()
