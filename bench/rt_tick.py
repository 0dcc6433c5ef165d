"""Benchmark: serve-rt ticks over all seven cities' open markets (~50-80 at a time) from local data.

    .venv/bin/python bench/rt_tick.py [--mode both|signals|paper] [--rounds N] [--max-ticks N]
        [--feature-set elasticnet_forecast] [--without-forecasts]

Builds demo data for every city, trains small chicago models for the three brackets into a temporary
MLflow store and gives every city its own copy of its bracket's model (21 models, as in production; the
tick's cost does not depend on which city trained a model), then replays one full day at 9-second
ticks through the same loop as `kwx serve-rt --replay`. Prints p50/p99 tick latency (excluding
network: the data is local), markets per tick, and the replay rate in simulated minutes per second.
Paper mode runs the same day with the paper broker: every tick also steps the order policy, matches
resting orders against new candles and writes orders and fills (orders, cancels and fills are printed).
``--mode both`` (the default) replays the day in paper mode, then in signals mode, each on its own copy of the
same prepared data, with the same models, and is judged by the ratio of the two days' walls (target paper <= 1.3x
signals) and by the signals tick's p99 (target < 5 ms; a whole day < 15 s). ``--rounds 2`` replays each mode twice
in the order paper, signals, signals, paper, so a machine that slows down or speeds up during the run weighs on
both modes alike; a mode's day is then the mean of its rounds and its latencies are pooled. ``--max-ticks``
replays only the day's first ticks.
``--feature-set`` trains the models on another set (default: kwx's default); ``--without-forecasts`` deletes
the stored forecasts before the replay, so the same tick runs without reading or building forecast features:
the p99 ratio of a run with and one without is the forecasts' cost (target <= 1.2x).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from contextlib import closing
from datetime import date
from pathlib import Path

from _result import BenchResult, Judged, add_json_option, report
from _workspace import scratch_workspace

DAY = date(2025, 7, 20)
BRACKETS = ("between", "greater", "less")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["both", "signals", "paper"], default="both")
    parser.add_argument("--rounds", type=int, default=1,
                        help="replay each mode N times, alternating the order (paper, signals, signals, paper, ...)")
    parser.add_argument("--max-ticks", type=int, default=None, help="replay only the day's first N ticks")
    parser.add_argument("--feature-set", default=None, help="the models' feature set (default: kwx's default)")
    parser.add_argument("--without-forecasts", action="store_true",
                        help="delete the stored forecasts before the replay (a relative-set baseline)")
    add_json_option(parser)
    args = parser.parse_args()

    import mlflow
    from mlflow.tracking import MlflowClient

    from kwx.cities import CITIES
    from kwx.config import RtConfig, TrainConfig
    from kwx.data.demo import load_demo
    from kwx.domain.features import DEFAULT_FEATURE_SET
    from kwx.execution import records
    from kwx.registry.versions import model_name
    from kwx.rt.engine import ModelHandle
    from kwx.rt.replay import replay_day
    from kwx.training import runner

    feature_set = args.feature_set or DEFAULT_FEATURE_SET
    modes = ["paper", "signals"] if args.mode == "both" else [args.mode]
    schedule = [(mode, n) for n in range(args.rounds) for mode in (modes if n % 2 == 0 else modes[::-1])]
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    latencies_of: dict[str, list[float]] = {mode: [] for mode in modes}
    with scratch_workspace() as (tmp, engine):
        load_demo(engine, sorted(CITIES), date(2025, 6, 1), date(2025, 7, 22), seed=3)
        for bracket in BRACKETS:
            runner.train(TrainConfig.model_validate({
                "city": "chicago", "bracket": bracket, "start": "2025-06-01", "end": "2025-07-22",
                "train_days": 40, "test_days": 7, "step_days": 7, "trials": 2, "cv_splits": 3,
                "feature_set": feature_set}), engine)
        if args.without_forecasts:
            from sqlalchemy import text

            with engine.begin() as conn:
                conn.execute(text("DELETE FROM forecasts"))
        client = MlflowClient()
        models = {b: mlflow.sklearn.load_model(f"models:/{model_name('chicago', b)}/1") for b in BRACKETS}
        # One model object per city x bracket, as production has: the tick predicts once per model.
        per_market = {(c, b): copy.deepcopy(models[b]) for c in CITIES for b in models}

        def every_city_uses_chicago(city, bracket, day):
            return ModelHandle(per_market[city, bracket], f"{model_name(city, bracket)}/bench", "bench",
                               feature_set)  # what runner.train trained them on

        for mode, round_number in schedule:
            config = RtConfig.model_validate({"markets": [{"city": c, "bracket": b} for c in sorted(CITIES)
                                                          for b in BRACKETS],
                                              "tick_seconds": 9, "execution": {"mode": mode}})
            # Each replay runs on its own copy of the prepared database: a mode replaying after another would
            # overwrite that one's signal rows and completed candles instead of writing them (~2 s cheaper).
            replayed = _fresh_copy(tmp / "kwx.db", tmp / f"kwx-{mode}-{round_number}.db")
            latencies, markets = [], []

            def on_tick(tick, _result, latencies=latencies, markets=markets):
                latencies.append(tick["latency_ms"])
                markets.append(tick["markets"])

            started = time.perf_counter()
            result = replay_day(config, replayed, client, DAY, on_tick=on_tick, resolver=every_city_uses_chicago,
                                max_ticks=args.max_ticks)
            wall = time.perf_counter() - started
            latencies_of[mode] += latencies
            latencies.sort()
            run = {"ticks": result.ticks, "wall_s": round(wall, 2), "p50_ms": statistics.median(latencies),
                   "p99_ms": latencies[int(0.99 * len(latencies))], "max_ms": latencies[-1],
                   "markets_median": statistics.median(markets), "signal_rows": result.rows, "sized": result.sized}
            label = f"{mode}" + (f" (round {round_number + 1})" if args.rounds > 1 else "")
            print(f"{label}: ticks {result.ticks:,} over {DAY} for {len(CITIES)} cities; open markets per tick: "
                  f"median {run['markets_median']:.0f}, max {max(markets)}; {result.sized:,} sized signals", flush=True)
            print(f"{label}: tick latency p50 {run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, "
                  f"max {run['max_ms']:.1f} ms; the ticks replayed in {wall:.1f} s = "
                  f"{result.ticks * 9 / 60 / wall:,.0f} simulated minutes/s ({result.rows:,} signal rows written; "
                  f"features {feature_set}{', forecasts deleted' if args.without_forecasts else ''})", flush=True)
            if mode == "paper":
                orders = records.orders(replayed, "paper")
                cancels = int(orders["status"].eq("cancelled").sum())
                run |= {"orders": len(orders), "cancelled": cancels, "fills": len(records.fills(replayed, "paper"))}
                print(f"{label}: {run['orders']:,} orders ({cancels:,} cancelled), {run['fills']:,} fills written",
                      flush=True)
            runs[mode].append(run)
            replayed.dispose()
    figures = {mode: _combined(mode_runs, latencies_of[mode]) for mode, mode_runs in runs.items()}

    judged = []
    full_day = args.max_ticks is None
    if "signals" in figures:
        judged.append(Judged("signals tick p99", figures["signals"]["p99_ms"], "<", 5, " ms"))
        if full_day:
            judged.append(Judged("signals day", figures["signals"]["wall_s"], "<", 15, " s"))
    if len(figures) == 2:
        judged.insert(0, Judged("paper day / signals day", figures["paper"]["wall_s"] / figures["signals"]["wall_s"],
                                "<=", 1.3))
    summary = "; ".join(f"{mode}: p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, {f['ticks']:,} ticks in "
                        f"{f['wall_s']:.1f} s" + (f" ({f['orders']:,} orders, {f['fills']:,} fills)"
                                                   if mode == "paper" else "")
                        for mode, f in figures.items())
    ticks = f"first {args.max_ticks:,} ticks" if args.max_ticks else "one day"
    report(BenchResult(
        bench="rt_tick", command="bench/rt_tick.py" + (f" --rounds {args.rounds}" if args.rounds > 1 else "")
        + (f" --max-ticks {args.max_ticks}" if args.max_ticks else ""),
        what=f"serve-rt replay, 7 cities x 3 brackets (21 models), {ticks} at 9 s, SQLite"
        + (f", each mode {args.rounds} times in alternating order (mean day)" if args.rounds > 1 else ""),
        summary=summary, figures=figures, judged=judged), args.json)


def _combined(runs: list[dict], latencies: list[float]) -> dict:
    """One mode's figures over its rounds: the mean day, the pooled latencies' percentiles, the first round's
    counts (every round replays the same day), and each round's day."""
    if len(runs) == 1:
        return runs[0]
    latencies = sorted(latencies)
    return runs[0] | {"wall_s": round(statistics.fmean(r["wall_s"] for r in runs), 2),
                      "p50_ms": statistics.median(latencies), "p99_ms": latencies[int(0.99 * len(latencies))],
                      "max_ms": latencies[-1], "round_walls_s": [r["wall_s"] for r in runs]}


def _fresh_copy(prepared: Path, copy: Path):
    """An engine on a copy of the ``prepared`` SQLite database, taken through SQLite's backup (the WAL's pages too)."""
    import sqlite3

    from kwx.data.db import make_engine

    with closing(sqlite3.connect(prepared)) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    return make_engine(f"sqlite:///{copy}")


if __name__ == "__main__":
    main()
