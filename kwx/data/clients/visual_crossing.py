"""Visual Crossing Timeline API: minute weather locked to the settlement station."""

from __future__ import annotations

import os
from datetime import date, timedelta

import pandas as pd

from kwx.cities import City
from kwx.data.clients.http import JsonHttp, PayloadError, unix_seconds

BASE_URL = "https://weather.visualcrossing.com/VisualCrossingWebServices/rest/services/timeline"
API_KEY_ENV = "VC_API_KEY"
ELEMENTS = "datetime,datetimeEpoch,temp,dew,humidity,windspeed"


class MissingApiKeyError(RuntimeError):
    """VC_API_KEY is not set: keys come from the environment only."""


def api_key_from_env() -> str:
    """Keys come from the environment only, never from config files that end up in git."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise MissingApiKeyError(f"set {API_KEY_ENV} to your Visual Crossing API key")
    return key


class VisualCrossingClient:
    def __init__(self, api_key: str, base_url: str = BASE_URL, *, http: JsonHttp | None = None, chunk_days: int = 7):
        self.api_key = api_key
        self.http = http or JsonHttp(base_url, per_second=2)
        self.chunk_days = chunk_days

    def timeline(self, city: City, start: date, end: date) -> list[dict]:
        """Raw timeline payloads for [start, end], one request per ``chunk_days``."""
        payloads = []
        first = start
        while first <= end:
            last = min(first + timedelta(days=self.chunk_days - 1), end)
            payloads.append(self.http.get(
                f"/{city.vc_location}/{first}/{last}",
                {"unitGroup": "us", "include": "minutes", "maxStations": 1, "maxDistance": 0,
                 "elements": ELEMENTS, "key": self.api_key, "contentType": "json"},
                what=f"{city.station} weather {first}..{last}",
                rejected=f"Visual Crossing rejected the API key ({API_KEY_ENV})",
            ))
            first = last + timedelta(days=1)
        return payloads


def _value(entry: dict, field: str, where: str) -> float | None:
    value = entry.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"{where}.{field}: {value!r} is not a number")
    return float(value)


def parse_timeline(station: str, payload: dict) -> pd.DataFrame:
    """weather_minutes rows from one payload (minutes may sit under days[] or days[].hours[])."""
    days = payload.get("days")
    if not isinstance(days, list):
        raise PayloadError(f"{station}: timeline payload has no 'days' list")
    rows = []
    for d, day in enumerate(days):
        day_name = f"{station} {day.get('datetime', f'days[{d}]')}" if isinstance(day, dict) else f"days[{d}]"
        if not isinstance(day, dict):
            raise PayloadError(f"{station}: days[{d}] is not an object")
        blocks = [("", day.get("minutes") or [])]
        blocks += [(f".hours[{h}]", hour.get("minutes") or []) for h, hour in enumerate(day.get("hours") or [])
                   if isinstance(hour, dict)]
        for prefix, minutes in blocks:
            for m, minute in enumerate(minutes):
                where = f"{day_name}{prefix}.minutes[{m}]"
                if not isinstance(minute, dict):
                    raise PayloadError(f"{where}: not an object")
                epoch = unix_seconds(minute.get("datetimeEpoch"), f"{where}.datetimeEpoch")
                rows.append({"station": station, "ts_utc": epoch, "temp_f": _value(minute, "temp", where),
                             "dew_f": _value(minute, "dew", where), "humidity_pct": _value(minute, "humidity", where),
                             "wind_mph": _value(minute, "windspeed", where), "source": "visualcrossing"})
    frame = pd.DataFrame(rows, columns=["station", "ts_utc", "temp_f", "dew_f", "humidity_pct", "wind_mph", "source"])
    frame["ts_utc"] = pd.to_datetime(frame["ts_utc"], unit="s", utc=True)
    return frame
