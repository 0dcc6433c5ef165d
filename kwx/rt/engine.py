"""One tick's signals from one tick's data: the same pure steps live, in replay and in backtests.

``compute_signals`` turns the newest feature row of every open market into a signal row (or a skip
with its reason); the model comes from a resolver so the registry stays out of this module.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from itertools import pairwise

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from kwx.config import RtConfig
from kwx.domain.execution import Caps
from kwx.domain.features import (
    ALL_FEATURES,
    epoch_seconds,
    feature_columns,
    index_of,
    newest_rows,
    uses_forecasts,
)
from kwx.domain.fees import FeeBook
from kwx.domain.markets import DEFAULT_LOCK_MARGIN_F, locked_outcomes
from kwx.domain.orders import EDGE_GATE, OrderLimits
from kwx.domain.signals import BLENDS, FeeSchedule, SignalMath, best_side, market_probability
from kwx.training.model import yes_probability

STALE_FORECAST = "stale forecast: none of its day public within max_forecast_age_hours"
SIGNAL_COLUMNS = ["ts_utc", "market_ticker", "city", "bracket", "p_model", "p_market", "p_blend", "edge_cents",
                  "kelly_fraction", "size_fraction", "spread_cents", "minutes_to_close", "model_id", "wf_window",
                  "side", "skip_reason", "locked"]


@dataclass(frozen=True)
class ModelHandle:
    model: object
    model_id: str
    window: str
    feature_set: str


class ModelUnavailable(LookupError):
    """The resolver has no model for a (city, bracket, day); the message is the skip reason."""


Resolver = Callable[[str, str, date], ModelHandle]
FeatureColumns = pd.DataFrame | Mapping[str, np.ndarray]  # feature rows: framed, or as one array per column


class TickResolutions:
    """A resolver that asks ``resolve`` once per (city, bracket, day), its model or its ``ModelUnavailable``
    reason kept: a tick asks which feature sets its models read before it builds features, then asks for the same
    models again for their rows. One per tick: a promotion reaches the next tick."""

    def __init__(self, resolve: Resolver):
        self._resolve = resolve
        self._answers: dict[tuple[str, str, date], ModelHandle | str] = {}

    def __call__(self, city: str, bracket: str, day: date) -> ModelHandle:
        key = (city, bracket, day)
        if key not in self._answers:
            try:
                self._answers[key] = self._resolve(city, bracket, day)
            except ModelUnavailable as exc:
                self._answers[key] = str(exc)
        answer = self._answers[key]
        if isinstance(answer, str):
            raise ModelUnavailable(answer)
        return answer


def reads_forecasts(open_markets: pd.DataFrame | Mapping[str, np.ndarray], resolve: Resolver) -> bool:
    """Whether the model of any open market (``Snapshot.markets``: city, strike_type, event_date) reads forecast
    features. When none does, a tick need not build them: a tenth of its features' cost, and every signal the
    same, since a model reads only its own set's columns."""
    keys = zip(*(np.asarray(open_markets[name], dtype=object).tolist()
                 for name in ("city", "strike_type", "event_date")), strict=True)
    for city, bracket, day in set(keys):
        if pd.isna(city) or pd.isna(bracket) or pd.isna(day):
            continue
        try:
            if uses_forecasts(resolve(city, bracket, day).feature_set):
                return True
        except ModelUnavailable:
            continue
    return False


def latest_rows(features: FeatureColumns, now_ts: int) -> FeatureColumns:
    """Each market's newest feature row in (now - CANDLE_LOOKBACK, now]: what a streaming caller holds.

    ``features``: a frame, or its columns as arrays (the loop's tick: framing them cost more than using them);
    the rows come back as the same kind.
    """
    ts = np.asarray(features["end_period_ts"], dtype=np.int64)
    codes, _ = pd.factorize(np.asarray(features["market_ticker"], dtype=object), sort=True)
    order = np.lexsort((ts, codes))
    picked = order[newest_rows(codes[order], ts[order], now_ts)]
    if isinstance(features, pd.DataFrame):
        return features.iloc[picked]
    return {name: np.asarray(values)[picked] for name, values in features.items()}


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
    p_model: np.ndarray  # the decided outcome (exactly 1 or 0) where ``locked``
    model_id: np.ndarray
    window: np.ndarray
    data_skip: np.ndarray  # reasons known from the data alone (None where none)
    locked: np.ndarray  # the settlement rule already decides the market: its model is not asked
    fees: FeeSchedule  # each row's Kalshi fee rates: its series' fee in force at its candle's time


