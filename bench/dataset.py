"""Benchmark: one city's dataset over 365 days of demo data (~3 million candles), without and with forecasts.

    .venv/bin/python bench/dataset.py                  # SQLite (a temp file)
    .venv/bin/python bench/dataset.py --backend postgres  # KWX_TEST_PG_URL's server, a throwaway database
    .venv/bin/python bench/dataset.py --feature-sets elasticnet_rich   # one set only
    .venv/bin/python bench/dataset.py --days 90        # a quarter: `make bench`'s quick size
    .venv/bin/python bench/dataset.py --rounds 2       # each set twice, alternating (`make bench FULL=1`)

Prints the time to generate+load the demo data, the forecasts table's rows and bytes (data and indexes) for
that city-year, then per feature set and bracket the rows and seconds to build the dataset, the total rows/s,
and the peak RSS of the process that built it (a fresh child per set, so the figure is the dataset's own, not
the generator's). The brackets are built as a matrix prepares a city's configs: one read of the forecasts
serves all three (``forecasts_shared``). With both default sets it prints the ratio forecast / relative: the
cost of reading forecasts and computing their features (target ≤ 1.2×). ``--rounds 2`` builds the sets in the
order relative, forecast, forecast, relative, so a machine that slows down or speeds up weighs on both alike; a
set's time is then the mean of its rounds and its peak RSS the highest. Target for the city-year: the
default set (elasticnet_relative) in < 8 s and every set within 1 GB peak RSS on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from _result import BenchResult, Judged, add_json_option, report
from _workspace import scratch_database, settle_postgres

END = date(2025, 11, 15)
CITY_YEAR = 365
BRACKETS = ("between", "greater", "less")


def _peak_rss_mb() -> float:
    """This process's own high-water RSS (VmHWM; ru_maxrss would include the forking parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(url: str, feature_set: str, start: date) -> dict:
    from kwx.data.dataset import forecasts_shared, load_dataset
    from kwx.data.db import make_engine

    engine = make_engine(url)
    rows, per_bracket = 0, {}
    started = time.perf_counter()
    with forecasts_shared():  # as a matrix prepares a city's brackets: the first reads the forecasts for all
        for bracket in BRACKETS:
            t = time.perf_counter()
            frame = load_dataset(engine, "chicago", bracket, start, END, feature_set)
            per_bracket[bracket] = {"rows": len(frame), "seconds": round(time.perf_counter() - t, 2)}
            rows += len(frame)
            del frame
    seconds = time.perf_counter() - started
    peak_mb = _peak_rss_mb()
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
            "peak_rss_mb": round(peak_mb), "per_bracket": per_bracket}


def _combined(measured: list[dict]) -> dict:
    """One set's figures over its rounds: the mean time (rows/s of it), the highest peak RSS, the first round's
    per-bracket figures, and each round's time."""
    if len(measured) == 1:
        return measured[0]
    seconds = round(sum(m["seconds"] for m in measured) / len(measured), 2)
    return measured[0] | {"seconds": seconds, "rows_per_s": round(measured[0]["rows"] / seconds),
                          "peak_rss_mb": max(m["peak_rss_mb"] for m in measured),
                          "round_seconds": [m["seconds"] for m in measured]}


def forecast_storage(url: str) -> tuple[int, int | None]:
    """Rows of the forecasts table and its bytes with indexes (PostgreSQL's own count; SQLite's dbstat)."""
    from sqlalchemy import text

    from kwx.data.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT count(*) FROM forecasts")).scalar()
            if engine.dialect.name == "postgresql":
                size = conn.execute(text("SELECT pg_total_relation_size('forecasts')")).scalar()
            else:
                size = conn.execute(text("SELECT sum(pgsize) FROM dbstat WHERE name IN (SELECT name FROM "
                                         "sqlite_master WHERE tbl_name = 'forecasts')")).scalar()
    finally:
        engine.dispose()
    return rows, size


