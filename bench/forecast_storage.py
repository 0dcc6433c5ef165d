"""Benchmark: the forecasts table at the issue's size budget, and the as-of reads the loop makes from it.

    .venv/bin/python bench/forecast_storage.py                     # SQLite (a temp file)
    .venv/bin/python bench/forecast_storage.py --backend postgres  # KWX_TEST_PG_URL's server, a throwaway database

One year of 7 cities × (2 deterministic models + a 31-member and a 51-member ensemble) × 4 runs a day, each run
forecasting the climate days of leads 0-3 (the budget: ~3.4 M rows), written through kwx's upsert; prints the
rows, the bytes of the table with its indexes (bytes per row), the load time, and the time of the reads the
live loop and a replay make: one day's forecasts of every city public by a moment (`load_forecasts`), the error
scales of a day (`load_forecast_data`) and the newest forecast per city (`newest_forecasts`), median of 20.
Target: the year within ~1 GB, each read well under a tick (9 s) — in practice milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd
from _workspace import scratch_database

YEAR_START = date(2024, 11, 16)
DAYS = 365
MODELS = (("gfs_seamless", 1, False), ("ecmwf_ifs025", 1, False), ("ncep_gefs025", 31, True),
          ("ecmwf_ifs025_ensemble", 51, True))
RUN_HOURS = (0, 6, 12, 18)
LEADS = (0, 1, 2, 3)


def year_of_forecasts(city: str, seed: int) -> pd.DataFrame:
    """One city's year at the budget's shape: every run × lead × member, a plausible high, public 6 h on."""
    rng = np.random.default_rng(seed)
    frames = []
    days = np.arange(DAYS)
    base = np.datetime64(YEAR_START).astype("datetime64[D]").astype(np.int64)
    for model, members, ensemble in MODELS:
        for lead in LEADS:
            for hour in RUN_HOURS:
                # the run of the UTC day `lead` days before the climate day, at `hour` UTC
                run_ts = (base + days - lead) * 86_400 + hour * 3600
                high = 70 + 15 * np.sin(2 * np.pi * days / 365)[:, None] + rng.normal(0, 3, (DAYS, members))
                frames.append(pd.DataFrame({
                    "city": city,
                    "climate_date": np.repeat((base + days).astype("datetime64[D]").astype(object), members),
                    "model": model, "member": np.tile(np.arange(members), DAYS),
                    "run_ts": np.repeat(run_ts, members), "available_ts": np.repeat(run_ts + 6 * 3600, members),
                    "lead_days": lead, "high_f": np.round(high.ravel(), 1), "ensemble": ensemble,
                    "source": "bench",
                }))
    return pd.concat(frames, ignore_index=True)


def _median_ms(call, repeats: int = 20) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()

    from sqlalchemy import text

    from kwx.cities import CITIES
    from kwx.data import migrations
    from kwx.data.db import make_engine
    from kwx.data.forecasts import load_forecast_data, load_forecasts, newest_forecasts
    from kwx.data.store import upsert_frames

    with scratch_database(args.backend) as url:
        migrations.upgrade(url)
        engine = make_engine(url)
        rows, started = 0, time.perf_counter()
        for i, city in enumerate(sorted(CITIES)):
            frame = year_of_forecasts(city, seed=i)
            upsert_frames(engine, {"forecasts": frame})
            rows += len(frame)
            print(f"  {city:<13} {len(frame):>9,} rows loaded ({time.perf_counter() - started:.0f} s)")
        load_seconds = time.perf_counter() - started
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("ANALYZE forecasts"))
                size = conn.execute(text("SELECT pg_total_relation_size('forecasts')")).scalar()
            else:
                size = conn.execute(text("SELECT sum(pgsize) FROM dbstat WHERE name IN (SELECT name FROM "
                                         "sqlite_master WHERE tbl_name = 'forecasts')")).scalar()
        day = YEAR_START + timedelta(days=200)
        moment = int(pd.Timestamp(day, tz="UTC").timestamp()) + 12 * 3600
        cities = sorted(CITIES)
        tick_read = _median_ms(lambda: load_forecasts(engine, cities, day - timedelta(days=1),
                                                      day + timedelta(days=2), available_until_ts=moment))
        scales = _median_ms(lambda: load_forecast_data(engine, ["chicago"], day, day + timedelta(days=1)), 5)
        newest = _median_ms(lambda: newest_forecasts(engine, moment))
        engine.dispose()
    print(f"backend {args.backend}: {rows:,} forecast rows (7 cities, 1 year, 2 models + 31/51-member ensembles, "
          f"4 runs a day, leads 0-3) in {load_seconds:.0f} s")
    print(f"table with indexes: {size / 2**20:,.0f} MiB = {size / rows:.0f} B/row (target: within ~1 GB)")
    print(f"reads (median): a tick's forecasts of 7 cities x 4 days {tick_read:.1f} ms; one city's day with its "
          f"error scales {scales:.0f} ms; newest per city {newest:.1f} ms")


if __name__ == "__main__":
    main()
