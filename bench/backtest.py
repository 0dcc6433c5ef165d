"""Benchmark: a maker-first backtest of one city × bracket over 90 days of demo data, and a blend grid.

    .venv/bin/python bench/backtest.py [--repeats 3]

Setup (not timed): chicago demo data 2025-05-01..2025-10-05 in a temporary SQLite DB, and a quick
walk-forward run (60-day training windows, weekly test weeks, 3 trials) whose test weeks cover the
90 backtest days 2025-07-01..2025-09-28, so every day is traded out of sample. Then it times
`run_backtest` (load + features + model probabilities + strategy and both baselines + MLflow logging)
and the same with a 7-weight blend grid (0.5:0.8:0.05), and prints the median of ``--repeats`` runs.
Target: the 90-day backtest in under 2 minutes on this 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date

from _result import BenchResult, Judged, add_json_option, report
from _workspace import scratch_workspace

START, END = date(2025, 7, 1), date(2025, 9, 28)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    add_json_option(parser)
    args = parser.parse_args()

    from kwx.backtest.runner import parse_grid, run_backtest
    from kwx.config import RtConfig, TrainConfig
    from kwx.data.demo import load_demo
    from kwx.training import runner

    with scratch_workspace() as (_tmp, engine):
        t = time.perf_counter()
        load_demo(engine, ["chicago"], date(2025, 5, 1), date(2025, 10, 5), seed=42)
        print(f"setup: demo data in {time.perf_counter() - t:.1f} s", flush=True)
        t = time.perf_counter()
        train = TrainConfig.model_validate({"city": "chicago", "bracket": "between", "start": "2025-05-02",
                                            "end": "2025-10-05", "train_days": 60, "test_days": 7, "step_days": 7,
                                            "trials": 3})
        summary = runner.train(train, engine, workers=2)
        print(f"setup: {len(summary.versions)} windows trained in {time.perf_counter() - t:.1f} s", flush=True)

        config = RtConfig.model_validate({"markets": [{"city": "chicago", "bracket": "between"}]})
        pairs = [("chicago", "between")]
        figures = {}
        for label, grid in (("single weight", None), ("blend grid 0.5:0.8:0.05", parse_grid("0.5:0.8:0.05"))):
            walls, runs = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                runs.append(run_backtest(config, engine, pairs, START, END, run_id=summary.parent_run_id, grid=grid))
                walls.append(time.perf_counter() - t)
            run = runs[-1]
            timing = {k: statistics.median(r.timings[k] for r in runs)
                      for k in ("load_seconds", "simulate_seconds", "log_seconds")}
            s = run.strategy.summary
            print(f"{label}: {(END - START).days + 1} days, {run.timings['decision_rows']:,.0f} minute × market "
                  f"decisions; median wall {statistics.median(walls):.1f} s of {args.repeats} "
                  f"(load {timing['load_seconds']:.1f} s, trade {timing['simulate_seconds']:.1f} s, "
                  f"MLflow {timing['log_seconds']:.1f} s); w={run.strategy.blend_weight:g}: "
                  f"PnL ${s['total_pnl']:,.0f}, "
                  f"daily Sharpe {s['daily_sharpe']:.3f}, {s['n_fills']:,.0f} fills", flush=True)
            figures[label] = {"median_wall_s": round(statistics.median(walls), 2), **timing,
                              "decision_rows": run.timings["decision_rows"], "fills": s["n_fills"]}
    days = (END - START).days + 1
    single, grid = (figures[label]["median_wall_s"] for label in figures)
    report(BenchResult(
        bench="backtest", command=f"bench/backtest.py --repeats {args.repeats}",
        what=f"maker-first backtest, chicago/between, {days} days "
             f"({figures['single weight']['decision_rows']:,.0f} minute x market decisions)",
        summary=f"{single:.1f} s; with a 7-weight blend grid {grid:.1f} s (median of {args.repeats})",
        figures=figures, judged=[Judged(f"{days}-day backtest", single, "<", 120, " s")]), args.json)


if __name__ == "__main__":
    main()