def prepare(url: str, start: date) -> float:
    from kwx.data import migrations
    from kwx.data.db import make_engine
    from kwx.data.demo import load_demo

    migrations.upgrade(url)
    engine = make_engine(url)
    started = time.perf_counter()
    load_demo(engine, ["chicago"], start, END, seed=42)
    engine.dispose()
    seconds = time.perf_counter() - started
    if not url.startswith("sqlite"):
        settle_postgres(url)  # the load's writes reach the disk now, not under the first set's reads
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--feature-sets", nargs="+", default=["elasticnet_relative", "elasticnet_forecast"])
    parser.add_argument("--days", type=int, default=CITY_YEAR, help="climate days of data (default a city-year)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="build each set N times, alternating the order (relative, forecast, forecast, ...)")
    parser.add_argument("--measure-url", help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    start = END - timedelta(days=args.days - 1)
    if args.measure_url:
        print(json.dumps(measure(args.measure_url, args.feature_sets[0], start)))
        return

    with scratch_database(args.backend) as url:
        load_seconds = prepare(url, start)
        forecast_rows, forecast_bytes = forecast_storage(url)
        rounds: dict[str, list[dict]] = {feature_set: [] for feature_set in args.feature_sets}
        for n in range(args.rounds):
            for feature_set in args.feature_sets if n % 2 == 0 else args.feature_sets[::-1]:
                child = subprocess.run([sys.executable, __file__, "--measure-url", url, "--feature-sets", feature_set,
                                        "--days", str(args.days)],
                                       capture_output=True, text=True, check=True)
                rounds[feature_set].append(json.loads(child.stdout))
        results = {feature_set: _combined(measured) for feature_set, measured in rounds.items()}
    print(f"backend            {args.backend}")
    print(f"demo generate+load {load_seconds:.1f} s (chicago, {start}..{END})")
    size = f"{forecast_bytes / 2**20:.1f} MiB with indexes" if forecast_bytes else "size unknown"
    per_row = f" ({forecast_bytes / max(forecast_rows, 1):.0f} B/row)" if forecast_bytes else ""
    print(f"forecasts stored   {forecast_rows:,} rows, {size}{per_row}")
    for feature_set, result in results.items():
        for bracket, figures in result["per_bracket"].items():
            print(f"{feature_set:<20} {bracket:<8} {figures['rows']:>9,} rows in {figures['seconds']:.2f} s")
        print(f"{feature_set:<20} total    {result['rows']:>9,} rows in {result['seconds']:.2f} s "
              f"= {result['rows_per_s']:,} rows/s; peak RSS {result['peak_rss_mb']:,} MB")
    judged = []
    if {"elasticnet_relative", "elasticnet_forecast"} <= set(results):
        judged.append(Judged("forecast set / relative set time", results["elasticnet_forecast"]["seconds"]
                             / results["elasticnet_relative"]["seconds"], "<=", 1.2))
    if args.days == CITY_YEAR:
        if "elasticnet_relative" in results:
            judged.append(Judged("elasticnet_relative city-year", results["elasticnet_relative"]["seconds"], "<", 8,
                                 " s"))
        judged += [Judged(f"{feature_set} peak RSS", result["peak_rss_mb"], "<", 1024, " MB")
                   for feature_set, result in results.items()]
    if args.rounds > 1:
        print("rounds: " + "; ".join(f"{feature_set} {', '.join(f'{t:.2f}' for t in result['round_seconds'])} s"
                                     for feature_set, result in results.items()))
    rows = next(iter(results.values()))["rows"]
    summary = "; ".join(f"{feature_set.removeprefix('elasticnet_')} {result['seconds']:.1f} s, peak RSS "
                        f"{result['peak_rss_mb']:,} MB" for feature_set, result in results.items())
    sets = " ".join(args.feature_sets)
    report(BenchResult(
        bench=f"dataset-{args.backend}",
        command=f"bench/dataset.py --backend {args.backend} --days {args.days} --feature-sets {sets}"
        + (f" --rounds {args.rounds}" if args.rounds > 1 else ""),
        what=f"chicago datasets, all three brackets, {args.days} days ({rows:,} rows), {args.backend}",
        summary=summary, figures={"demo_load_s": round(load_seconds, 1), **results}, judged=judged), args.json)


if __name__ == "__main__":
    main()
