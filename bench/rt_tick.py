"""Benchmark: serve-rt ticks over all seven cities' open markets (~50-80 at a time) from local data.

    .venv/bin/python bench/rt_tick.py [--mode signals|paper] [--feature-set elasticnet_forecast]
        [--without-forecasts]

Builds demo data for every city, trains small chicago models for the three brackets into a temporary
MLflow store and gives every city its own copy of its bracket's model (21 models, as in production; the
tick's cost does not depend on which city trained a model), then replays one full day at 9-second
ticks through the same loop as `kwx serve-rt --replay`. Prints p50/p99 tick latency (excluding
network: the data is local), markets per tick, and the replay rate in simulated minutes per second.
``--mode paper`` runs the same day with the paper broker: every tick also steps the order policy, matches
resting orders against new candles and writes orders and fills (and orders/fills per day are printed).
``--feature-set`` trains the models on another set (default: kwx's default); ``--without-forecasts`` deletes
the stored forecasts before the replay, so the same tick runs without reading or building forecast features:
the two runs' p99 ratio is the forecasts' cost (target ≤ 1.2×).
Target: p99 < 100 ms (paper too), a day < 60 s.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from datetime import date

from _workspace import scratch_workspace

DAY = date(2025, 7, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["signals", "paper"], default="signals")
    parser.add_argument("--feature-set", default=None, help="the models' feature set (default: kwx's default)")
    parser.add_argument("--without-forecasts", action="store_true",
                        help="delete the stored forecasts before the replay (a relative-set baseline)")
    args = parser.parse_args()

    import mlflow
    from mlflow.tracking import MlflowClient

    from kwx.cities import CITIES
    from kwx.config import RtConfig, TrainConfig
    from kwx.data.demo import load_demo
    from kwx.domain.features import DEFAULT_FEATURE_SET
    from kwx.registry.versions import model_name
    from kwx.rt.engine import ModelHandle
    from kwx.rt.replay import replay_day
    from kwx.training import runner

    feature_set = args.feature_set or DEFAULT_FEATURE_SET
    with scratch_workspace() as (_tmp, engine):
        load_demo(engine, sorted(CITIES), date(2025, 6, 1), date(2025, 7, 22), seed=3)
        for bracket in ("between", "greater", "less"):
            runner.train(TrainConfig.model_validate({
                "city": "chicago", "bracket": bracket, "start": "2025-06-01", "end": "2025-07-22",
                "train_days": 40, "test_days": 7, "step_days": 7, "trials": 2, "cv_splits": 3,
                "feature_set": feature_set}), engine)
        if args.without_forecasts:
            from sqlalchemy import text

            with engine.begin() as conn:
                conn.execute(text("DELETE FROM forecasts"))
        client = MlflowClient()
        models = {b: mlflow.sklearn.load_model(f"models:/{model_name('chicago', b)}/1")
                  for b in ("between", "greater", "less")}

        # One model object per city x bracket, as production has: the tick predicts once per model.
        per_market = {(c, b): copy.deepcopy(models[b]) for c in CITIES for b in models}

        def every_city_uses_chicago(city, bracket, day):
            return ModelHandle(per_market[city, bracket], f"{model_name(city, bracket)}/bench", "bench",
                               feature_set)  # what runner.train trained them on
        config = RtConfig.model_validate({"markets": [{"city": c, "bracket": b} for c in sorted(CITIES)
                                                      for b in ("between", "greater", "less")],
                                          "tick_seconds": 9, "execution": {"mode": args.mode}})
        latencies, markets = [], []

        def on_tick(tick, _result):
            latencies.append(tick["latency_ms"])
            markets.append(tick["markets"])

        started = time.perf_counter()
        result = replay_day(config, engine, client, DAY, on_tick=on_tick, resolver=every_city_uses_chicago)
        wall = time.perf_counter() - started
        latencies.sort()
        print(f"ticks {result.ticks:,} over {DAY} for {len(CITIES)} cities; open markets per tick: "
              f"median {statistics.median(markets):.0f}, max {max(markets)}; {result.sized:,} sized signals")
        p99 = latencies[int(0.99 * len(latencies))]
        print(f"tick latency: p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms")
        print(f"full day replayed in {wall:.1f} s = {result.ticks * 9 / 60 / wall:,.0f} simulated minutes/s "
              f"({result.rows:,} signal rows written; mode {args.mode}; features {feature_set}"
              f"{', forecasts deleted' if args.without_forecasts else ''})")
        if args.mode == "paper":
            from kwx.execution import records

            print(f"paper: {len(records.orders(engine, 'paper')):,} orders, {len(records.fills(engine, 'paper')):,} "
                  "fills written")


if __name__ == "__main__":
    main()
