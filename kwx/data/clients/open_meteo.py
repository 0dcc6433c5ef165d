"""Open-Meteo: weather-model forecasts of each climate day's high, stamped with when they became public.

Why kwx's own JsonHttp and not the official ``openmeteo-requests``: that client asks for
``format=flatbuffers`` (a binary schema, ``openmeteo_sdk``, as a new dependency), raises on the first 429
or 5xx and leaves retries, back-off and timeouts to whatever session the caller passes in. Here every
request gets what every kwx client gets: retries with jittered back-off that honour Retry-After, a rate
limit, a shared Deadline, and FetchError/AuthError/PayloadError/DeadlineError naming what failed; JSON with
``timeformat=unixtime`` is small enough for a point's hourly temperature. No API key (the free API).

Three APIs, each from its own base URL (the constructor's; tests point them at a local server):

* history, the *Previous Runs* API (``previous-runs-api.open-meteo.com/v1/forecast``): hourly
  ``temperature_2m_previous_dayN`` for N = 1..7, one model per request, ``temperature_unit=fahrenheit``,
  ``timezone=GMT`` and ``timeformat=unixtime`` (Unix-second UTC hours).
* live, the *Forecast* API (``api.open-meteo.com/v1/forecast``, deterministic models) and the *Ensemble* API
  (``ensemble-api.open-meteo.com/v1/ensemble``: the control is ``temperature_2m``, member k is
  ``temperature_2m_memberKK``), each with the model's run metadata (``/data/<domain>/static/meta.json``).

What ``previous_dayN`` is, from Open-Meteo's source (``OmFileSplitter.updateFromTimeOrientedStreaming3D``,
open-meteo/open-meteo): every run r writes its values for valid times t >= r + N*24 h into the
``previous_dayN`` series, overwriting what older runs wrote. So the value at hour t comes from the latest
run initialised at or before t - N*24 h (an older one if that run was missed); the docs' wording is "the
value that was predicted 24 hours before valid time" (open-meteo.com/en/docs/previous-runs-api). The hours
of one climate day therefore come from several runs, and a model stored at a coarser step than an hour
(ECMWF IFS 0.25: 3-hourly) is interpolated to hours at read time (hermite, two stored steps ahead:
``GenericReader.forInterpolationTo``), so an hour also depends on stored steps up to two steps later.

The availability rule (history), for a climate day D (00:00-24:00 local standard time) and lead N:

    last    = the last hour of D (its end - 1 h, UTC)
    horizon = last, or floor(last, step) + 2 * step when the model's stored step does not fall on it
    run_ts  = floor(horizon - N * 24 h, cycle)             the newest run any value of the day can come from
    available_ts = run_ts + publication delay(model)
    lead_days    = D - the local-standard date of run_ts

so the whole row is public no earlier than its newest possible ingredient. The delays are conservative.
Open-Meteo's run metadata (``last_run_availability_time`` - ``last_run_initialisation_time``; one reading per
model, 2026-09-30, published by another project) gave 5.6 h (ncep_gfs013) and 5.8 h (ncep_gfs025) for GFS
and 8.0 h for ECMWF IFS 0.25, whose open data ECMWF releases 2 h after its real-time dissemination
(open-meteo.com/en/docs/ecmwf-api). kwx adds a margin: GFS 7 h, ECMWF 10 h. A missed run makes a value
older than run_ts says, never newer, so the rule errs late; a run published later than its delay is the
one case it cannot see. For the years Open-Meteo rebuilt from archives (GFS before 2024) the values are
the runs' own, public from the weather service at the same delay.

Example: Chicago (UTC-6 all year), climate day 2025-07-02 = 06:00 UTC Jul 2 to 06:00 UTC Jul 3, last hour
05:00 UTC Jul 3. gfs_seamless, N=1: 05:00 Jul 2 floors to the 00 UTC Jul 2 run (18:00 LST Jul 1, lead 1),
public 07:00 UTC Jul 2. ecmwf_ifs025, N=1: 05:00 lies between the stored 03 and 06 UTC steps, so the horizon
is 09:00 UTC Jul 3; minus 24 h floors to the 06 UTC Jul 2 run (00:00 LST Jul 2, lead 0), public 16:00 UTC
Jul 2.

The day-0 series (plain ``temperature_2m``, and the *Historical Forecast* API, which Open-Meteo builds the
same way, "each update from the weather models' initial hours is compiled into a seamless time series")
is not stored: its hours come from runs initialised during the day itself and after it, so it is an
analysis complete only once the day is over, not a forecast anyone held before settlement. A true same-day
(lead 0) forecast of one run needs Open-Meteo's Single Runs API (``&run=``), one request per run.

Live rows take run_ts from the model's ``meta.json`` (``last_run_initialisation_time``; a model built from
several domains, such as gfs_seamless = GFS 0.11 + GFS 0.25 + HRRR, takes the newest) and available_ts =
``last_run_availability_time`` + 10 minutes (Open-Meteo's servers are eventually consistent and its
model-updates page advises waiting 10 more minutes). The metadata is read before and after the data; if a
new run appeared in between, the fetch is repeated once and then given up (the values' run is unknown).
The caller drops rows whose available_ts is after its ``now``, which also leaves out a run published less
than 10 minutes before the fetch, which the answering server may not have had yet. Climate days before the
run's own local-standard date (lead < 0: already over) are dropped.

A climate day's high is the maximum of the hourly values whose hour lies in [00:00, 24:00) LST: 24 hours.
A day with more than ``MAX_MISSING_HOURS`` of them missing (null, or outside the answer) is dropped, never
computed from part of a day: the first and last UTC days of an answer and days beyond a model's horizon.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from kwx.cities import City, get_city
from kwx.data.clients.http import Deadline, FetchError, JsonHttp, PayloadError, RetryPolicy, unix_seconds

FORECAST_URL = "https://api.open-meteo.com"
ENSEMBLE_URL = "https://ensemble-api.open-meteo.com"
PREVIOUS_RUNS_URL = "https://previous-runs-api.open-meteo.com"
SOURCE = "open-meteo"

# Exactly the forecasts table's columns, in its order.
COLUMNS = ["city", "climate_date", "model", "member", "run_ts", "available_ts", "lead_days", "high_f", "ensemble",
           "source"]
PREVIOUS_DAYS = tuple(range(1, 8))  # Open-Meteo keeps previous_day1..7
MAX_MISSING_HOURS = 1  # of a climate day's 24 hourly values; more missing and the day is dropped
CONSISTENCY_SECONDS = 600  # Open-Meteo: wait 10 minutes after an update before every server has it
LIVE_PAST_DAYS = 1  # the current climate day began before 00 UTC today in every US zone
LIVE_FORECAST_DAYS = 16
_HOUR, _DAY = 3600, 86_400
_FAHRENHEIT = "°F"
_UNKNOWN_RUN_RETRIES = 1


@dataclass(frozen=True)
class ModelSpec:
    """What the availability rule needs to know about one Open-Meteo model."""

    name: str  # the name Open-Meteo takes in ``models=`` and kwx stores in ``forecasts.model``
    ensemble: bool
    domains: tuple[str, ...]  # Open-Meteo's data domains behind the model: each has a static/meta.json
    cycle_hours: int  # runs reaching 24 h ahead start every cycle_hours from 00 UTC
    step_hours: int  # the stored time step; the API interpolates finer hours from two stored steps ahead
    delay_hours: float  # run initialisation to public, conservatively (history)


MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    # GFS 0.11/0.25 (hourly to 120 h, 3-hourly after, filled hourly per run when stored) and HRRR in CONUS,
    # whose hourly runs reach 18 h: only the 00/06/12/18 UTC runs (48 h) write previous_day1.
    ModelSpec("gfs_seamless", False, ("ncep_gfs013", "ncep_gfs025", "ncep_hrrr_conus"), 6, 1, 7),
    ModelSpec("gfs_global", False, ("ncep_gfs013", "ncep_gfs025"), 6, 1, 7),
    ModelSpec("ecmwf_ifs025", False, ("ecmwf_ifs025",), 6, 3, 10),
    # ensembles: live only (Open-Meteo keeps no previous-day series of ensemble members)
    ModelSpec("ncep_gefs025", True, ("ncep_gefs025",), 6, 3, 9),
    ModelSpec("ecmwf_ifs025_ensemble", True, ("ecmwf_ifs025_ensemble",), 6, 3, 11),
)}
# The Ensemble API's older names (it remaps them the same way: MultiDomains.remappedToEnsembleApi). kwx stores
# the canonical name, so an ensemble's control never shares a primary key with the deterministic model.
ENSEMBLE_ALIASES = {"gfs025": "ncep_gefs025", "ecmwf_ifs025": "ecmwf_ifs025_ensemble"}
DEFAULT_MODELS = ("gfs_seamless", "ecmwf_ifs025")
DEFAULT_ENSEMBLE_MODELS = ("gfs025", "ecmwf_ifs025")


class UnknownModelError(ValueError):
    """A model kwx has no availability rule for; the message lists the known ones."""


class RunChangedError(FetchError):
    """A new run was published while the values were fetched: which run they come from is unknown."""


def model_spec(name: str, *, ensemble: bool) -> ModelSpec:
    """The spec of a deterministic (``ensemble=False``) or ensemble model, by Open-Meteo name or alias."""
    key = ENSEMBLE_ALIASES.get(name, name) if ensemble else name
    spec = MODELS.get(key)
    if spec is None or spec.ensemble != ensemble:
        known = sorted(m.name for m in MODELS.values() if m.ensemble == ensemble)
        if ensemble:
            known += sorted(ENSEMBLE_ALIASES)
        kind = "ensemble" if ensemble else "deterministic"
        raise UnknownModelError(f"unknown {kind} Open-Meteo model {name!r}; known: {', '.join(known)}")
    return spec


@dataclass(frozen=True)
class RunMeta:
    """A model's newest run as Open-Meteo's metadata states it (Unix seconds)."""

    initialised_ts: int
    available_ts: int


def parse_run_meta(domain: str, payload: dict) -> RunMeta:
    where = f"Open-Meteo {domain} meta.json"
    if not isinstance(payload, dict):
        raise PayloadError(f"{where}: expected a JSON object")
    init = unix_seconds(payload.get("last_run_initialisation_time"), f"{where}.last_run_initialisation_time")
    available = unix_seconds(payload.get("last_run_availability_time"), f"{where}.last_run_availability_time")
    if available < init:
        raise PayloadError(f"{where}: last_run_availability_time {available} is before "
                           f"last_run_initialisation_time {init}")
    return RunMeta(init, available)


def _city(city: City | str) -> City:
    return city if isinstance(city, City) else get_city(city)


def utc_days_for(city: City | str, first: date, last: date) -> tuple[date, date]:
    """The UTC dates whose hours cover the climate days [first, last] of ``city``."""
    city = _city(city)
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC) - city.standard_offset
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=UTC) - city.standard_offset
    return start.date(), (end - timedelta(hours=1)).date()


def climate_day_chunks(start: date, end: date, chunk_days: int) -> list[tuple[date, date]]:
    chunks, first = [], start
    while first <= end:
        last = min(first + timedelta(days=chunk_days - 1), end)
        chunks.append((first, last))
        first = last + timedelta(days=1)
    return chunks


class OpenMeteoClient:
    def __init__(self, base_url: str = FORECAST_URL, ensemble_base_url: str = ENSEMBLE_URL,
                 previous_runs_base_url: str = PREVIOUS_RUNS_URL, *, chunk_days: int = 31, timeout: float = 15.0,
                 retry: RetryPolicy | None = None, per_second: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic):
        if chunk_days < 1:
            raise ValueError(f"chunk_days must be at least 1, got {chunk_days}")
        self.chunk_days = chunk_days

        def http(url: str) -> JsonHttp:
            return JsonHttp(url, timeout=timeout, retry=retry, per_second=per_second, sleep=sleep, monotonic=monotonic)

        self.forecast_http = http(base_url)
        self.ensemble_http = http(ensemble_base_url)
        self.previous_runs_http = http(previous_runs_base_url)

    @property
    def _https(self) -> tuple[JsonHttp, ...]:
        return self.forecast_http, self.ensemble_http, self.previous_runs_http

    @property
    def requests(self) -> int:
        return sum(h.requests for h in self._https)

    def close(self) -> None:
        for h in self._https:
            h.close()

    @contextmanager
    def within(self, deadline: Deadline) -> Iterator[None]:
        """Every request of the block, on any of the three APIs, ends by ``deadline``."""
        with ExitStack() as stack:
            for h in self._https:
                stack.enter_context(h.within(deadline))
            yield

    def chunks(self, start: date, end: date) -> list[tuple[date, date]]:
        return climate_day_chunks(start, end, self.chunk_days)

    @staticmethod
    def _point(city: City) -> dict:
        return {"latitude": city.latitude, "longitude": city.longitude, "temperature_unit": "fahrenheit",
                "timezone": "GMT", "timeformat": "unixtime"}

    def previous_runs(self, city: City | str, model: str, first: date, last: date) -> dict:
        """The Previous Runs answer covering the climate days [first, last] (previous_day1..7)."""
        city, spec = _city(city), model_spec(model, ensemble=False)
        utc_first, utc_last = utc_days_for(city, first, last)
        hourly = ",".join(f"temperature_2m_previous_day{n}" for n in PREVIOUS_DAYS)
        return self.previous_runs_http.get(
            "/v1/forecast",
            {**self._point(city), "hourly": hourly, "models": spec.name, "start_date": utc_first.isoformat(),
             "end_date": utc_last.isoformat()},
            what=f"Open-Meteo previous runs {spec.name} for {city.key} {first}..{last}",
            rejected="Open-Meteo refused the request")

    def run_meta(self, spec: ModelSpec) -> RunMeta:
        """The newest run of ``spec`` (of its newest domain), from the host that serves its values."""
        http = self.ensemble_http if spec.ensemble else self.forecast_http
        metas = [parse_run_meta(domain, http.get(f"/data/{domain}/static/meta.json",
                                                 what=f"Open-Meteo {domain} run metadata",
                                                 rejected="Open-Meteo refused the request"))
                 for domain in spec.domains]
        return RunMeta(max(m.initialised_ts for m in metas), max(m.available_ts for m in metas))

    def live(self, city: City | str, model: str, *, ensemble: bool) -> tuple[dict, RunMeta]:
        """The current forecast (Forecast API) or every ensemble member (Ensemble API) of ``model``, and the run
        it comes from: metadata read before and after agree, or RunChangedError after one more try."""
        city, spec = _city(city), model_spec(model, ensemble=ensemble)
        http, path = (self.ensemble_http, "/v1/ensemble") if ensemble else (self.forecast_http, "/v1/forecast")
        what = f"Open-Meteo {'ensemble' if ensemble else 'forecast'} {spec.name} for {city.key}"
        params = {**self._point(city), "hourly": "temperature_2m", "models": spec.name,
                  "past_days": LIVE_PAST_DAYS, "forecast_days": LIVE_FORECAST_DAYS}
        for _attempt in range(1 + _UNKNOWN_RUN_RETRIES):
            before = self.run_meta(spec)
            payload = http.get(path, params, what=what, rejected="Open-Meteo refused the request")
            after = self.run_meta(spec)
            if before.initialised_ts == after.initialised_ts:
                return payload, after
        raise RunChangedError(f"{what}: a new run was published during each of {1 + _UNKNOWN_RUN_RETRIES} fetches; "
                              "the values' run is unknown, nothing stored (try again)")


# --- pure parsing ----------------------------------------------------------------------------------

def _where(city: City, model: str, what: str) -> str:
    return f"{city.key} {model} {what}"


def _hourly(where: str, payload: dict) -> tuple[np.ndarray, dict]:
    """(UTC hours as int64 Unix seconds, the ``hourly`` object) of an answer in GMT, °F, hourly."""
    if not isinstance(payload, dict):
        raise PayloadError(f"{where}: expected a JSON object, got {type(payload).__name__}")
    if payload.get("error"):
        raise PayloadError(f"{where}: Open-Meteo answered with an error: {str(payload.get('reason'))[:200]!r}")
    offset = payload.get("utc_offset_seconds", 0)
    if isinstance(offset, bool) or offset != 0:
        raise PayloadError(f"{where}: utc_offset_seconds is {offset!r}, expected 0 (timezone=GMT)")
    hourly = payload.get("hourly")
    if not isinstance(hourly, dict):
        raise PayloadError(f"{where}: 'hourly' is missing or not an object")
    units = payload.get("hourly_units", {})
    if not isinstance(units, dict):
        raise PayloadError(f"{where}: 'hourly_units' is not an object")
    for key, unit in units.items():
        if key.startswith("temperature_2m") and unit != _FAHRENHEIT:
            raise PayloadError(f"{where}: hourly_units.{key} is {unit!r}, expected {_FAHRENHEIT!r}")
    raw = hourly.get("time")
    if not isinstance(raw, list):
        raise PayloadError(f"{where}: hourly.time is missing or not a list")
    times = np.empty(len(raw), dtype=np.int64)
    for i, value in enumerate(raw):
        if isinstance(value, int) and not isinstance(value, bool):
            times[i] = value
        elif isinstance(value, str):  # timeformat=iso8601: a naive GMT hour
            try:
                times[i] = int(datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp())
            except ValueError:
                raise PayloadError(f"{where}: hourly.time[{i}]: {value!r} is not a time") from None
        else:
            raise PayloadError(f"{where}: hourly.time[{i}]: {value!r} is not a time")
    if len(times) and (times % _HOUR).any():
        i = int(np.flatnonzero(times % _HOUR)[0])
        raise PayloadError(f"{where}: hourly.time[{i}] ({times[i]}) is not on the hour")
    if len(times) > 1 and (np.diff(times) <= 0).any():
        i = int(np.flatnonzero(np.diff(times) <= 0)[0]) + 1
        raise PayloadError(f"{where}: hourly.time[{i}] ({times[i]}) does not follow hourly.time[{i - 1}]")
    return times, hourly


def _series(where: str, hourly: dict, key: str, n: int) -> np.ndarray:
    values = hourly.get(key)
    if not isinstance(values, list):
        raise PayloadError(f"{where}: hourly.{key} is missing or not a list")
    if len(values) != n:
        raise PayloadError(f"{where}: hourly.{key} has {len(values)} values for {n} times")
    for i, v in enumerate(values):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise PayloadError(f"{where}: hourly.{key}[{i}]: {v!r} is not a number")
    return np.array(values, dtype=float)  # null -> NaN


def _daily_highs(city: City, times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(climate days as days since the epoch, their highs) of the days with all but MAX_MISSING_HOURS hours."""
    if not len(times):
        return np.empty(0, dtype=np.int64), np.empty(0)
    offset = int(city.standard_offset.total_seconds())
    days = np.floor_divide(times + offset, _DAY)
    unique, starts = np.unique(days, return_index=True)  # times increase, so each day is one run of rows
    present = np.add.reduceat(np.isfinite(values).astype(np.int64), starts)
    with np.errstate(invalid="ignore"):
        highs = np.fmax.reduceat(values, starts)
    keep = present >= 24 - MAX_MISSING_HOURS
    return unique[keep], highs[keep]