def unavailable_inputs(last: TickInputs | None, now_ts: int, reason: str) -> TickInputs:
    """Inputs for a tick that could not read its data: the markets of ``last`` still open at ``now_ts``,
    with no data, no model and ``reason`` as their skip (none at all when no tick has read data yet)."""
    if last is None:
        tickers = city = bracket = np.zeros(0, dtype=object)
        close_ts = np.zeros(0, dtype=np.int64)
        fees = FeeBook().schedule(tickers, 0)
    else:
        rows = np.flatnonzero(last.close_ts > now_ts)
        tickers, city, bracket, close_ts = last.tickers[rows], last.city[rows], last.bracket[rows], last.close_ts[rows]
        fees = last.fees.take(rows)
    n = len(tickers)
    nothing = np.full(n, np.nan)
    return TickInputs(tickers, city, bracket, close_ts, nothing, nothing, nothing, nothing.copy(),
                      np.full(n, None, dtype=object), np.full(n, None, dtype=object), np.full(n, reason, dtype=object),
                      np.zeros(n, dtype=bool), fees)


def join_latest(open_markets: pd.DataFrame | Mapping[str, np.ndarray], latest: FeatureColumns) -> dict[str, np.ndarray]:
    """Each open market with its newest feature row (NaN where it has none), in ticker order, as columns.

    open_markets: ticker, city, strike_type, event_date, close_time (aware UTC): a frame, or its columns as arrays
    (``close_time`` as UTC datetime64; ``Snapshot.markets``).
    latest: the newest feature row per market (``latest_rows``), possibly missing some markets.
    Plain arrays, not a DataFrame: framing ~40 columns every minute cost more than using them.
    """
    tickers = np.asarray(open_markets["ticker"], dtype=object)
    order = np.argsort(tickers, kind="stable")
    at = index_of(np.asarray(latest["market_ticker"], dtype=object), tickers[order])
    found = at >= 0
    numeric = [c for c in latest if c not in ("market_ticker", "bracket", "event_date")]
    block = np.full((len(order), len(numeric)), np.nan)
    block[found] = np.column_stack([np.asarray(latest[name], dtype=float) for name in numeric])[at[found]]
    columns = {name: block[:, i] for i, name in enumerate(numeric)}
    for name, source in (("market_ticker", "ticker"), ("city", "city"), ("bracket", "strike_type"),
                         ("event_date", "event_date")):
        columns[name] = np.asarray(open_markets[source], dtype=object)[order]
    columns["close_ts"] = epoch_seconds(open_markets["close_time"])[order]
    return columns


def prepare_inputs(open_markets: pd.DataFrame | Mapping[str, np.ndarray], latest: FeatureColumns, resolve: Resolver,
                   failed: dict[str, str] | None = None, *, lock_margin_f: float = DEFAULT_LOCK_MARGIN_F,
                   fees: FeeBook | None = None) -> TickInputs:
    """One tick's inputs: each open market joined with its newest feature row and its model's probability."""
    return inputs_from_rows(join_latest(open_markets, latest), resolve, failed, lock_margin_f=lock_margin_f,
                            fees=fees)


