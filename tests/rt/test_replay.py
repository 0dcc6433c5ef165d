"""serve-rt replay: same signals as a batch computation, no lookahead, idempotent writes, clear skips."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, select, text
from typer.testing import CliRunner

from kwx.cities import get_city
from kwx.cli import app
from kwx.clock import SimulatedClock
from kwx.config import RtConfig
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.schema import Market, RtSignal
from kwx.domain.features import build_features, epoch_seconds
from kwx.domain.markets import climate_day_bounds, locked_outcomes
from kwx.registry.cache import RegistryCache
from kwx.registry.versions import model_name
from kwx.rt.engine import SignalRows, compute_signals, latest_rows
from kwx.rt.loop import BufferFullError, RegistryResolver, SignalWriter
from kwx.rt.replay import replay_day
from kwx.rt.retry import Backoff, DbRetry
from kwx.rt.sources import LookaheadError, ReplaySource, Snapshot
from tests.conftest import clear_rt_records

pytestmark = pytest.mark.integration
DAY = date(2025, 7, 18)
RT = {"markets": [{"city": "chicago", "bracket": "between"}], "tick_seconds": 300}


def _stored(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = pd.read_sql(select(RtSignal).order_by(RtSignal.ts_utc, RtSignal.market_ticker), conn)
    frame["ts_utc"] = pd.to_datetime(frame["ts_utc"], utc=True)
    return frame


def test_replay_equals_batch_and_is_idempotent(promoted):
    engine, client = promoted["engine"], promoted["client"]
    clear_rt_records(engine)
    config = RtConfig.model_validate(RT)
    result = replay_day(config, engine, client, DAY)
    assert result.ticks == 24 * 12 - 1 and result.rows > 0
    replayed = _stored(engine)

    # Batch: every feature of the whole day at once, then each tick's newest rows.
    source = ReplaySource(engine, [("chicago", "between")], DAY, config.max_obs_age_minutes)
    features = build_features(source.candles, source.markets, source.weather["chicago"], get_city("chicago"))
    resolver = RegistryResolver(RegistryCache(client, SimulatedClock(datetime(2025, 7, 18, tzinfo=UTC))),
                                "Production")
    start, _ = climate_day_bounds(DAY, get_city("chicago"))
    batch = []
    for k in range(1, result.ticks + 1):
        now = start + timedelta(seconds=300 * k)
        now_ts = int(now.timestamp())
        m = source.markets
        open_now = m[(m["open_ts"] <= now_ts) & (now_ts < m["close_ts"])]
        batch.append(compute_signals(now, open_now, latest_rows(features, now_ts), resolver, config))
    expected = pd.concat(batch, ignore_index=True).sort_values(["ts_utc", "market_ticker"]).reset_index(drop=True)
    got = replayed[expected.columns].reset_index(drop=True)
    for column in ("side", "skip_reason", "model_id", "wf_window", "market_ticker", "city", "bracket"):
        # text columns: the database's NULL and pandas' None/NaN are the same "missing"
        got[column] = got[column].astype(object).where(got[column].notna(), "")
        expected[column] = expected[column].astype(object).where(expected[column].notna(), "")
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_exact=False, rtol=1e-9)
    assert (got["size_fraction"] > 0).any() and got["skip_reason"].notna().any()

    again = replay_day(config, engine, client, DAY)
    assert again.rows == result.rows
    pd.testing.assert_frame_equal(_stored(engine), replayed)  # a second replay changes nothing


def test_unlocked_probabilities_are_never_0_or_1_and_locks_are_the_rules(promoted):
    """Over a whole replayed day: every open market's probability is strictly inside (0, 1); every locked
    one is exactly the outcome the settlement rule decides from the day's running maximum, and it settled so."""
    engine, client = promoted["engine"], promoted["client"]
    clear_rt_records(engine)
    config = RtConfig.model_validate(RT)
    replay_day(config, engine, client, DAY)
    stored = _stored(engine)
    priced = stored[stored["p_model"].notna()]
    open_rows, locked = priced[~priced["locked"]], priced[priced["locked"]]
    assert len(open_rows) > 1000 and len(locked) > 50
    assert ((open_rows["p_model"] > 0) & (open_rows["p_model"] < 1)).all()
    assert set(locked["p_model"]) <= {0.0, 1.0} and (locked["p_blend"] == locked["p_model"]).all()

    source = ReplaySource(engine, [("chicago", "between")], DAY, config.max_obs_age_minutes)
    features = build_features(source.candles, source.markets, source.weather["chicago"], get_city("chicago"))
    rule = []
    for ts, rows in stored.groupby("ts_utc"):
        newest = latest_rows(features, int(ts.timestamp())).set_index("market_ticker").reindex(rows["market_ticker"])
        rule.append(pd.Series(locked_outcomes(newest["bracket"].fillna("between").to_numpy(),
                                              newest["floor_strike"].to_numpy(), newest["cap_strike"].to_numpy(),
                                              newest["day_max_so_far"].to_numpy(), config.lock_margin_f),
                              index=rows.index))
    decided = pd.concat(rule).reindex(stored.index)
    np.testing.assert_array_equal(stored["locked"].to_numpy(), decided.notna().to_numpy())
    with engine.connect() as conn:
        results = dict(conn.execute(select(Market.ticker, Market.result)).all())
    settled = pd.Series(results).map({"yes": 1.0, "no": 0.0})
    np.testing.assert_array_equal(locked["p_model"].to_numpy(), settled[locked["market_ticker"]].to_numpy())


