"""Bulk, idempotent writes and the reads the rest of kwx needs.

Writes are upserts keyed on each table's primary key inside one transaction, so re-running an
ingest or the demo generator changes nothing and a failure leaves no half batch behind.
PostgreSQL loads through COPY into a temporary table; SQLite through executemany.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sqlalchemy import Compiled, Connection, Engine, Table

from kwx.data.schema import Base

# SQLAlchemy's own SQLite text format for DateTime, so ORM and bulk writes store identical values.
_SQLITE_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_POSTGRES_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f+00:00"
_WRITE_ROWS = 200_000
_READ_ROWS = 100_000


# SQLite caps bound parameters, and huge IN lists plan badly everywhere
IN_CHUNK = 500


def chunks(values: list, size: int = IN_CHUNK) -> list[list]:
    """``values`` in slices of at most ``size``: one query per slice for an IN list (or a compound select)."""
    return [values[i:i + size] for i in range(0, len(values), size)]


def rows_frame(rows: Iterable, columns: Iterable[str]) -> pd.DataFrame:
    """A frame of query result rows. SQLAlchemy's Row is not a tuple: pandas probes every one of them for
    namedtuple fields (each probe a caught exception), which made reading rows ten times slower than the query."""
    return pd.DataFrame.from_records([tuple(row) for row in rows], columns=list(columns))


def driver_parameters(compiled: Compiled, params: Mapping[str, object]) -> tuple | Mapping[str, object]:
    """``params`` (by bind name) as the driver takes them for ``compiled``: in order where its dialect binds by
    position (SQLite), by name otherwise (psycopg2)."""
    return tuple(params[name] for name in compiled.positiontup) if compiled.positional else params


def driver_rows(engine: Engine, statement) -> Iterator[list[tuple]]:
    """The rows of ``statement`` as the driver's plain tuples, ``_READ_ROWS`` at a time: no SQLAlchemy row or type
    processing (3-4x faster on millions of rows), and the tuples of millions of rows never all exist at once.

    The values are the driver's: a caller converts those SQLAlchemy would have (SQLite's dates and times are text).
    """
    with _driver_cursor(engine, statement) as (cursor, sql, params):
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(_READ_ROWS):
            yield rows


@contextmanager
def _driver_cursor(engine: Engine, statement) -> Iterator[tuple[object, str, tuple | Mapping[str, object]]]:
    """A driver cursor on a pooled connection, with ``statement`` as that driver's SQL and parameters."""
    with engine.connect() as conn:
        compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        cursor = conn.connection.driver_connection.cursor()
        try:
            yield cursor, str(compiled), driver_parameters(compiled, compiled.params)
        finally:
            cursor.close()


def driver_records(engine: Engine, statement, dtype: np.dtype) -> np.ndarray:
    """The rows of ``statement`` as one structured array of ``dtype`` (a field per selected column, in order;
    NULL is NaN in a float field, and integer fields must hold no NULL).

    PostgreSQL sends them through ``COPY ... TO STDOUT`` as CSV, which pandas' C parser reads: psycopg2 would make
    a Python object of every value first, which on a city-year's millions of candles took twice as long. The
    statement's parameters are inlined by the driver (``mogrify``), which quotes them as it would bind them.
    Elsewhere the driver's tuples go straight into the array (``driver_rows``).
    """
    if engine.dialect.name != "postgresql":
        pieces = [np.fromiter(rows, dtype=dtype, count=len(rows)) for rows in driver_rows(engine, statement)]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype)
    copied = io.BytesIO()
    with _driver_cursor(engine, statement) as (cursor, sql, params):
        cursor.copy_expert(f"COPY ({cursor.mogrify(sql, params).decode()}) TO STDOUT WITH (FORMAT csv)", copied)
    copied.seek(0)
    if not copied.getbuffer().nbytes:
        return np.zeros(0, dtype)
    frame = pd.read_csv(copied, header=None, names=list(dtype.names), dtype={name: dtype[name] for name in dtype.names},
                        engine="c")
    records = np.empty(len(frame), dtype)
    for name in dtype.names:
        records[name] = frame[name].to_numpy()
    return records