def inputs_from_rows(frame: Mapping[str, ArrayLike], resolve: Resolver,
                     failed: dict[str, str] | None = None, *, lock_margin_f: float = DEFAULT_LOCK_MARGIN_F,
                     fees: FeeBook | None = None) -> TickInputs:
    """Data gates and model probabilities for rows of (market, newest feature row).

    Live, the rows are one tick's open markets (``join_latest``); a backtest passes a DataFrame of
    every (tick, market) row of a period at once. Either way each model predicts once over all its
    rows. Columns: market_ticker, city, bracket, event_date, close_ts, floor_strike, cap_strike and
    the features. Rows whose outcome the day's running maximum already decides (``locked_outcomes``)
    take that outcome as their probability; they still need a model for their day (a market trades
    only under a promoted model), which is not asked. ``fees`` prices each row at its series' fee in force at its
    candle's time (the market's close without one); None: Kalshi's general schedule for every series.
    """
    def column(name: str, dtype=None) -> np.ndarray:
        return np.asarray(frame[name], dtype=dtype)

    n = len(column("market_ticker"))
    reason = np.full(n, None, dtype=object)

    def skip(mask, text: str) -> None:
        reason[np.asarray(mask) & pd.isna(reason)] = text

    tickers, brackets = column("market_ticker", object), column("bracket", object)
    bid, ask, candle_ts = column("yes_bid", float), column("yes_ask", float), column("end_period_ts", float)
    for ticker, why in (failed or {}).items():
        skip(tickers == ticker, f"data fetch failed: {why}"[:200])
    skip(np.isnan(candle_ts), "no candle in the candle lookback")
    skip(np.isnan(bid) | np.isnan(ask), "no two-sided quote")
    skip(np.isnan(column("temp_now", float)), "no fresh weather observation")
    decided = locked_outcomes(brackets, column("floor_strike", float), column("cap_strike", float),
                              column("day_max_so_far", float), lock_margin_f)
    locked = ~np.isnan(decided)
    p_model = np.where(locked, decided, np.nan)
    model_id = np.full(n, None, dtype=object)
    window = np.full(n, None, dtype=object)
    by_model: dict[str, tuple[ModelHandle, list[np.ndarray]]] = {}
    keys = [column(name, object) for name in ("city", "bracket", "event_date")]
    for (city, bracket, day), rows in _groups(tickers, keys, np.flatnonzero(pd.isna(reason))):
        try:
            handle = resolve(city, bracket, day)
        except ModelUnavailable as exc:
            reason[rows] = f"no model: {exc}"[:200]
            continue
        by_model.setdefault(handle.model_id, (handle, []))[1].append(rows)
    # every model reads its columns from one float matrix of the frame's features
    columns = [c for c in ALL_FEATURES if c in frame]
    position_of = {c: i for i, c in enumerate(columns)}
    matrix = np.column_stack([column(c, float) for c in columns]) if columns else np.empty((n, 0))
    # (feature set, bracket, model columns) -> the model's columns of every row and each row's forecast (None: the
    # set reads none), or None where the model does not take its set's features: a tick's 21 models share 3 keys
    inputs_of: dict[tuple, tuple[np.ndarray, np.ndarray | None] | None] = {}
    for handle, parts in by_model.values():
        # one predict per model: today's and tomorrow's markets usually share a window's model
        rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
        yes = yes_probability(handle.model)
        key = (handle.feature_set, brackets[rows[0]], yes.columns)
        if key not in inputs_of:
            inputs_of[key] = None if list(yes.columns) != feature_columns(handle.feature_set, key[1]) else (
                matrix[:, [position_of[c] for c in yes.columns]],
                matrix[:, position_of["forecast_logit_ahead"]] if uses_forecasts(handle.feature_set) else None)
        if inputs_of[key] is None:
            reason[rows] = f"model {handle.model_id} does not take the {handle.feature_set} features"[:200]
            continue
        model_inputs, forecast = inputs_of[key]
        asked = rows[~locked[rows]]
        if forecast is not None:
            # the model was trained on imputed forecasts only where history lacked them; live, a missing
            # forecast is a data gap like stale weather, not a median to trade on
            stale = np.isnan(forecast[asked])  # NaN exactly without a forecast
            reason[asked[stale]] = STALE_FORECAST
            asked = asked[~stale]
        p_model[asked] = yes.of_rows(model_inputs[asked])
        model_id[rows], window[rows] = handle.model_id, handle.window
    close_ts = column("close_ts", np.int64)
    rates = (fees or FeeBook()).schedule(tickers, np.where(np.isnan(candle_ts), close_ts, candle_ts))
    return TickInputs(tickers, keys[0], brackets, close_ts, candle_ts, bid, ask, p_model, model_id, window, reason,
                      locked, rates)