def test_no_tick_reads_data_after_its_clock(promoted, monkeypatch):
    engine, client = promoted["engine"], promoted["client"]
    seen = []
    real = ReplaySource.snapshot

    def spy(self, now_ts):
        snap = real(self, now_ts)
        seen.append((now_ts, int(snap.candles["end_period_ts"].max()) if len(snap.candles) else 0))
        return snap

    monkeypatch.setattr(ReplaySource, "snapshot", spy)
    replay_day(RtConfig.model_validate(RT), engine, client, DAY, max_ticks=100)
    assert len(seen) == 100 and all(candle <= now for now, candle in seen)

    source = ReplaySource(engine, [("chicago", "between")], DAY, 20)
    now_ts = int(source.candles["end_period_ts"].iloc[len(source.candles) // 2])
    source._candle_ts = source._candle_ts - 600  # a bug that would leak candles from the future
    with pytest.raises(LookaheadError):
        source.snapshot(now_ts)


def test_a_day_without_a_promoted_model_skips_with_the_reason(promoted):
    engine, client = promoted["engine"], promoted["client"]
    clear_rt_records(engine)
    replay_day(RtConfig.model_validate(RT), engine, client, date(2025, 7, 5), max_ticks=100)
    stored = _stored(engine)
    modelled = stored["skip_reason"].fillna("")
    assert len(stored) and (stored["size_fraction"] == 0).all()
    assert modelled.str.startswith("no model: no model for chicago/between on 2025-07-0").mean() > 0.5


def test_writer_buffers_while_the_database_is_away(promoted):
    dead = create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none", pool_pre_ping=True)
    writer = SignalWriter(dead, mode="test", retry=DbRetry(Backoff(attempts=2), sleep=lambda _s: None), buffer_max=2)
    tick = {"ts_utc": datetime(2025, 7, 18, tzinfo=UTC), "mode": "test", "markets": 0, "signals": 0,
            "skips": "{}", "latency_ms": 1.0}
    empty = SignalRows({"ts_utc": np.zeros(0, np.int64), "market_ticker": np.zeros(0, object)})
    writer.submit(empty, tick)
    assert writer.flush() is False and len(writer.pending) == 1  # kept, not dropped
    writer.submit(empty, tick)
    with pytest.raises(BufferFullError, match="2 ticks unwritten"):
        writer.submit(empty, tick)


@pytest.mark.postgres
def test_writer_survives_a_terminated_backend(promoted, postgres_url, postgres_admin_url):
    migrations.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO markets (ticker, event_ticker, series_ticker, city, event_date, strike_type, "
                          "open_time, close_time) VALUES ('KXHIGHCHI-25JUL18-B85.5', 'KXHIGHCHI-25JUL18', "
                          "'KXHIGHCHI', 'chicago', '2025-07-18', 'between', now(), now())"))
    writer = SignalWriter(engine, mode="test", retry=DbRetry(sleep=lambda _s: None))

    def tick(minute: int):
        ts = datetime(2025, 7, 18, 12, minute, tzinfo=UTC)
        signals = SignalRows({"ts_utc": np.array([int(ts.timestamp())]),
                              "market_ticker": np.array(["KXHIGHCHI-25JUL18-B85.5"], dtype=object),
                              "city": np.array(["chicago"], dtype=object),
                              "bracket": np.array(["between"], dtype=object), "size_fraction": np.array([0.0])})
        writer.submit(signals, {"ts_utc": ts, "mode": "test", "markets": 1, "signals": 0, "skips": "{}",
                                "latency_ms": 1.0})

    tick(0)
    assert writer.flush()
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        killed = conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE datname = :db AND pid <> pg_backend_pid()"),
                              {"db": make_engine(postgres_url).url.database}).all()
    admin.dispose()
    assert killed  # the writer's pooled connection was cut
    tick(1)
    assert writer.flush() and writer.written_ticks == 2
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM rt_signals")).scalar_one() == 2
    engine.dispose()