def _frame(city: City, model: str, days: np.ndarray, members: np.ndarray, run_ts: np.ndarray,
           available_ts: np.ndarray, highs: np.ndarray, ensemble: bool) -> pd.DataFrame:
    offset = int(city.standard_offset.total_seconds())
    lead = days - np.floor_divide(run_ts + offset, _DAY)
    keep = lead >= 0
    n = int(keep.sum())
    frame = pd.DataFrame({
        "city": [city.key] * n,
        "climate_date": days[keep].astype("datetime64[D]").astype(object),
        "model": [model] * n,
        "member": members[keep].astype(np.int64),
        "run_ts": run_ts[keep].astype(np.int64),
        "available_ts": available_ts[keep].astype(np.int64),
        "lead_days": lead[keep].astype(np.int64),
        "high_f": highs[keep].astype(float),
        "ensemble": np.full(n, ensemble, dtype=bool),
        "source": [SOURCE] * n,
    }, columns=COLUMNS)
    return frame.sort_values(["climate_date", "member", "run_ts"], ignore_index=True)


def previous_run_timing(city: City | str, model: str, days: np.ndarray,
                        previous_day: int) -> tuple[np.ndarray, np.ndarray]:
    """(run_ts, available_ts) of the previous_day-N high of each climate day (days since the epoch): the rule of
    the module docstring."""
    city, spec = _city(city), model_spec(model, ensemble=False)
    offset = int(city.standard_offset.total_seconds())
    step, cycle = spec.step_hours * _HOUR, spec.cycle_hours * _HOUR
    last = np.asarray(days, dtype=np.int64) * _DAY - offset + _DAY - _HOUR
    horizon = np.where(last % step == 0, last, last // step * step + 2 * step)
    run_ts = (horizon - previous_day * _DAY) // cycle * cycle
    return run_ts, run_ts + int(spec.delay_hours * _HOUR)


_PREVIOUS_DAY_KEY = re.compile(r"^temperature_2m_previous_day(\d+)$")


def parse_previous_runs(city: City | str, model: str, payload: dict) -> pd.DataFrame:
    """forecasts rows of one Previous Runs answer: per complete climate day and each previous_dayN (N >= 1) given."""
    city, spec = _city(city), model_spec(model, ensemble=False)
    where = _where(city, spec.name, "previous runs")
    times, hourly = _hourly(where, payload)
    leads = sorted(int(m[1]) for key in hourly if (m := _PREVIOUS_DAY_KEY.match(key)) and int(m[1]) >= 1)
    if not leads:
        raise PayloadError(f"{where}: no hourly.temperature_2m_previous_dayN series")
    frames = []
    for n in leads:
        values = _series(where, hourly, f"temperature_2m_previous_day{n}", len(times))
        days, highs = _daily_highs(city, times, values)
        run_ts, available_ts = previous_run_timing(city, spec.name, days, n)
        frames.append(_frame(city, spec.name, days, np.zeros(len(days), dtype=np.int64), run_ts, available_ts,
                             highs, ensemble=False))
    return pd.concat(frames, ignore_index=True)


def _live_frame(city: City, spec: ModelSpec, members: list[tuple[int, np.ndarray]], times: np.ndarray,
                run: RunMeta) -> pd.DataFrame:
    available = max(run.available_ts + CONSISTENCY_SECONDS, run.initialised_ts)
    frames = []
    for member, values in members:
        days, highs = _daily_highs(city, times, values)
        frames.append(_frame(city, spec.name, days, np.full(len(days), member), np.full(len(days), run.initialised_ts),
                             np.full(len(days), available), highs, ensemble=spec.ensemble))
    return pd.concat(frames, ignore_index=True)


def parse_forecast(city: City | str, model: str, payload: dict, run: RunMeta) -> pd.DataFrame:
    """forecasts rows (member 0) of one Forecast API answer from the run ``run``: each complete climate day from
    the run's own local-standard date on."""
    city, spec = _city(city), model_spec(model, ensemble=False)
    where = _where(city, spec.name, "forecast")
    times, hourly = _hourly(where, payload)
    return _live_frame(city, spec, [(0, _series(where, hourly, "temperature_2m", len(times)))], times, run)


_MEMBER_KEY = re.compile(r"^temperature_2m(?:_member(\d{2,3}))?$")


def parse_ensemble(city: City | str, model: str, payload: dict, run: RunMeta) -> pd.DataFrame:
    """forecasts rows of one Ensemble API answer, one per member (the control, ``temperature_2m``, is member 0)."""
    city, spec = _city(city), model_spec(model, ensemble=True)
    where = _where(city, spec.name, "ensemble")
    times, hourly = _hourly(where, payload)
    members: list[tuple[int, np.ndarray]] = []
    for key in hourly:
        name = key.removesuffix(f"_{spec.name}")  # present only when several models are asked at once
        if (match := _MEMBER_KEY.match(name)) is None:
            continue
        members.append((int(match[1] or 0), _series(where, hourly, key, len(times))))
    if not members:
        raise PayloadError(f"{where}: no hourly.temperature_2m or temperature_2m_memberNN series")
    numbers = [m for m, _ in members]
    if len(set(numbers)) != len(numbers):
        raise PayloadError(f"{where}: ensemble member numbers repeat: {sorted(numbers)}")
    return _live_frame(city, spec, sorted(members, key=lambda m: m[0]), times, run)