def _groups(markets: np.ndarray, keys: list[np.ndarray], rows: np.ndarray):
    """(key tuple, positions) of the given rows grouped by the key columns, in key order (rows with a missing
    key in none).

    The keys are market attributes (``markets``: each row's ticker), so they are read once per market: one
    factorize of the tickers instead of a sorted one per key column (each cost more than a tick's few dozen rows).
    """
    codes, _ = pd.factorize(markets[rows])
    _, first = np.unique(codes, return_index=True)  # each market's first row
    first_keys = [values[rows[first]] for values in keys]
    known = ~np.any([pd.isna(values) for values in first_keys], axis=0)
    market_keys = list(zip(*first_keys, strict=True))
    ordered = sorted({key for key, ok in zip(market_keys, known.tolist(), strict=True) if ok})
    group_of = {key: group for group, key in enumerate(ordered)}
    group = np.array([group_of.get(key, -1) for key in market_keys], dtype=np.int64)[codes]
    order = np.argsort(group, kind="stable")
    order = order[group[order] >= 0]
    grouped = group[order]
    bounds = [0, *(np.flatnonzero(grouped[1:] != grouped[:-1]) + 1).tolist(), len(order)]
    for start, end in pairwise(bounds if len(order) else ()):
        yield ordered[grouped[start]], rows[order[start:end]]


@dataclass(frozen=True)
class Pricing:
    """The clock-independent half of a decision: probabilities, the best side's math, the price gates.

    It changes only with the data, so the loop prices once per new candle and gates every tick.
    """

    p_market: np.ndarray
    p_blend: np.ndarray
    math: SignalMath
    spread: np.ndarray
    price_skip: np.ndarray  # the spread or edge gate's reason (None where both pass)


def price(inputs: TickInputs, config: RtConfig, *, maker: bool = False) -> Pricing:
    """Blend, fees (each row's own, ``inputs.fees``), Kelly and the price gates over a tick's rows.

    ``maker`` prices the resting side (YES at the bid, NO at 100 − ask) instead of the taker side.
    """
    bid, ask, p_model = inputs.bid, inputs.ask, inputs.p_model
    p_market = market_probability(bid, ask)
    # a decided outcome is not an opinion to pool with the market's
    p_blend = np.where(inputs.locked, p_model, BLENDS[config.blend](p_model, p_market, config.blend_weight))
    math = best_side(np.nan_to_num(p_blend, nan=0.5), np.nan_to_num(bid, nan=1), np.nan_to_num(ask, nan=99),
                     config.risk, inputs.fees, maker=maker)
    spread = ask - bid
    price_skip = np.where(math.edge_cents < config.risk.tau_open_cents, EDGE_GATE, None)
    price_skip = np.where(spread > config.risk.max_spread_cents, "spread wider than max_spread_cents", price_skip)
    return Pricing(p_market, p_blend, math, spread, price_skip)


@dataclass(frozen=True)
class Decision:
    """The clock-dependent gates and the signal math over a tick's rows (``reason`` None where it trades)."""

    p_market: np.ndarray
    p_blend: np.ndarray
    math: SignalMath
    reason: np.ndarray
    minutes_left: np.ndarray
    spread: np.ndarray

    @property
    def trade(self) -> np.ndarray:
        return pd.isna(self.reason)

    def sized(self) -> int:
        """Rows that trade with a positive size: the tick's signals."""
        return int(np.count_nonzero(self.trade & (self.math.size_fraction > 0)))

    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(r for r in self.reason if r is not None))


