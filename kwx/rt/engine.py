"""One tick's signals from one tick's data: the same pure steps live, in replay and in backtests.

``compute_signals`` turns the newest feature row of every open market into a signal row (or a skip
with its reason); the model comes from a resolver so the registry stays out of this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd

from kwx.config import RtConfig
from kwx.domain.features import CANDLE_LOOKBACK_SECONDS, feature_columns
from kwx.domain.signals import BLENDS, FeeSchedule, SignalMath, best_side, market_probability

SIGNAL_COLUMNS = ["ts_utc", "market_ticker", "city", "bracket", "p_model", "p_market", "p_blend", "edge_cents",
                  "kelly_fraction", "size_fraction", "spread_cents", "minutes_to_close", "model_id", "wf_window",
                  "side", "skip_reason"]


@dataclass(frozen=True)
class ModelHandle:
    model: object
    model_id: str
    window: str
    feature_set: str


class ModelUnavailable(LookupError):
    """The resolver has no model for a (city, bracket, day); the message is the skip reason."""


Resolver = Callable[[str, str, date], ModelHandle]


def latest_rows(features: pd.DataFrame, now_ts: int) -> pd.DataFrame:
    """Each market's newest feature row in (now - CANDLE_LOOKBACK, now]: what a streaming caller holds."""
    ts = features["end_period_ts"]
    seen = features[(ts <= now_ts) & (ts > now_ts - CANDLE_LOOKBACK_SECONDS)]
    return seen.sort_values(["market_ticker", "end_period_ts"]).groupby("market_ticker", sort=True).tail(1)


@dataclass
class TickInputs:
    """Per open market, everything about a tick that depends on the data, not on the exact clock time."""

    tickers: np.ndarray
    city: np.ndarray
    bracket: np.ndarray
    close_ts: np.ndarray
    candle_ts: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    p_model: np.ndarray
    model_id: np.ndarray
    window: np.ndarray
    data_skip: np.ndarray  # reasons known from the data alone (None where none)


def join_latest(open_markets: pd.DataFrame, latest: pd.DataFrame) -> pd.DataFrame:
    """Each open market with its newest feature row (NaN where it has none), in ticker order.

    open_markets: ticker, city, strike_type, event_date, close_time (aware UTC).
    latest: the newest feature row per market (``latest_rows``), possibly missing some markets.
    """
    frame = open_markets.rename(columns={"ticker": "market_ticker", "strike_type": "bracket"})[
        ["market_ticker", "city", "bracket", "event_date", "close_time"]
    ].merge(latest.drop(columns=["bracket", "event_date"], errors="ignore"), on="market_ticker", how="left")
    return frame.sort_values("market_ticker").reset_index(drop=True)


def prepare_inputs(open_markets: pd.DataFrame, latest: pd.DataFrame, resolve: Resolver,
                   failed: dict[str, str] | None = None) -> TickInputs:
    """One tick's inputs: each open market joined with its newest feature row and its model's probability."""
    return inputs_from_rows(join_latest(open_markets, latest), resolve, failed)


def inputs_from_rows(frame: pd.DataFrame, resolve: Resolver, failed: dict[str, str] | None = None) -> TickInputs:
    """Data gates and model probabilities for rows of (market, newest feature row).

    Live, the rows are one tick's open markets; a backtest passes every (tick, market) row of a
    period at once. Either way each model predicts once over all its rows.
    """
    n = len(frame)
    reason = np.full(n, None, dtype=object)

    def skip(mask, text: str) -> None:
        reason[np.asarray(mask) & pd.isna(reason)] = text

    bid, ask = frame["yes_bid"].to_numpy(dtype=float), frame["yes_ask"].to_numpy(dtype=float)
    for ticker, why in (failed or {}).items():
        skip((frame["market_ticker"] == ticker).to_numpy(), f"data fetch failed: {why}"[:200])
    skip(frame["end_period_ts"].isna().to_numpy(), "no candle in the candle lookback")
    skip(np.isnan(bid) | np.isnan(ask), "no two-sided quote")
    skip(frame["temp_now"].isna().to_numpy(), "no fresh weather observation")
    p_model = np.full(n, np.nan)
    model_id = np.full(n, None, dtype=object)
    window = np.full(n, None, dtype=object)
    by_model: dict[str, tuple[ModelHandle, list[np.ndarray]]] = {}
    for (city, bracket, day), rows in frame[pd.isna(reason)].groupby(["city", "bracket", "event_date"]):
        try:
            handle = resolve(city, bracket, day)
        except ModelUnavailable as exc:
            skip(frame.index.isin(rows.index), f"no model: {exc}"[:200])
            continue
        by_model.setdefault(handle.model_id, (handle, []))[1].append(rows.index.to_numpy())
    for handle, parts in by_model.values():
        # one predict per model: today's and tomorrow's markets usually share a window's model
        index = np.concatenate(parts)
        bracket = frame.at[index[0], "bracket"]
        features = frame.loc[index, feature_columns(handle.feature_set, bracket)]
        p_model[index] = handle.model.predict_proba(features)[:, 1]
        model_id[index], window[index] = handle.model_id, handle.window
    close_ts = pd.to_datetime(frame["close_time"], utc=True).astype("datetime64[s, UTC]").astype("int64").to_numpy()
    return TickInputs(frame["market_ticker"].to_numpy(dtype=object), frame["city"].to_numpy(dtype=object),
                      frame["bracket"].to_numpy(dtype=object), close_ts,
                      frame["end_period_ts"].to_numpy(dtype=float), bid, ask, p_model, model_id, window, reason)