def test_cli_replay_and_status(promoted, monkeypatch, tmp_path):
    clear_rt_records(promoted["engine"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", promoted["tracking_uri"])
    cli = CliRunner()
    config = tmp_path / "rt.yaml"
    config.write_text("markets: [{city: chicago, bracket: between}]\ntick_seconds: 300\n")
    result = cli.invoke(app, ["serve-rt", "--config", str(config), "--replay", "2025-07-18", "--db-url",
                              promoted["db"]])
    assert result.exit_code == 0, result.output
    assert "replayed 287 ticks of 2025-07-18" in result.output and "strongest signals" in result.output
    assert "win_20250705_20250720" in result.output  # the promoted window's model traded
    status = cli.invoke(app, ["rt", "status", "--db-url", promoted["db"], "--last", "3"])
    assert status.exit_code == 0 and "replay" in status.output
    # the newest run public by the replay's last tick (23:55 LST = 05:55 UTC on the 19th): GFS 00z of the
    # 19th, public at 05:00 UTC, 0.9 h old then
    assert ("forecasts chicago: newest public 2025-07-19 05:00 UTC, 0.9 h old at the newest tick (gfs_seamless)"
            in status.output), status.output
    no_key = cli.invoke(app, ["serve-rt", "--config", str(config), "--once", "--db-url", promoted["db"]])
    assert no_key.exit_code == 2 and "set VC_API_KEY" in no_key.output


def test_a_stop_signal_ends_a_replay_after_the_tick_in_flight_with_every_tick_written(promoted):
    """SIGTERM while a slowed replay waits between ticks: the wait ends at once, no tick follows, and the tick run
    is written though a replay writes in batches of 100; the handlers before the block come back after it."""
    import os
    import signal
    import threading
    import time

    from kwx.rt.loop import StopFlag

    engine, client = promoted["engine"], promoted["client"]
    clear_rt_records(engine)
    waits = []

    class SignalledWhileWaiting(StopFlag):
        def wait(self, seconds: float) -> None:
            if not waits:
                threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
            waits.append(seconds)
            super().wait(seconds)

    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    with SignalledWhileWaiting().installed() as stop:  # ticks of 300 s at 5x real time: a minute between ticks
        result = replay_day(RtConfig.model_validate(RT), engine, client, DAY, speed=5, max_ticks=3, stop=stop)
    assert time.monotonic() - started < 30 and waits == [60.0]
    assert result.stopped and result.ticks == 1
    assert _stored(engine)["ts_utc"].nunique() == 1
    assert signal.getsignal(signal.SIGTERM) is before
    assert not replay_day(RtConfig.model_validate(RT), engine, client, DAY, max_ticks=2).stopped


def test_ctrl_c_stops_a_cli_replay_with_one_line_and_exit_0(promoted, monkeypatch, tmp_path):
    """`kwx serve-rt --replay` under Ctrl-C: a line that says it stopped, the usual summary, no traceback."""
    import os
    import signal
    import threading
    import time

    clear_rt_records(promoted["engine"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", promoted["tracking_uri"])
    config = tmp_path / "rt.yaml"
    config.write_text("markets: [{city: chicago, bracket: between}]\ntick_seconds: 300\n")
    default = signal.getsignal(signal.SIGINT)

    def interrupt_once_the_replay_handles_it() -> None:
        deadline = time.monotonic() + 60
        while signal.getsignal(signal.SIGINT) is default and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_the_replay_handles_it, daemon=True).start()
    result = CliRunner().invoke(app, ["serve-rt", "--config", str(config), "--replay", "2025-07-18", "--speed", "5",
                                      "--db-url", promoted["db"]])
    assert result.exit_code == 0, result.output
    assert "stopped: " in result.output and " ticks of 2025-07-18 run and written" in result.output
    assert "Traceback" not in result.output
    assert signal.getsignal(signal.SIGINT) is default


def test_replay_of_a_day_with_no_stored_data_is_one_line_exit_2(promoted, sqlite_url, tmp_path, monkeypatch):
    migrations.upgrade(sqlite_url)  # an empty database
    # the shared store: the CLI points MLflow's process-wide URI at it, and later tests load models from it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", promoted["tracking_uri"])
    config = tmp_path / "rt.yaml"
    config.write_text("markets: [{city: chicago, bracket: between}]\n")
    result = CliRunner().invoke(app, ["serve-rt", "--config", str(config), "--replay", "1999-01-01",
                                      "--db-url", sqlite_url])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == "error: no stored markets for chicago/between around 1999-01-01"


def test_sigint_and_sigterm_finish_the_current_tick(promoted):
    import os
    import signal as signals_module

    from kwx.rt.loop import StopFlag, TickRunner, run_loop

    engine, client = promoted["engine"], promoted["client"]
    clear_rt_records(engine)
    config = RtConfig.model_validate(RT)
    source = ReplaySource(engine, [("chicago", "between")], DAY, config.max_obs_age_minutes)
    start, _ = climate_day_bounds(DAY, get_city("chicago"))
    clock = SimulatedClock(start + timedelta(hours=12))
    runner_ = TickRunner(config, source, RegistryResolver(RegistryCache(client, clock), "Production"))
    writer = SignalWriter(engine, mode="replay")
    previous = {s: signals_module.getsignal(s) for s in (signals_module.SIGINT, signals_module.SIGTERM)}
    stop = StopFlag()
    stop.install()
    try:
        seen = []

        def interrupt(tick, _signals):
            seen.append(tick["ts_utc"])
            if len(seen) == 3:
                os.kill(os.getpid(), signals_module.SIGTERM)

        ticks = run_loop(config, clock, runner_, writer, realtime=False, stop=stop, on_tick=interrupt)
    finally:
        for sig, handler in previous.items():
            signals_module.signal(sig, handler)
    assert ticks == 3 and writer.written_ticks == 3 and not writer.pending  # the tick in flight was finished
    assert _stored(engine)["ts_utc"].nunique() == 3


def test_ticks_mark_candles_complete(promoted):
    from kwx.data.schema import Candle

    engine, client = promoted["engine"], promoted["client"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE candles SET complete = false"))
    replay_day(RtConfig.model_validate(RT), engine, client, DAY, max_ticks=60)
    with engine.connect() as conn:
        marked = pd.read_sql(select(Candle.market_ticker, Candle.end_period_ts, Candle.yes_bid_close)
                             .where(Candle.complete.is_(True)), conn)
    assert len(marked) > 10 and marked["yes_bid_close"].notna().all()
    start, _ = climate_day_bounds(DAY, get_city("chicago"))
    assert marked["end_period_ts"].max() <= int(start.timestamp()) + 60 * 300  # nothing past the last tick


def test_a_candle_leaving_the_lookback_changes_the_tick_signature():
    # The tick reuses features while the signature holds; a candle ageing out of the lookback must end that,
    # or the loop reports "stale quote" from memory where the data now say "no candle in the lookback".
    markets = pd.DataFrame({"ticker": ["KXHIGHCHI-25JUL18-B84.5"]})
    candles = pd.DataFrame({"market_ticker": ["KXHIGHCHI-25JUL18-B84.5"] * 2, "end_period_ts": [1_000, 1_600]})
    weather = {"chicago": pd.DataFrame({"ts_utc": pd.to_datetime([1_500], unit="s", utc=True)})}
    # Both candles stay in the snapshot's window (it reaches back two lookbacks), but at 1,950 the one
    # from 1,000 has left the candle lookback.
    before = Snapshot(1_800, markets, candles, weather).signature()
    assert before != Snapshot(1_950, markets, candles, weather).signature()
    # and a candle leaving the window altogether changes it too
    assert before != Snapshot(1_800, markets, candles.iloc[1:], weather).signature()


def test_the_replay_s_data_version_changes_whenever_the_counted_signature_does(promoted):
    """The replay names its data by slice bounds, so the tick's signature skips counting candles every tick; over
    every tick of six hours it must change at least whenever the signature that counts them changes."""
    source = ReplaySource(promoted["engine"], [("chicago", "between"), ("chicago", "greater")], DAY, 20)
    start = int(source.candles["end_period_ts"].iloc[0])
    named = counted = None
    lookback_changes = 0
    for now_ts in range(start, start + 6 * 3600, 9):
        snap = source.snapshot(now_ts)
        new_named, new_counted = snap.signature(), replace(snap, data_version=None).signature()
        if counted is not None and new_counted != counted:
            assert new_named != named, now_ts
            lookback_changes += new_counted[4] != counted[4] and new_counted[:4] == counted[:4]
        named, counted = new_named, new_counted
    assert lookback_changes > 0  # ticks where only a candle leaving the lookback changed the inputs were seen


def test_a_snapshot_is_reused_inside_a_minute_and_renewed_by_new_data(promoted):
    source = ReplaySource(promoted["engine"], [("chicago", "between")], DAY, 20)
    minute = int(source.candles["end_period_ts"].iloc[len(source.candles) // 2])
    first = source.snapshot(minute + 9)
    later = source.snapshot(minute + 45)
    assert later.data_version == first.data_version and later.now_ts == minute + 45
    assert later.candles is first.candles  # the same slices, seen at a later clock time
    renewed = source.snapshot(minute + 60)
    assert renewed.data_version != first.data_version
    assert renewed.candles["end_period_ts"].max() == minute + 60


def test_tick_records_count_real_skip_reasons(promoted):
    engine, client = promoted["engine"], promoted["client"]
    clear_rt_records(engine)
    replay_day(RtConfig.model_validate(RT), engine, client, DAY, max_ticks=40)
    with engine.connect() as conn:
        ticks = conn.execute(text("SELECT markets, signals, skips FROM rt_ticks")).all()
    assert len(ticks) == 40
    counted = [json.loads(skips) for _, _, skips in ticks]
    assert all(reason and reason != "NaN" for skips in counted for reason in skips)
    assert any(counted)
    for (markets, signals, _), skips in zip(ticks, counted, strict=True):
        assert sum(skips.values()) + signals <= markets


def test_a_replay_reads_the_registry_on_real_time_not_simulated_time(promoted, monkeypatch):
    import kwx.registry.cache as cache_module

    reads = []
    real = cache_module.stage_table

    def counted(client, name, stage):
        reads.append(name)
        return real(client, name, stage)

    monkeypatch.setattr(cache_module, "stage_table", counted)
    result = replay_day(RtConfig.model_validate(RT), promoted["engine"], promoted["client"], DAY, max_ticks=100)
    assert result.ticks == 100  # 500 simulated minutes, a few real seconds
    assert reads == [model_name("chicago", "between")]  # once; on simulated time, every tick


def test_replayed_forecast_features_equal_the_batch_and_never_look_ahead(promoted):
    """Tick by tick, the forecast features a replay computes from what was public equal the whole day's batch
    over every stored forecast; a source that hands out a forecast before it was public is refused."""
    from kwx.domain.forecast import FORECAST_FEATURES
    from kwx.rt.loop import snapshot_features

    engine = promoted["engine"]
    config = RtConfig.model_validate(RT)
    source = ReplaySource(engine, [("chicago", "between")], DAY, config.max_obs_age_minutes)
    assert len(source.forecasts.forecasts) and len(source.forecasts.scales)
    batch = build_features(source.candles, source.markets, source.weather["chicago"], get_city("chicago"),
                           forecasts=source.forecasts)
    start, _ = climate_day_bounds(DAY, get_city("chicago"))
    compared = 0
    for k in range(-40, 96):  # from the evening before to the day's end, every 15 minutes
        now_ts = int(start.timestamp()) + 900 * k
        snap = source.snapshot(now_ts)
        assert int(snap.forecasts.forecasts["available_ts"].max()) <= now_ts
        streamed = pd.DataFrame(latest_rows(snapshot_features(snap, config), now_ts)).set_index("market_ticker")
        expected = latest_rows(batch, now_ts).set_index("market_ticker").loc[streamed.index]
        np.testing.assert_allclose(streamed[list(FORECAST_FEATURES)].to_numpy(dtype=float),
                                   expected[list(FORECAST_FEATURES)].to_numpy(dtype=float), equal_nan=True)
        compared += streamed["p_forecast"].notna().sum()
    assert compared > 100

    source._forecast_ts = source._forecast_ts - 12 * 3600  # a bug that would leak runs before they were public
    with pytest.raises(LookaheadError):
        source.snapshot(int(start.timestamp()) + 6 * 3600 + 7)


def test_minute_ticks_compute_the_weather_features_once_per_observation(promoted, monkeypatch):
    """Between two observations the source hands out the same weather frames and the runner reuses their features;
    minute by minute, what the ticks compute still equals the whole day's batch."""
    from kwx.rt import loop

    computed = []
    real = loop.weather_arrays
    monkeypatch.setattr(loop, "weather_arrays", lambda weather: computed.append(1) or real(weather))
    config = RtConfig.model_validate({**RT, "tick_seconds": 60})
    source = ReplaySource(promoted["engine"], [("chicago", "between")], DAY, config.max_obs_age_minutes)
    batch = build_features(source.candles, source.markets, source.weather["chicago"], get_city("chicago"))
    runner = loop.TickRunner(config, source, resolve=None)
    start, _ = climate_day_bounds(DAY, get_city("chicago"))
    columns = ["temp_now", "temp_rollmax_3h", "temp_delta_1h", "day_max_so_far", "humidity"]
    for minute in range(12 * 60, 14 * 60):
        now_ts = int(start.timestamp()) + 60 * minute + 1
        snap = source.snapshot(now_ts)
        streamed = pd.DataFrame(latest_rows(loop.snapshot_features(snap, config, runner._weather_features(snap)),
                                            now_ts)).set_index("market_ticker")
        expected = latest_rows(batch, now_ts).set_index("market_ticker").loc[streamed.index]
        np.testing.assert_array_equal(streamed[columns].to_numpy(dtype=float), expected[columns].to_numpy(dtype=float))
    observed = epoch_seconds(source.weather["chicago"]["ts_utc"])
    arrived = ((observed > int(start.timestamp()) + 12 * 3600) & (observed <= int(start.timestamp()) + 14 * 3600)).sum()
    assert 1 < len(computed) <= arrived + 1
