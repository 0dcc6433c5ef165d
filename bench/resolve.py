"""Benchmark: model resolution by date through the registry cache, cold and warm.

    .venv/bin/python bench/resolve.py

Trains and promotes a small chicago/between run into a temporary MLflow store, then times
``RegistryCache.load_model_for_date``: cold (a fresh cache: registry query + model load) and warm
(the live loop's per-tick path). Target: warm < 1 ms, cold < 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, date, datetime

from _result import BenchResult, Judged, add_json_option, report
from _workspace import scratch_workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_json_option(parser)
    args = parser.parse_args()

    import mlflow
    from mlflow.tracking import MlflowClient

    from kwx.config import TrainConfig
    from kwx.data.demo import load_demo
    from kwx.registry.cache import RegistryCache
    from kwx.registry.promotion import promote
    from kwx.report import infrastructure_checks
    from kwx.training import runner

    with scratch_workspace() as (_tmp, engine):
        load_demo(engine, ["chicago"], date(2025, 7, 1), date(2025, 8, 4), seed=1)
        config = TrainConfig.model_validate({
            "city": "chicago", "bracket": "between", "start": "2025-07-01", "end": "2025-08-04", "train_days": 14,
            "test_days": 7, "step_days": 7, "trials": 2, "cv_splits": 3, "acceptance": {"min_windows": 1}})
        summary = runner.train(config, engine, workers=1)
        client = MlflowClient()
        # the bench times resolution, not the tiny run's skill: promoted without its acceptance gates
        promote(client, summary.parent_run_id, "Production", now=datetime.now(UTC), gates=[],
                infrastructure=infrastructure_checks(engine, client, summary.parent_run_id))
        day = date(2025, 7, 20)

        cold = []
        for _ in range(5):
            cache = RegistryCache(client)
            started = time.perf_counter()
            cache.load_model_for_date("chicago", "between", day)
            cold.append(time.perf_counter() - started)
        warm = []
        for _ in range(10_000):
            started = time.perf_counter()
            cache.load_model_for_date("chicago", "between", day)
            warm.append(time.perf_counter() - started)
        warm.sort()
        print(f"windows registered: {len(summary.versions)}; registry reads by the warm cache: {cache.registry_reads}")
        print(f"cold resolution (fresh cache, query + load): median {statistics.median(cold):.3f} s, "
              f"max {max(cold):.3f} s over {len(cold)}")
        print(f"warm resolution: median {1e6 * statistics.median(warm):.1f} us, "
              f"p99 {1e6 * warm[int(0.99 * len(warm))]:.1f} us over {len(warm):,} calls")
        mlflow.set_tracking_uri(None)
    warm_us, cold_s = 1e6 * statistics.median(warm), statistics.median(cold)
    report(BenchResult(
        bench="resolve", command="bench/resolve.py",
        what=f"model resolution by date, {len(summary.versions)} registered versions",
        summary=f"warm {warm_us:.1f} µs (median of {len(warm):,}), cold {cold_s * 1000:.0f} ms (median of {len(cold)})",
        figures={"warm_median_us": warm_us, "warm_p99_us": 1e6 * warm[int(0.99 * len(warm))], "cold_median_s": cold_s,
                 "cold_max_s": max(cold)},
        judged=[Judged("warm resolution", warm_us, "<", 1000, " µs"), Judged("cold resolution", cold_s, "<", 2, " s")]),
        args.json)


if __name__ == "__main__":
    main()