EDGE_GATE = "edge below tau_open_cents"


@dataclass(frozen=True)
class Decision:
    """The clock-dependent gates and the signal math over a tick's rows (``reason`` None where it trades)."""

    p_market: np.ndarray
    p_blend: np.ndarray
    math: SignalMath
    reason: np.ndarray
    minutes_left: np.ndarray
    spread: np.ndarray


def decide(now_ts, inputs: TickInputs, config: RtConfig, *, maker: bool = False) -> Decision:
    """Gates and signal math; ``now_ts`` is the tick time, or one time per row for many ticks at once.

    ``maker`` prices the resting side (YES at the bid, NO at 100 − ask) instead of the taker side.
    """
    reason = inputs.data_skip.copy()

    def skip(mask, text: str) -> None:
        reason[np.asarray(mask) & pd.isna(reason)] = text

    minutes_left = (inputs.close_ts - now_ts) / 60
    skip(minutes_left < config.min_minutes_to_close, "closing: inside min_minutes_to_close")
    skip(now_ts - inputs.candle_ts > config.max_quote_age_seconds,
         "stale quote: newest candle older than max_quote_age_seconds")
    bid, ask, p_model = inputs.bid, inputs.ask, inputs.p_model
    p_market = market_probability(bid, ask)
    p_blend = BLENDS[config.blend](p_model, p_market, config.blend_weight)
    fees = FeeSchedule(config.fees.taker_rate, config.fees.maker_rate, config.fees.contracts)
    math = best_side(np.nan_to_num(p_blend, nan=0.5), np.nan_to_num(bid, nan=1), np.nan_to_num(ask, nan=99),
                     config.risk, fees, maker=maker)
    spread = ask - bid
    skip(spread > config.risk.max_spread_cents, "spread wider than max_spread_cents")
    skip(math.edge_cents < config.risk.tau_open_cents, EDGE_GATE)
    return Decision(p_market, p_blend, math, reason, minutes_left, spread)


def finalize_signals(now_ts, inputs: TickInputs, config: RtConfig) -> pd.DataFrame:
    """The rt_signals rows of one tick (or of many, with one ``now_ts`` per row): cheap, run every tick."""
    d = decide(now_ts, inputs, config)
    trade = pd.isna(d.reason)
    modelled = ~np.isnan(inputs.p_model)
    return pd.DataFrame({
        "ts_utc": pd.to_datetime(now_ts, unit="s", utc=True),
        "market_ticker": inputs.tickers, "city": inputs.city, "bracket": inputs.bracket,
        "p_model": inputs.p_model, "p_market": d.p_market, "p_blend": np.where(modelled, d.p_blend, np.nan),
        "edge_cents": np.where(modelled, d.math.edge_cents, np.nan),
        "kelly_fraction": np.where(trade, d.math.kelly_fraction, 0.0),
        "size_fraction": np.where(trade, d.math.size_fraction, 0.0),
        "spread_cents": d.spread, "minutes_to_close": d.minutes_left, "model_id": inputs.model_id,
        "wf_window": inputs.window, "side": np.where(trade, d.math.side, None), "skip_reason": d.reason,
    }, columns=SIGNAL_COLUMNS)


def compute_signals(now: datetime, open_markets: pd.DataFrame, latest: pd.DataFrame, resolve: Resolver,
                    config: RtConfig) -> pd.DataFrame:
    """One row per open market: the signal, or NaNs and a ``skip_reason`` saying why there is none."""
    return finalize_signals(int(now.timestamp()), prepare_inputs(open_markets, latest, resolve), config)