def table(name: str) -> Table:
    return Base.metadata.tables[name]


def _column_kinds(tbl: Table, columns: Iterable[str]) -> dict[str, str]:
    kinds = {}
    for name in columns:
        if name not in tbl.c:
            raise KeyError(f"{tbl.name} has no column {name!r}")
        type_name = type(tbl.c[name].type).__name__
        kinds[name] = {"UTCDateTime": "ts", "Date": "date", "Boolean": "bool"}.get(type_name, "plain")
    return kinds


def _object_column(values: pd.Series | np.ndarray, kind: str, dialect: str) -> list:
    """One column (a frame's, or an array) as the Python objects the driver accepts, every missing value None.

    A list, not an object array: zipping lists into rows is twice as fast as iterating arrays."""
    if kind == "ts":
        # Format each distinct time once: a batch of signal ticks holds one time per ~80 rows.
        codes, times = pd.factorize(pd.to_datetime(values, utc=True))
        text = np.asarray(times.strftime(_SQLITE_TS_FORMAT if dialect == "sqlite" else _POSTGRES_TS_FORMAT),
                          dtype=object)
        return np.append(text, None)[codes].tolist()  # code -1 (missing) picks the appended None
    if kind == "date":
        days = pd.DatetimeIndex(pd.to_datetime(values))
        out = np.asarray(days.strftime("%Y-%m-%d"), dtype=object)
        out[days.isna()] = None
        return out.tolist()
    if kind == "bool":
        if pd.api.types.is_bool_dtype(values.dtype):  # no missing values: numpy makes Python bools at C speed
            return np.asarray(values, dtype=bool).tolist()
        return [None if pd.isna(v) else bool(v) for v in values]
    # as objects: Python ints/floats/strs, which every DBAPI driver accepts (a copy: a frame's columns are
    # read-only views under copy-on-write)
    out = np.array(values, dtype=object)
    out[np.asarray(pd.isna(values))] = None
    return out.tolist()


def _rows(columns: Mapping[str, pd.Series | np.ndarray], tbl: Table, dialect: str) -> list[tuple]:
    kinds = _column_kinds(tbl, columns)
    converted = [_object_column(values, kinds[name], dialect) for name, values in columns.items()]
    return list(zip(*converted, strict=True)) if converted else []


def _pk(tbl: Table) -> list[str]:
    return [c.name for c in tbl.primary_key.columns]


def _conflict_clause(tbl: Table, columns: list[str], on_conflict: str) -> str:
    pk = _pk(tbl)
    updates = [c for c in columns if c not in pk]
    if on_conflict == "nothing" or not updates:
        return f"ON CONFLICT ({', '.join(pk)}) DO NOTHING"
    assignments = ", ".join(f"{c} = excluded.{c}" for c in updates)
    return f"ON CONFLICT ({', '.join(pk)}) DO UPDATE SET {assignments}"


def upsert_frame(conn: Connection, table_name: str, frame: pd.DataFrame, on_conflict: str = "update") -> int:
    """Upsert ``frame``'s columns into a table on its primary key; returns the rows sent.

    Columns not in the frame are left alone on conflict (re-ingesting candles keeps ``complete``).
    Runs on the caller's connection so several tables commit or roll back together.
    """
    _check_conflict_rule(on_conflict)
    if frame.empty:
        return 0
    tbl = _target(table_name, frame.columns)
    frame = frame.drop_duplicates(subset=_pk(tbl), keep="last")
    return _upsert_unique(conn, tbl, {name: frame[name] for name in frame.columns}, on_conflict)


