"""The backtest over a period: every minute's decision for every open market, then execution. Pure.

The decisions come from the live loop's own steps (``kwx.rt.engine``): the same features, model
resolution, gates and signal math, evaluated for all (minute, market) rows of the period at once.
A decision at minute t sees only candles ending at or before t; its order can fill only on the
candle of the following minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cached_property

import numpy as np
import pandas as pd

from kwx.config import RtConfig
from kwx.domain.execution import allocate, episode_ids, settle, trades_through
from kwx.domain.features import CANDLE_LOOKBACK_SECONDS, epoch_seconds
from kwx.domain.fees import FeeBook
from kwx.domain.orders import maker_gates, step_through
from kwx.domain.performance import DayCoverage, by_city_bracket, daily_pnl, day_coverage, summarize
from kwx.rt.engine import TickInputs, decide, execution_caps, order_limits
from kwx.rt.sources import LookaheadError

TICK_SECONDS = 60  # decisions once per minute, when each new candle is in
# Why a decision row could not trade, in the order ``inputs_from_rows`` checks: its data first (candle, quote,
# weather), then, only for rows with data, its model (none for the day, or one that rejects the features).
NO_DATA, NO_MODEL = "no data", "no model"
OUT_OF_SAMPLE = "no model (out of sample only)"
MODEL_REJECTS_FEATURES = "model does not take the features"
SKIP_CHECKS = (NO_DATA, NO_MODEL, OUT_OF_SAMPLE, MODEL_REJECTS_FEATURES)


def skip_kinds(data_skip: np.ndarray) -> np.ndarray:
    """Each row's data or model skip reason as one of SKIP_CHECKS (None where the row had a model and data)."""
    reasons = pd.Series(data_skip, dtype=object)
    present = reasons.notna().to_numpy()
    text = reasons.where(present, "")

    def starts(prefix: str) -> np.ndarray:
        return text.str.startswith(prefix).to_numpy(dtype=bool)

    # the first matching condition wins: out of sample is the specific "no model" of backtests
    return np.select([~present, starts("no model: out of sample only"), starts("no model: "), starts("model ")],
                     [None, OUT_OF_SAMPLE, NO_MODEL, MODEL_REJECTS_FEATURES], NO_DATA).astype(object)


