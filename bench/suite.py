"""`make bench`: the benchmark suite, at quick sizes (default) or full ones, into one JSON result.

    .venv/bin/python bench/suite.py [--full] [--only train rt_tick ...] [--out PATH]

Runs each benchmark as its own process (its figures are printed as it goes), then writes
bench/results/quick.json or bench/results/full.json: the machine (cores, memory, load average at the start and
the end, Python and library versions, the commit) and every benchmark's figures with the ratios it is judged by.
The documentation's benchmark table (docs/reference/benchmarks.md, `make docs`) is generated from the committed
full result. A benchmark that fails is recorded as failed with its last lines of output; the suite goes on.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _result import Judged
from sqlalchemy.engine import make_url

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
VERSIONS = ("kwx", "numpy", "pandas", "scikit-learn", "scipy", "optuna", "mlflow", "sqlalchemy", "psycopg2-binary")
PG_URL = os.environ.get("KWX_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")

# name -> (script, arguments at quick size, arguments at full size)
SUITE: dict[str, tuple[str, list[str], list[str]]] = {
    "train": ("train.py", ["--workers", "1", "2", "--trials", "2"], ["--workers", "1", "2", "--trials", "6"]),
    "train-small": ("train.py", ["--small"], ["--small"]),
    "dataset-sqlite": ("dataset.py", ["--days", "90"], ["--rounds", "2"]),
    "dataset-postgres": ("dataset.py", ["--backend", "postgres", "--days", "90"],
                         ["--backend", "postgres", "--rounds", "2"]),
    "rt_tick": ("rt_tick.py", ["--max-ticks", "2400"], ["--rounds", "2"]),
    "resolve": ("resolve.py", [], []),
    "backtest": ("backtest.py", ["--repeats", "1"], ["--repeats", "3"]),
}


def machine() -> dict:
    """What a figure depends on beyond the code: the hardware, what else was running, the library versions."""
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:")) if Path("/proc/meminfo").exists() else 0
    versions = {}
    for package in VERSIONS:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip() or "unknown"
    # the results an earlier run wrote are no change to what is measured
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                 f":(exclude){RESULTS.relative_to(REPO)}"], cwd=REPO,
                                capture_output=True, text=True, check=False).stdout.strip())
    return {"cores": os.cpu_count(), "memory_gib": round(memory_kb / 2**20, 1), "platform": platform.platform(),
            "processor": platform.machine(), "cpu_model": cpu_model(), "python": platform.python_version(),
            "versions": versions,
            "commit": commit + ("+changes" if dirty else ""), "load_average_start": list(os.getloadavg())}


def cpu_model() -> str | None:
    """The CPU's model name as the kernel reports it: absolute times differ by it between machines of equal cores
    (this suite's figures took 1.4-1.8x as long on a 2.45 GHz EPYC guest as on the machine of earlier results)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return platform.processor() or None
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")]
    return names[0] if names else None


def postgres_reachable() -> bool:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def run_one(name: str, script: str, arguments: list[str]) -> dict:
    """One benchmark in its own process, its output passed through; its JSON result, or why it has none."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, str(BENCH / script), *arguments, "--json", str(out)]
        print(f"\n== {name}: bench/{script} {' '.join(arguments)}", flush=True)
        # The last benchmark's files (a city-year database, a dropped PostgreSQL one) still being written back
        # would slow this one's own writes: measured, the replay's day 15 s alone, 17-18 s after the datasets.
        os.sync()
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail: list[str] = []
        for line in process.stdout:
            print(line, end="", flush=True)
            tail = [*tail[-9:], line.rstrip()]
        wall = round(time.perf_counter() - started, 1)
        if process.wait() != 0 or not out.exists():
            return {"bench": name, "failed": True, "wall_s": wall, "output_tail": tail}
        return json.loads(out.read_text(encoding="utf-8")) | {"wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full sizes (the documented figures; ~15 min on 2 cores)")
    parser.add_argument("--only", nargs="+", choices=list(SUITE), help="run these benchmarks only")
    parser.add_argument("--out", type=Path, help="where to write the JSON (default bench/results/{quick,full}.json)")
    args = parser.parse_args()

    size = "full" if args.full else "quick"
    out = args.out or RESULTS / f"{size}.json"
    result = {"size": size, "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
              "benchmarks": []}
    print(f"kwx benchmarks, {size} sizes, on {result['machine']['cores']} cores, load average "
          f"{' '.join(f'{x:.2f}' for x in result['machine']['load_average_start'])}")
    for name in args.only or SUITE:
        script, quick, full = SUITE[name]
        if name == "dataset-postgres" and not postgres_reachable():
            host = make_url(PG_URL).render_as_string(hide_password=True)
            print(f"\n== {name}: skipped, no PostgreSQL at {host} (set KWX_TEST_PG_URL)")
            result["benchmarks"].append({"bench": name, "skipped": f"no PostgreSQL at {host}"})
            continue
        result["benchmarks"].append(run_one(name, script, full if args.full else quick))
    result["machine"]["load_average_end"] = list(os.getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(f"\n{size} benchmarks written to {out}")
    for bench in result["benchmarks"]:
        if "skipped" in bench or bench.get("failed"):
            print(f"  {bench['bench']:<17} {'skipped: ' + bench['skipped'] if 'skipped' in bench else 'FAILED'}")
            continue
        for judged in bench["judged"]:
            print(f"  {bench['bench']:<17} {Judged.from_dict(judged).line()}")
    sys.exit(1 if any(b.get("failed") for b in result["benchmarks"]) else 0)


if __name__ == "__main__":
    main()
