"""Stored forecasts, read as of a time: what the dataset, replay, backtest and the live loop hand the features.

IO only: the as-of pick, the error scales and the prior are ``kwx.domain.forecast``'s.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import Engine, func, select

from kwx.cities import get_city
from kwx.data.schema import ClimateDaily, Forecast
from kwx.data.store import driver_rows, rows_frame
from kwx.domain.forecast import (
    ERROR_LOOKBACK_DAYS,
    ERROR_SETTLED_AFTER_DAYS,
    FORECAST_COLUMNS,
    ForecastData,
    consensus_history,
    error_scales,
)


def load_forecasts(engine: Engine, cities: list[str], first_day: date, last_day: date, *,
                   available_until_ts: int | None = None, deterministic_only: bool = False) -> pd.DataFrame:
    """Forecast rows (``FORECAST_COLUMNS``) of ``cities`` for climate days [first_day, last_day]; with
    ``available_until_ts``, only those public by then."""
    statement = select(*(getattr(Forecast, c) for c in FORECAST_COLUMNS)).where(
        Forecast.city.in_(cities), Forecast.climate_date >= first_day, Forecast.climate_date <= last_day)
    if available_until_ts is not None:
        statement = statement.where(Forecast.available_ts <= available_until_ts)
    if deterministic_only:
        statement = statement.where(Forecast.ensemble.is_(False))
    frame = pd.DataFrame.from_records([row for part in driver_rows(engine, statement) for row in part],
                                      columns=list(FORECAST_COLUMNS))
    # the driver's dates (SQLite's are ISO text), each distinct day converted once rather than once per row
    codes, days = pd.factorize(frame["climate_date"])
    frame["climate_date"] = np.asarray(pd.to_datetime(pd.Index(days, dtype=object), format="ISO8601").date,
                                       dtype=object)[codes] if len(days) else np.empty(0, dtype=object)
    return frame.astype({"member": "int64", "run_ts": "int64", "available_ts": "int64", "lead_days": "int64",
                         "high_f": "float64", "ensemble": "bool"})


def load_forecast_data(engine: Engine, cities: list[str], first_day: date, last_day: date, *,
                       available_until_ts: int | None = None) -> ForecastData:
    """The forecasts of days [first_day, last_day] and the error scales of those days (read from the settled
    days of the trailing ``ERROR_LOOKBACK_DAYS``), ready for ``build_features``."""
    forecasts = load_forecasts(engine, cities, first_day, last_day, available_until_ts=available_until_ts)
    return ForecastData(forecasts, load_error_scales(engine, cities, first_day, last_day))


def load_error_scales(engine: Engine, cities: list[str], first_day: date, last_day: date) -> pd.DataFrame:
    """The error scales (``SCALE_COLUMNS``) of days [first_day, last_day], from the consensus history and the
    settled highs of the trailing ``ERROR_LOOKBACK_DAYS``."""
    history_start = first_day - timedelta(days=ERROR_LOOKBACK_DAYS)
    history_end = last_day - timedelta(days=ERROR_SETTLED_AFTER_DAYS)
    history = load_forecasts(engine, cities, history_start, history_end, deterministic_only=True)
    if history.empty:  # no deterministic model stored: the scales come from the ensembles' means
        history = load_forecasts(engine, cities, history_start, history_end)
    settled = load_settled_highs(engine, cities, history_start, history_end)
    days = [first_day + timedelta(days=k) for k in range((last_day - first_day).days + 1)]
    offsets = {city: int(get_city(city).standard_offset.total_seconds()) for city in cities}
    return error_scales(consensus_history(history, offsets), settled, days)


def load_settled_highs(engine: Engine, cities: list[str], first_day: date, last_day: date) -> pd.DataFrame:
    """city, climate_date, tmax_f of the settled days of ``cities`` in [first_day, last_day]."""
    station_city = {get_city(c).station: c for c in cities}
    statement = select(ClimateDaily.station, ClimateDaily.climate_date, ClimateDaily.tmax_f).where(
        ClimateDaily.station.in_(list(station_city)), ClimateDaily.climate_date >= first_day,
        ClimateDaily.climate_date <= last_day)
    with engine.connect() as conn:
        frame = rows_frame(conn.execute(statement), ("station", "climate_date", "tmax_f"))
    return pd.DataFrame({"city": frame["station"].map(station_city), "climate_date": frame["climate_date"],
                         "tmax_f": frame["tmax_f"].astype(float)})


def newest_forecasts(engine: Engine, until_ts: int, cities: list[str] | None = None) -> pd.DataFrame:
    """Per city (every known city when None): the newest stored forecast public by ``until_ts`` (Unix s) and the
    models published then: what `kwx rt status`, the dashboard and the live loop read as the forecasts' age.

    Two index seeks per city on (city, available_ts): a GROUP BY over the table scans millions of rows.
    """
    from kwx.cities import CITIES

    rows = []
    with engine.connect() as conn:
        for city in cities if cities is not None else sorted(CITIES):
            available = conn.execute(select(func.max(Forecast.available_ts)).where(
                Forecast.city == city, Forecast.available_ts <= until_ts)).scalar()
            if available is None:
                continue
            models = conn.execute(select(Forecast.model).distinct().where(
                Forecast.city == city, Forecast.available_ts == available)).scalars().all()
            rows.append((city, int(available), ", ".join(sorted(models))))
    return pd.DataFrame(rows, columns=["city", "available_ts", "models"])
