"""Benchmark: ingest a city-year of Open-Meteo forecast history (Previous Runs API) from a loopback server.

    .venv/bin/python bench/ingest_forecasts.py                      # chicago, 2024-11-16..2025-11-15
    .venv/bin/python bench/ingest_forecasts.py --city all           # every city
    .venv/bin/python bench/ingest_forecasts.py --per-second 5       # with the client's production rate limit

A local HTTP server answers ``/v1/forecast`` as Open-Meteo's Previous Runs API does (``timeformat=unixtime``,
hourly ``temperature_2m_previous_day1..7`` in °F for the asked UTC dates, generated from a fixed seed), and
``kwx.data.ingestion.ingest_forecasts`` fetches, parses and upserts it into a scratch SQLite database, as
`kwx ingest forecasts` does, for gfs_seamless and ecmwf_ifs025 in 31-day chunks. Prints per city the rows,
requests and seconds, then the total rows/s. The server's JSON encoding runs in the same process and is
included in the time. ``--per-second 0`` (default) leaves out the client's request spacing, which against the
real API adds 0.2 s per request (24 a city-year). Target: a city-year < 5 s without the spacing.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
from _workspace import scratch_workspace

START, END = date(2024, 11, 16), date(2025, 11, 15)
MODELS = ("gfs_seamless", "ecmwf_ifs025")
SEED = 42


def previous_runs_payload(latitude: float, longitude: float, model: str, first: date, last: date) -> dict:
    """Open-Meteo's answer shape for hourly previous_day1..7 over the UTC dates [first, last]."""
    start = int(datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp())
    times = np.arange(start, start + ((last - first).days + 1) * 86_400, 3600, dtype=np.int64)
    local_hour = ((times + longitude / 15 * 3600) % 86_400) / 3600
    season = np.cos(2 * math.pi * ((times // 86_400) % 365 - 200) / 365)
    truth = 60 + 20 * season + 9 * np.cos(2 * math.pi * (local_hour - 15) / 24) - (latitude - 35) / 2
    hourly: dict = {"time": times.tolist()}
    for n in range(1, 8):
        rng = np.random.default_rng([SEED, n, int(start), MODELS.index(model) if model in MODELS else 9])
        hourly[f"temperature_2m_previous_day{n}"] = np.round(truth + rng.normal(0, 0.4 * n, len(times)), 1).tolist()
    return {"latitude": latitude, "longitude": longitude, "generationtime_ms": 0.5, "utc_offset_seconds": 0,
            "timezone": "GMT", "timezone_abbreviation": "GMT", "elevation": 190.0,
            "hourly_units": {"time": "unixtime", **{k: "°F" for k in hourly if k != "time"}}, "hourly": hourly}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path != "/v1/forecast" or "previous_day" not in q.get("hourly", ""):
            body, status = b'{"error": true, "reason": "not found"}', 404
        else:
            body, status = json.dumps(previous_runs_payload(
                float(q["latitude"]), float(q["longitude"]), q["models"], date.fromisoformat(q["start_date"]),
                date.fromisoformat(q["end_date"]))).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--city", default="chicago", help="a city key, or 'all'")
    parser.add_argument("--per-second", type=float, default=0.0, help="client request rate limit (0: none)")
    args = parser.parse_args()

    from kwx.cities import CITIES, get_city
    from kwx.data.clients.open_meteo import OpenMeteoClient
    from kwx.data.ingestion import ingest_forecasts

    cities = list(CITIES) if args.city == "all" else [get_city(args.city).key]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    now = datetime.combine(END + timedelta(days=30), datetime.min.time(), tzinfo=UTC)
    total_rows, seconds = 0, 0.0
    try:
        with scratch_workspace() as (_root, engine):  # a migrated scratch database, not timed
            for key in cities:
                client = OpenMeteoClient(url, url, url, per_second=args.per_second)
                t = time.perf_counter()
                summary = ingest_forecasts(engine, client, key, START, END, models=list(MODELS), now=now)
                elapsed = time.perf_counter() - t
                seconds += elapsed
                if summary.failures:
                    raise SystemExit(f"{key}: {summary.failures[0]}")
                print(f"{key:<13} {summary.forecasts:>7,} rows  {client.requests:>3} requests  {elapsed:6.2f} s  "
                      f"{summary.forecasts / elapsed:>9,.0f} rows/s")
                total_rows += summary.forecasts
                client.close()
    finally:
        server.shutdown()
        server.server_close()
    print(f"forecasts ingest: {total_rows:,} rows ({len(cities)} city-year(s) {START}..{END}, {', '.join(MODELS)}, "
          f"leads 1-7) in {seconds:.2f} s = {total_rows / seconds:,.0f} rows/s (loopback, SQLite, "
          f"{'no rate limit' if not args.per_second else f'{args.per_second:g} requests/s'})")


if __name__ == "__main__":
    main()