def upsert_columns(conn: Connection, table_name: str, columns: Mapping[str, pd.Series | np.ndarray],
                   on_conflict: str = "update") -> int:
    """``upsert_frame`` for equally long columns (arrays, times as ``datetime64`` in UTC, or a frame's series)
    whose rows are already unique on the table's primary key: a loop's batch of ticks, written without framing
    them (framing and deduplicating a batch of signals cost half as much again as writing it)."""
    _check_conflict_rule(on_conflict)
    return _upsert_unique(conn, _target(table_name, columns), columns, on_conflict)


def _upsert_unique(conn: Connection, tbl: Table, columns: Mapping[str, pd.Series | np.ndarray],
                   on_conflict: str) -> int:
    """Columns whose rows are unique on ``tbl``'s primary key, checked by the caller, written in slices."""
    rows = len(next(iter(columns.values()), ()))
    dialect = conn.dialect.name
    # Slices bound the Python objects alive at once; they share the caller's transaction.
    for begin in range(0, rows, _WRITE_ROWS):
        chunk = {name: values[begin:begin + _WRITE_ROWS] if isinstance(values, np.ndarray)
                 else values.iloc[begin:begin + _WRITE_ROWS] for name, values in columns.items()}
        _write(conn, tbl, list(columns), _rows(chunk, tbl, dialect), on_conflict)
    return rows


def upsert_rows(conn: Connection, table_name: str, rows: list[dict], on_conflict: str = "update") -> int:
    """``upsert_frame`` for rows of Python values (dicts with the same keys, None or NaN where missing) that
    are stored as they would be from a frame. For the few rows a loop writes at a time, where framing them
    and converting them column by column cost more than writing them."""
    _check_conflict_rule(on_conflict)
    if not rows:
        return 0
    columns = list(rows[0])
    tbl = _target(table_name, columns)
    pk = _pk(tbl)
    newest: dict[tuple, dict] = {}  # the last row of each key, in the order of the last rows (as upsert_frame)
    for row in rows:
        key = tuple(row[c] for c in pk)
        newest.pop(key, None)
        newest[key] = row
    dialect = conn.dialect.name
    converters = [_value_converter(kind, dialect) for kind in _column_kinds(tbl, columns).values()]
    values = [tuple(convert(row[c]) for c, convert in zip(columns, converters, strict=True))
              for row in newest.values()]
    _write(conn, tbl, columns, values, on_conflict)
    return len(values)


def _value_converter(kind: str, dialect: str):
    """One value as ``_object_column`` stores its column's: times as UTC text, dates as ISO text, Python
    bools and scalars, None for every missing value."""
    if kind == "ts":
        text_format = _SQLITE_TS_FORMAT if dialect == "sqlite" else _POSTGRES_TS_FORMAT
        formatted: dict[datetime, str] = {}  # a batch holds a few distinct times (a tick's rows share one)

        def time_text(value):
            if _missing(value):
                return None
            if value not in formatted:
                instant = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
                formatted[value] = instant.strftime(text_format)
            return formatted[value]
        return time_text
    if kind == "date":
        return lambda value: None if _missing(value) else value.strftime("%Y-%m-%d")
    if kind == "bool":
        return lambda value: None if _missing(value) else bool(value)
    return lambda value: None if _missing(value) else value.item() if isinstance(value, np.generic) else value


def _missing(value) -> bool:
    return value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _check_conflict_rule(on_conflict: str) -> None:
    if on_conflict not in ("update", "nothing"):
        raise ValueError(f"on_conflict must be 'update' or 'nothing', got {on_conflict!r}")


def _target(table_name: str, columns: Iterable[str]) -> Table:
    """The table an upsert of ``columns`` writes; they must hold its primary key."""
    tbl = table(table_name)
    missing_pk = [c for c in _pk(tbl) if c not in columns]
    if missing_pk:
        raise KeyError(f"{table_name} upsert needs its primary key column(s) {missing_pk}")
    return tbl