def tick_grid(markets: pd.DataFrame) -> pd.DataFrame:
    """Every whole minute each market is open: (market_ticker, tick_ts) with open_ts <= tick_ts < close_ts."""
    open_ts, close_ts = epoch_seconds(markets["open_time"]), epoch_seconds(markets["close_time"])
    first = -(-open_ts // TICK_SECONDS) * TICK_SECONDS
    counts = np.maximum((close_ts - 1 - first) // TICK_SECONDS + 1, 0)
    market = np.repeat(np.arange(len(markets)), counts)
    step = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return pd.DataFrame({"market_ticker": markets["ticker"].to_numpy()[market],
                         "tick_ts": first[market] + step * TICK_SECONDS})


def decision_rows(markets: pd.DataFrame, features: pd.DataFrame, candles: pd.DataFrame) -> pd.DataFrame:
    """Each (market, minute)'s newest feature row in the candle lookback — what the live tick holds — and
    the trades of the minute after it (price_low, price_high, volume as next_*), sorted by market then time.
    """
    grid = tick_grid(markets).sort_values("tick_ts", kind="stable")
    latest = features.drop(columns=["bracket", "event_date"]).sort_values("end_period_ts", kind="stable")
    rows = pd.merge_asof(grid, latest, left_on="tick_ts", right_on="end_period_ts", by="market_ticker",
                         direction="backward", tolerance=CANDLE_LOOKBACK_SECONDS - 1)
    seen = rows["end_period_ts"].to_numpy(dtype=float)
    if (seen > rows["tick_ts"].to_numpy()).any():
        raise LookaheadError("a backtest decision was given a candle stamped after its minute")
    following = candles[["market_ticker", "end_period_ts", "price_low", "price_high", "volume"]].rename(columns={
        "end_period_ts": "tick_ts", "price_low": "next_low", "price_high": "next_high", "volume": "next_volume"})
    following = following.assign(tick_ts=following["tick_ts"] - TICK_SECONDS)
    meta = markets.rename(columns={"ticker": "market_ticker", "strike_type": "bracket"})[
        ["market_ticker", "city", "bracket", "event_date"]].assign(close_ts=epoch_seconds(markets["close_time"]))
    rows = rows.merge(following, on=["market_ticker", "tick_ts"], how="left").merge(meta, on="market_ticker")
    return rows.sort_values(["market_ticker", "tick_ts"], kind="stable").reset_index(drop=True)


@dataclass
class Period:
    """A period's decision rows with their model inputs: loaded once, traded at any blend weight."""

    rows: pd.DataFrame
    inputs: TickInputs
    outcome: pd.Series  # market ticker -> 1.0 YES won, 0.0 lost, NaN unsettled
    days: list[date]
    fees: FeeBook  # the series' fees the inputs were priced with; the fills pay them too

    @cached_property
    def coverage(self) -> DayCoverage:
        """Traded and skipped days: the same at every blend weight, as they depend on data and models only."""
        return day_coverage(self.rows["event_date"], skip_kinds(self.inputs.data_skip), self.days, SKIP_CHECKS)


@dataclass
class BacktestResult:
    blend_weight: float
    summary: dict[str, float]
    daily: pd.DataFrame
    fills: pd.DataFrame
    by_city_bracket: pd.DataFrame
    coverage: DayCoverage


def simulate(period: Period, config: RtConfig) -> BacktestResult:
    """Trade the period maker-first under ``config`` (blend, risk, fees, execution)."""
    rows, inputs = period.rows, period.inputs
    tick = rows["tick_ts"].to_numpy(dtype=np.int64)
    execution = config.execution
    maker = decide(tick, inputs, config, maker=True)
    limits = order_limits(config)
    open_ok, keep_ok = maker_gates(maker.reason, maker.math.edge_cents, maker.minutes_left, limits)
    near_close = maker.minutes_left < execution.cancel_minutes_before_close
    codes = pd.factorize(rows["market_ticker"])[0]
    side = maker.math.better
    resting = step_through(tick, codes, open_ok, keep_ok, side, maker.math.price_cents, maker.math.edge_cents,
                           limits)
    episode = episode_ids(codes, side, resting)
    filled = resting & trades_through(side, maker.math.price_cents, rows["next_low"], rows["next_high"])
    columns = ["market_ticker", "city", "bracket", "event_date"]
    events = [rows.loc[filled, columns].assign(
        fill_ts=tick[filled] + TICK_SECONDS, decision_ts=tick[filled], side=side[filled], liquidity="maker",
        price_cents=maker.math.price_cents[filled], target_fraction=maker.math.target_fraction[filled],
        available=rows.loc[filled, "next_volume"].fillna(0).to_numpy(), episode=episode[filled],
        locked=inputs.locked[filled])]
    if execution.taker_fallback_cents is not None:
        taker = decide(tick, inputs, config, maker=False)
        take = pd.isna(taker.reason) & (taker.math.edge_cents >= execution.taker_fallback_cents) & ~near_close
        events.append(rows.loc[take, columns].assign(
            fill_ts=tick[take], decision_ts=tick[take], side=taker.math.side[take], liquidity="taker",
            price_cents=taker.math.price_cents[take], target_fraction=taker.math.size_fraction[take],
            available=np.inf, episode=-1, locked=inputs.locked[take]))
    settled = settle(allocate(pd.concat(events, ignore_index=True), execution_caps(config), period.fees),
                     period.outcome)
    coverage = period.coverage
    daily = daily_pnl(settled, coverage.traded)
    posted = int(np.unique(episode[episode >= 0]).size)
    return BacktestResult(config.blend_weight, summarize(settled, daily, execution.bankroll_dollars, posted, coverage),
                          daily, settled, by_city_bracket(settled), coverage)