def decide(now_ts, inputs: TickInputs, config: RtConfig, *, maker: bool = False,
           pricing: Pricing | None = None) -> Decision:
    """Gates and signal math; ``now_ts`` is the tick time, or one time per row for many ticks at once.

    The first gate that fails names the skip: data, closing, stale quote, then the price gates.
    ``pricing`` is ``price(inputs, config, maker=maker)`` when the caller already holds it.
    """
    if pricing is None:
        pricing = price(inputs, config, maker=maker)
    reason = inputs.data_skip.copy()

    def skip(mask, text: str) -> None:
        reason[np.asarray(mask) & pd.isna(reason)] = text

    minutes_left = (inputs.close_ts - now_ts) / 60
    skip(minutes_left < config.min_minutes_to_close, "closing: inside min_minutes_to_close")
    skip(now_ts - inputs.candle_ts > config.max_quote_age_seconds,
         "stale quote: newest candle older than max_quote_age_seconds")
    unset = pd.isna(reason)
    reason[unset] = pricing.price_skip[unset]
    return Decision(pricing.p_market, pricing.p_blend, pricing.math, reason, minutes_left, pricing.spread)


@dataclass(frozen=True)
class SignalRows:
    """rt_signals rows as numpy columns, ``ts_utc`` in Unix seconds.

    Cheap enough to make every tick; the DataFrame is built only when rows are read: a writer's
    batch of ticks at once, a display. (Framing every tick cost more than the tick's math.)
    """

    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["market_ticker"])

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({name: pd.to_datetime(values, unit="s", utc=True) if name == "ts_utc" else values
                             for name, values in self.columns.items()})

    def stored(self) -> dict[str, np.ndarray]:
        """The columns as ``upsert_columns`` writes them: ``ts_utc`` as UTC ``datetime64``."""
        return self.columns | {"ts_utc": self.columns["ts_utc"].astype("datetime64[s]")}

    def take(self, rows) -> SignalRows:
        return SignalRows({name: values[rows] for name, values in self.columns.items()})

    @classmethod
    def concat(cls, parts: list[SignalRows]) -> SignalRows:
        return cls({name: np.concatenate([part.columns[name] for part in parts]) for name in parts[0].columns})


def finalize_signals(now_ts, inputs: TickInputs, config: RtConfig) -> pd.DataFrame:
    """The rt_signals rows of one tick (or of many, with one ``now_ts`` per row)."""
    return signal_rows(now_ts, inputs, decide(now_ts, inputs, config)).frame()


def signal_rows(now_ts, inputs: TickInputs, d: Decision) -> SignalRows:
    """The rt_signals rows of a decision over ``inputs`` at ``now_ts`` (one time, or one per row)."""
    trade = d.trade
    modelled = ~np.isnan(inputs.p_model)
    return SignalRows({
        "ts_utc": np.broadcast_to(np.asarray(now_ts, dtype=np.int64), trade.shape).copy(),
        "market_ticker": inputs.tickers, "city": inputs.city, "bracket": inputs.bracket,
        "p_model": inputs.p_model, "p_market": d.p_market, "p_blend": np.where(modelled, d.p_blend, np.nan),
        "edge_cents": np.where(modelled, d.math.edge_cents, np.nan),
        "kelly_fraction": np.where(trade, d.math.kelly_fraction, 0.0),
        "size_fraction": np.where(trade, d.math.size_fraction, 0.0),
        "spread_cents": d.spread, "minutes_to_close": d.minutes_left, "model_id": inputs.model_id,
        "wf_window": inputs.window, "side": np.where(trade, d.math.side, None), "skip_reason": d.reason,
        "locked": inputs.locked,
    })


def compute_signals(now: datetime, open_markets: pd.DataFrame, latest: pd.DataFrame, resolve: Resolver,
                    config: RtConfig) -> pd.DataFrame:
    """One row per open market: the signal, or NaNs and a ``skip_reason`` saying why there is none."""
    return finalize_signals(int(now.timestamp()), prepare_inputs(open_markets, latest, resolve), config)


def order_limits(config: RtConfig) -> OrderLimits:
    """The execution policy's limits from an rt config (``kwx.domain.orders``)."""
    return OrderLimits(config.risk.tau_close_cents, config.execution.cancel_minutes_before_close,
                       config.execution.max_open_orders, config.execution.taker_fallback_cents)


def execution_caps(config: RtConfig) -> Caps:
    """The fills' caps from an rt config (``kwx.domain.execution.Allocator``)."""
    return Caps(config.execution.bankroll_dollars * 100, config.risk.max_bankroll_pct_city_day_side,
                config.risk.slip_per_leg_cents, config.execution.max_position_contracts)

