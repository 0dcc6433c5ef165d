"""Benchmark: the elasticnet_rich dataset for one city over 365 days of demo data (~3 million candles).

    .venv/bin/python bench/dataset.py                  # SQLite (a temp file)
    .venv/bin/python bench/dataset.py --backend postgres  # KWX_TEST_PG_URL's server, a throwaway database

Prints the time to generate+load the demo data, then for each bracket the rows and seconds to build
the dataset, the total rows/s, and the peak RSS of the process that built it (a fresh child, so the
figure is the dataset's own, not the generator's). Target: < 30 s and < 4 GB on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

START, END = date(2024, 11, 16), date(2025, 11, 15)
BRACKETS = ("between", "greater", "less")


def _peak_rss_mb() -> float:
    """This process's own high-water RSS (VmHWM; ru_maxrss would include the forking parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(url: str) -> dict:
    from kwx.data.dataset import load_dataset
    from kwx.data.db import make_engine

    engine = make_engine(url)
    rows, per_bracket = 0, {}
    started = time.perf_counter()
    for bracket in BRACKETS:
        t = time.perf_counter()
        frame = load_dataset(engine, "chicago", bracket, START, END, "elasticnet_rich")
        per_bracket[bracket] = {"rows": len(frame), "seconds": round(time.perf_counter() - t, 2)}
        rows += len(frame)
        del frame
    seconds = time.perf_counter() - started
    peak_mb = _peak_rss_mb()
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
            "peak_rss_mb": round(peak_mb), "per_bracket": per_bracket}


def prepare(url: str) -> float:
    from kwx.data import migrations
    from kwx.data.db import make_engine
    from kwx.data.demo import load_demo

    migrations.upgrade(url)
    engine = make_engine(url)
    started = time.perf_counter()
    load_demo(engine, ["chicago"], START, END, seed=42)
    engine.dispose()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--measure-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_url:
        print(json.dumps(measure(args.measure_url)))
        return

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    with tempfile.TemporaryDirectory() as tmp:
        if args.backend == "sqlite":
            url, cleanup = f"sqlite:///{Path(tmp) / 'bench.db'}", None
        else:
            admin_url = os.environ.get("KWX_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
            name = f"kwx_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)

            def cleanup():
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        try:
            load_seconds = prepare(url)
            child = subprocess.run([sys.executable, __file__, "--measure-url", url], capture_output=True, text=True,
                                   check=True)
            result = json.loads(child.stdout)
        finally:
            if cleanup:
                cleanup()
    print(f"backend            {args.backend}")
    print(f"demo generate+load {load_seconds:.1f} s (chicago, {START}..{END})")
    for bracket, figures in result["per_bracket"].items():
        print(f"dataset {bracket:<10} {figures['rows']:>9,} rows in {figures['seconds']:.2f} s")
    print(f"dataset total      {result['rows']:>9,} rows in {result['seconds']:.2f} s "
          f"= {result['rows_per_s']:,} rows/s; peak RSS {result['peak_rss_mb']:,} MB")


if __name__ == "__main__":
    main()
