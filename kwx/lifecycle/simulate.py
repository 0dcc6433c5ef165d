"""`kwx simulate`: a season on a simulated clock, through the real commands' code.

The simulation works in its own workspace: a database holding a copy of the config's markets, candles and
weather, whose settlements from ``start`` on are held back and written day by day as the simulated days
pass, and its own MLflow store. So nothing it trains, promotes or withdraws can reach a user's registry (a
live loop trades whatever that registry's Production stage holds), and nothing it reads can come from a
day that has not yet happened in the simulation.

Each simulated day D, at the config's local times: the climate report of D-1 arrives (settlement), then
the weekly retrain (``kwx retrain --promote``) on the configured weekday (and on the first day, so the
season starts with a model), then ``kwx monitor`` (realized evaluation and drift), then D is traded by
``kwx serve-rt --replay``'s code. After the last day, its report arrives and a final monitor pass runs.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time as time_module
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from sqlalchemy import Engine, and_, func, select, update

from kwx import tracking
from kwx.cities import get_city
from kwx.clock import SimulatedClock
from kwx.config import WEEKDAYS, RtConfig, TrainConfig
from kwx.data.schema import Candle, ClimateDaily, Market, RtSignal, SeriesFeeRecord, WeatherMinute
from kwx.data.store import rows_frame, upsert_frame, upsert_frames
from kwx.domain.features import WEATHER_LOOKBACK_SECONDS, feature_columns
from kwx.domain.markets import climate_day_bounds
from kwx.domain.metrics import prefixed_scores
from kwx.lifecycle import monitor as monitoring
from kwx.lifecycle.retrain import RetrainError, retrain
from kwx.registry.resolution import NoModelError, resolve
from kwx.registry.versions import model_name, stage_table
from kwx.rt.replay import replay_day
from kwx.training.runner import labelled_rows
from kwx.training.walkforward import score_test_rows

log = logging.getLogger(__name__)
SIMULATIONS_EXPERIMENT = "kwx-simulations"
PRODUCTION = "Production"
# What a market's settlement writes beside the climate report: held back until its day has passed.
SETTLEMENT_COLUMNS = ("status", "result", "expiration_value", "settlement_value")


class SimulationError(ValueError):
    """A simulation that cannot start: the message says what is missing."""


@dataclass
class DayRecord:
    day: date
    window: str  # the Production window that traded the day ("-" when none could)
    version: str | None
    stale_days: int | None
    ticks: int = 0
    signals: int = 0  # rows with a model probability
    sized: int = 0
    retrain: list[str] = field(default_factory=list)
    alarms: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)


@dataclass
class SimulationResult:
    days: list[DayRecord]
    weeks: pd.DataFrame
    run_id: str
    tracking_uri: str
    database_url: str


def _local_time(day: date, clock_time: str, zone) -> datetime:
    hours, minutes = (int(part) for part in clock_time.split(":"))
    return datetime.combine(day, time(hours, minutes), tzinfo=zone).astimezone(UTC)


def retrain_days(start: date, end: date, weekday: str) -> list[date]:
    """The days a weekly retrain runs in [start, end]: the configured weekday, and ``start`` itself so the
    season has a model from its first day."""
    index = WEEKDAYS.index(weekday)
    return sorted({start} | {start + timedelta(days=k) for k in range((end - start).days + 1)
                             if (start + timedelta(days=k)).weekday() == index})


def _frame(engine: Engine, statement) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(statement)
        return rows_frame(result, result.keys())


class Workspace:
    """The simulation's database: the source's data for one city and bracket, settlements held back."""

    def __init__(self, engine: Engine, held_back: pd.DataFrame, settlements: pd.DataFrame, station: str):
        self.engine, self._held_back, self._settlements, self.station = engine, held_back, settlements, station

    @classmethod
    def copy(cls, source: Engine, target: Engine, config: TrainConfig, start: date, end: date) -> Workspace:
        city = get_city(config.city)
        first = start - timedelta(days=config.train_days + 1)
        markets = _frame(source, select(Market).where(and_(
            Market.city == config.city, Market.strike_type == config.bracket, Market.event_date >= first,
            Market.event_date <= end)))
        if markets.empty:
            raise SimulationError(f"no {config.city}/{config.bracket} markets between {first} and {end} in the "
                                  "source database (load some with `kwx data demo`)")
        days = set(markets["event_date"])
        missing = [d for d in (start + timedelta(days=k) for k in range((end - start).days + 1)) if d not in days]
        if missing:
            raise SimulationError(f"the source has no {config.city}/{config.bracket} markets on {len(missing)} "
                                  f"simulated day(s), first {missing[0]}: simulate a span the data covers")
        since = pd.Timestamp(markets["open_time"].min()).to_pydatetime() - timedelta(seconds=WEATHER_LOOKBACK_SECONDS)
        since = min(since, climate_day_bounds(first, city)[0] - timedelta(seconds=WEATHER_LOOKBACK_SECONDS))
        weather = _frame(source, select(WeatherMinute).where(and_(
            WeatherMinute.station == city.station, WeatherMinute.ts_utc >= since,
            WeatherMinute.ts_utc <= pd.Timestamp(markets["close_time"].max()).to_pydatetime())))
        reports = _frame(source, select(ClimateDaily).where(and_(
            ClimateDaily.station == city.station, ClimateDaily.climate_date >= first,
            ClimateDaily.climate_date <= end)))
        future = markets["event_date"] >= start
        held_back = markets.loc[future, ["ticker", "event_date", *SETTLEMENT_COLUMNS]].reset_index(drop=True)
        unsettled = markets.copy()
        unsettled.loc[future, list(SETTLEMENT_COLUMNS)] = None
        unsettled.loc[future, "status"] = "active"
        # the series' fee data whole: fee changes are announced ahead, so none of it is a look at the future
        fees = _frame(source, select(SeriesFeeRecord).where(SeriesFeeRecord.series_ticker == city.series))
        upsert_frames(target, {"markets": unsettled, "weather_minutes": weather,
                               "climate_daily": reports[reports["climate_date"] < start], "series_fees": fees})
        columns = [c.name for c in Candle.__table__.columns]
        tickers = markets["ticker"].tolist()
        for i in range(0, len(tickers), 200):  # a bounded IN list, and a bounded frame per transaction
            candles = _frame(source, select(*Candle.__table__.columns).where(
                Candle.market_ticker.in_(tickers[i:i + 200])))
            candles["complete"] = False  # the simulated loop marks candles complete as it sees them
            with target.begin() as conn:
                upsert_frame(conn, "candles", candles[columns])
        return cls(target, held_back, reports[reports["climate_date"] >= start].reset_index(drop=True), city.station)

    def settle(self, day: date) -> int:
        """The climate report of ``day`` arrives and its markets settle; returns the reports written."""
        reports = self._settlements[self._settlements["climate_date"] == day]
        markets = self._held_back[self._held_back["event_date"] == day]
        with self.engine.begin() as conn:
            if len(reports):
                upsert_frame(conn, "climate_daily", reports)
            for row in markets.itertuples(index=False):  # one day's ladder: a handful of markets
                conn.execute(update(Market).where(Market.ticker == row.ticker).values(
                    {c: (None if pd.isna(getattr(row, c)) else getattr(row, c)) for c in SETTLEMENT_COLUMNS}))
        return len(reports)


def _trading_choice(client: MlflowClient, config: TrainConfig, day: date) -> tuple[str, str | None, int | None]:
    """(window, version, stale days) of the Production model that trades ``day``, as the loop resolves it."""
    table = stage_table(client, model_name(config.city, config.bracket), PRODUCTION)
    try:
        choice = resolve(table, day, city=config.city, bracket=config.bracket, stage=PRODUCTION)
    except NoModelError:
        return "-", None, None
    return choice.facts.window, choice.facts.version, choice.stale_days


def realized_by_day(engine: Engine, config: TrainConfig, traded: dict[date, str]) -> pd.DataFrame:
    """Every settled row of the traded days, scored by the version that traded its day (``score_test_rows``,
    as test weeks and `kwx monitor` score them)."""
    if not traded:
        return pd.DataFrame()
    rows = labelled_rows(engine, config, min(traded), max(traded))
    features = feature_columns(config.feature_set, config.bracket)
    name = model_name(config.city, config.bracket)
    scored = []
    for version in sorted(set(traded.values()), key=int):
        days = [d for d, v in traded.items() if v == version]
        mine = rows[rows["event_date"].isin(days)]
        if len(mine):
            model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
            scored.append(score_test_rows(model, mine, features).predictions)
    return pd.concat(scored, ignore_index=True) if scored else pd.DataFrame()


def week_table(days: list[DayRecord], predictions: pd.DataFrame, start: date) -> pd.DataFrame:
    """One row per simulated week (7 days from ``start``): what traded, how stale, how good, what it did."""
    out = []
    for first in range(0, len(days), 7):
        week = days[first:first + 7]
        span = {d.day for d in week}
        rows = predictions[predictions["event_date"].isin(span)] if len(predictions) else predictions
        y = rows["label"].to_numpy(dtype=int) if len(rows) else np.zeros(0, dtype=int)
        p_model = rows["p_model"].to_numpy(dtype=float) if len(rows) else np.zeros(0)
        p_market = rows["p_market"].to_numpy(dtype=float) if len(rows) else np.zeros(0)
        quoted = ~np.isnan(p_market)
        keys = ("log_loss", "brier", "ece")
        model = prefixed_scores("model", y[quoted], p_model[quoted], keys)
        market = prefixed_scores("market", y[quoted], p_market[quoted], keys)
        stale = [d.stale_days for d in week if d.stale_days is not None]
        out.append({
            "week": f"{week[0].day}..{week[-1].day}",
            "windows": ", ".join(dict.fromkeys(d.window for d in week)),
            "max_stale_days": max(stale) if stale else None,
            **model, **market,
            "signals": sum(d.signals for d in week), "sized": sum(d.sized for d in week),
            "retrains": sum(len(d.retrain) > 0 for d in week),
            "drift_alarms": sum(len(d.alarms) for d in week),
            "withdrawn": ", ".join(v for d in week for v in d.withdrawn),
        })
    return pd.DataFrame(out)


def _monitor(client: MlflowClient, workspace: Workspace, config: TrainConfig, as_of: date, now: datetime):
    return monitoring.monitor(client, workspace.engine, as_of=as_of, now=now, city=config.city,
                              bracket=config.bracket)


def simulate(config: TrainConfig, rt_config: RtConfig, source: Engine, workspace_engine: Engine, *, start: date,
             end: date, speed: float | None = None, on_day: Callable[[DayRecord], None] | None = None,
             config_text: str | None = None) -> SimulationResult:
    """Run the season [start, end] in ``workspace_engine`` (empty, migrated) against the current MLflow store."""
    if end < start:
        raise SimulationError(f"--end ({end}) is before --start ({start})")
    city = get_city(config.city)
    rt_config = rt_config.model_copy(update={"markets": [m for m in rt_config.markets
                                                         if (m.city, m.bracket) == (config.city, config.bracket)]
                                             or [{"city": config.city, "bracket": config.bracket}]})
    rt_config = RtConfig.model_validate(rt_config.model_dump())
    workspace = Workspace.copy(source, workspace_engine, config, start, end)
    uri = tracking.configure()
    client = MlflowClient()
    lifecycle = config.lifecycle
    retrain_on = set(retrain_days(start, end, lifecycle.retrain_weekday))
    clock = SimulatedClock(climate_day_bounds(start, city)[0])
    records: list[DayRecord] = []
    experiment = tracking.ensure_experiment(SIMULATIONS_EXPERIMENT)
    # Written through the client, never made the active run: each retrain opens its own training run.
    run_id = client.create_run(experiment, run_name=f"simulate {config.city}/{config.bracket} {start}..{end}",
                               tags={"kwx.kind": "simulation", "kwx.city": config.city,
                                     "kwx.bracket": config.bracket}).info.run_id
    try:
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in {
            "start": start, "end": end, "tick_seconds": rt_config.tick_seconds, "trials": config.trials,
            "retrain_weekday": lifecycle.retrain_weekday, "auto_withdraw": lifecycle.auto_withdraw,
            "monitor_days": lifecycle.monitor_days}.items()])
        if config_text is not None:
            client.log_text(run_id, config_text, "config_source.yaml")
        for k in range((end - start).days + 1):
            record = _simulate_day(client, workspace, config, rt_config, start + timedelta(days=k), clock,
                                   retrain_on, speed, config_text)
            records.append(record)
            _log_day(client, run_id, record)
            if on_day is not None:
                on_day(record)
        workspace.settle(end)
        final = _monitor(client, workspace, config, end + timedelta(days=1), clock.now())
        if records:
            records[-1].alarms += list(final.alarms)
            records[-1].withdrawn += list(final.withdrawn)
        traded = {r.day: r.version for r in records if r.version is not None}
        weeks = week_table(records, realized_by_day(workspace.engine, config, traded), start)
        _log_summary(client, run_id, weeks, records)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return SimulationResult(records, weeks, run_id, uri, workspace.engine.url.render_as_string(hide_password=True))


def _simulate_day(client: MlflowClient, workspace: Workspace, config: TrainConfig, rt_config: RtConfig, day: date,
                  clock: SimulatedClock, retrain_on: set[date], speed: float | None,
                  config_text: str | None) -> DayRecord:
    """One simulated day: yesterday's report arrives, the day's jobs run at their local times, the day trades."""
    city, lifecycle = get_city(config.city), config.lifecycle
    clock.set(max(clock.now(), climate_day_bounds(day, city)[0]))
    workspace.settle(day - timedelta(days=1))
    jobs = sorted([(lifecycle.monitor_time, "monitor")]
                  + ([(lifecycle.retrain_time, "retrain")] if day in retrain_on else []))
    retrained, alarms, withdrawn = [], [], []
    for clock_time, job in jobs:
        clock.set(max(clock.now(), _local_time(day, clock_time, city.zone)))
        if job == "retrain":
            try:
                retrained = retrain(config, workspace.engine, as_of=day, now=clock.now(), promote=True,
                                    config_text=config_text).lines()
            except RetrainError as exc:  # as the schedule does: logged, and tried again next week
                retrained = [f"retrain failed: {exc}"]
                log.warning("simulated retrain of %s failed: %s", day, exc)
        else:
            report = _monitor(client, workspace, config, day, clock.now())
            alarms, withdrawn = list(report.alarms), list(report.withdrawn)
    window, version, stale = _trading_choice(client, config, day)
    record = DayRecord(day, window, version, stale, retrain=retrained, alarms=alarms, withdrawn=withdrawn)
    result = replay_day(rt_config, workspace.engine, client, day, speed=speed)
    record.ticks, record.sized = result.ticks, result.sized
    record.signals = _signal_rows(workspace.engine, day, city)
    clock.set(max(clock.now(), climate_day_bounds(day, city)[1]))
    return record


def _signal_rows(engine: Engine, day: date, city) -> int:
    since, until = climate_day_bounds(day, city)
    statement = select(func.count()).where(RtSignal.ts_utc >= since, RtSignal.ts_utc < until,
                                           RtSignal.p_model.is_not(None))
    with engine.connect() as conn:
        return int(conn.execute(statement).scalar_one())


def _log_day(client: MlflowClient, run_id: str, record: DayRecord) -> None:
    """Per-day metrics stepped by date, so the simulation run charts them over the season."""
    step = (record.day - date(1970, 1, 1)).days
    stamp = int(datetime.combine(record.day, time(0), tzinfo=UTC).timestamp() * 1000)
    values = {"signals": record.signals, "sized_signals": record.sized, "drift_alarms": len(record.alarms),
              "stale_days": record.stale_days if record.stale_days is not None else -1,
              "has_model": float(record.version is not None)}
    client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, step) for k, v in values.items()])


def _log_summary(client: MlflowClient, run_id: str, weeks: pd.DataFrame, records: list[DayRecord]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        weeks.to_csv(out / "weeks.csv", index=False)
        (out / "days.json").write_text(json.dumps([{**r.__dict__, "day": r.day.isoformat()} for r in records],
                                                  indent=1))
        client.log_artifacts(run_id, tmp)
    totals = {"days": len(records), "days_without_model": sum(r.version is None for r in records),
              "drift_alarms": sum(len(r.alarms) for r in records), "sized_signals": sum(r.sized for r in records)}
    client.log_batch(run_id, metrics=[Metric(k, float(v), int(time_module.time() * 1000), 0)
                                      for k, v in totals.items()])