def _write(conn: Connection, tbl: Table, columns: list[str], rows: list[tuple], on_conflict: str) -> None:
    """Upsert driver-ready ``rows`` of ``columns``: executemany on SQLite, COPY through a staging table on
    PostgreSQL."""
    if conn.dialect.name == "postgresql":
        _copy_upsert(conn, tbl, rows, columns, on_conflict)
        return
    placeholders = ", ".join("?" if conn.dialect.name == "sqlite" else "%s" for _ in columns)
    conn.exec_driver_sql(f"INSERT INTO {tbl.name} ({', '.join(columns)}) VALUES ({placeholders}) "
                         f"{_conflict_clause(tbl, columns, on_conflict)}", rows)


def _copy_upsert(conn: Connection, tbl: Table, rows: list[tuple], columns: list[str], on_conflict: str) -> None:
    staging = f"_kwx_stage_{tbl.name}"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    # csv writes None as an empty field; COPY's FORCE_NULL-free default reads unquoted empty as NULL.
    writer.writerows(rows)
    buffer.seek(0)
    col_list = ", ".join(columns)
    conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {tbl.name} INCLUDING DEFAULTS)")
    conn.exec_driver_sql(f"TRUNCATE {staging}")
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.copy_expert(f"COPY {staging} ({col_list}) FROM STDIN WITH (FORMAT csv)", buffer)
    finally:
        cursor.close()
    conn.exec_driver_sql(
        f"INSERT INTO {tbl.name} ({col_list}) SELECT {col_list} FROM {staging} "
        f"{_conflict_clause(tbl, columns, on_conflict)}"
    )
    conn.exec_driver_sql(f"TRUNCATE {staging}")


def upsert_frames(engine: Engine, frames: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Upsert several tables in one transaction, parents first (dict order)."""
    with engine.begin() as conn:
        return {name: upsert_frame(conn, name, frame) for name, frame in frames.items()}


def coverage_summary(engine: Engine) -> pd.DataFrame:
    """Per city: markets, candles, weather observations, settled days, forecasts and date coverage."""
    from sqlalchemy import func, select

    from kwx.cities import CITIES
    from kwx.data.schema import Candle, ClimateDaily, Forecast, Market, WeatherMinute

    station_city = {c.station: c.key for c in CITIES.values()}
    with engine.connect() as conn:
        markets = conn.execute(
            select(Market.city, func.count(), func.min(Market.event_date), func.max(Market.event_date))
            .group_by(Market.city)
        ).all()
        candles = dict(conn.execute(
            select(Market.city, func.count()).join(Candle, Candle.market_ticker == Market.ticker).group_by(Market.city)
        ).all())
        weather = conn.execute(
            select(WeatherMinute.station, func.count(), func.min(WeatherMinute.ts_utc), func.max(WeatherMinute.ts_utc))
            .group_by(WeatherMinute.station)
        ).all()
        climate = dict(conn.execute(
            select(ClimateDaily.station, func.count()).group_by(ClimateDaily.station)
        ).all())
        forecasts = dict(conn.execute(select(Forecast.city, func.count()).group_by(Forecast.city)).all())
    rows: dict[str, dict] = {}
    for city, n, first, last in markets:
        rows.setdefault(city, {}).update(markets=n, candles=candles.get(city, 0), first_event=first, last_event=last)
    for station, n, first, last in weather:
        city = station_city.get(station, station)
        rows.setdefault(city, {}).update(weather_obs=n, weather_from=first, weather_to=last)
    for station, n in climate.items():
        rows.setdefault(station_city.get(station, station), {}).update(settled_days=n)
    for city, n in forecasts.items():
        rows.setdefault(city, {}).update(forecasts=n)
    columns = ["markets", "candles", "first_event", "last_event", "settled_days", "weather_obs", "weather_from",
               "weather_to", "forecasts"]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns).sort_index()
    for column in ("markets", "candles", "settled_days", "weather_obs", "forecasts"):
        frame[column] = frame[column].fillna(0).astype(int)
    return frame.rename_axis("city").reset_index()
