"""The execution policy: from one tick's decisions and the resting orders, what to place, re-peg and cancel.

Pure numpy over the tick's markets. ``kwx backtest`` steps it through every minute of a period, and paper and
live trading call it every tick, so all three rest, re-peg and cancel the same orders:

- a maker buy rests at the maker price (YES at the bid, NO at 100 − ask) where every gate passes and the edge
  clears ``tau_open_cents``; it stays, re-pegged to the current maker price, while every gate but the edge
  passes, the edge is at least ``tau_close_cents`` and the better side is still its side (hysteresis);
- it is cancelled otherwise, ``cancel_minutes_before_close`` before the close, and when trading is halted (the
  kill switch, or the day's loss reaching ``max_daily_loss_dollars``);
- at most ``max_open_orders`` rest at once, the largest edges first;
- with ``taker_fallback_cents`` set, a taker edge at least that large crosses the spread at once.

How many contracts an order may buy is the fills' business (``execution.Allocator``): the Kelly target less
what is held, the position limit and the city/day/side cap, all checked before anything is sent.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

EDGE_GATE = "edge below tau_open_cents"  # the one gate hysteresis lets a resting order outlive
NO_SIDE = ""


@dataclass(frozen=True)
class OrderLimits:
    tau_close_cents: float
    cancel_minutes_before_close: float
    max_open_orders: int
    taker_fallback_cents: float | None = None


@dataclass(frozen=True)
class OrderStep:
    """What one tick does to each market's maker order, and which markets take liquidity."""

    rest: np.ndarray  # a maker order rests after this tick (at ``price`` on ``side``)
    place: np.ndarray  # a new order: none rested, or it rested on the other side
    repeg: np.ndarray  # the resting order moves to the current maker price
    cancel: np.ndarray  # the resting order goes (closing, a gate, the edge, a side flip, a halt)
    take: np.ndarray  # cross the spread now (taker fallback)


def maker_gates(reason: np.ndarray, edge_cents: np.ndarray, minutes_left: np.ndarray,
                limits: OrderLimits) -> tuple[np.ndarray, np.ndarray]:
    """(open_ok, keep_ok): every gate passes and the edge clears tau_open; or every gate but the edge passes
    and the edge clears tau_close. Neither within ``cancel_minutes_before_close`` of the close."""
    reason = np.asarray(reason, dtype=object)
    clear = pd.isna(reason)
    away = np.asarray(minutes_left, dtype=float) >= limits.cancel_minutes_before_close
    open_ok = clear & away
    keep_ok = (clear | (reason == EDGE_GATE)) & away & (np.asarray(edge_cents, dtype=float) >= limits.tau_close_cents)
    return open_ok, keep_ok


def order_step(open_ok: np.ndarray, keep_ok: np.ndarray, side: np.ndarray, price_cents: np.ndarray,
               edge_cents: np.ndarray, resting_side: np.ndarray, resting_price: np.ndarray, limits: OrderLimits,
               *, halted: bool = False, taker_ok: np.ndarray | None = None,
               taker_edge_cents: np.ndarray | None = None) -> OrderStep:
    """One tick of the policy over its markets (aligned arrays).

    ``side``/``price_cents``/``edge_cents`` are the maker decision's better side, its price and net edge;
    ``resting_side`` is the side of the order resting now ("" where none) and ``resting_price`` its price.
    ``taker_ok`` (every gate passes at the taker price, away from the close) with ``taker_edge_cents`` drive
    the taker fallback.
    """
    side = np.asarray(side, dtype=object)
    resting_side = np.asarray(resting_side, dtype=object)
    had = resting_side != NO_SIDE
    rest = np.asarray(open_ok, dtype=bool) | (np.asarray(keep_ok, dtype=bool) & had & (side == resting_side))
    if halted:
        rest = np.zeros(len(side), dtype=bool)
    if rest.sum() > limits.max_open_orders:
        # the largest edges keep their place; ties by position, so the choice is deterministic
        ranked = np.flatnonzero(rest)[np.argsort(-np.asarray(edge_cents, dtype=float)[rest], kind="stable")]
        rest = np.zeros(len(side), dtype=bool)
        rest[ranked[:limits.max_open_orders]] = True
    same = had & (side == resting_side)
    place = rest & ~same
    repeg = rest & same & (np.asarray(price_cents, dtype=float) != np.asarray(resting_price, dtype=float))
    cancel = had & ~(rest & same)
    take = np.zeros(len(side), dtype=bool)
    if limits.taker_fallback_cents is not None and taker_ok is not None and not halted:
        take = np.asarray(taker_ok, dtype=bool) & (np.asarray(taker_edge_cents, dtype=float)
                                                   >= limits.taker_fallback_cents)
    return OrderStep(rest, place, repeg, cancel, take)


def step_through(tick_ts: np.ndarray, codes: np.ndarray, open_ok: np.ndarray, keep_ok: np.ndarray, side: np.ndarray,
                 price_cents: np.ndarray, edge_cents: np.ndarray, limits: OrderLimits) -> np.ndarray:
    """``order_step`` tick after tick over a period's (market, minute) rows: whether a maker order rests after
    each row's decision. ``codes`` numbers the markets; rows may come in any order.

    What the backtest runs, so its orders are the ones paper and live trading would have had: one small
    step per minute (the minutes' markets as arrays), not a loop over rows.
    """
    n = len(tick_ts)
    rest = np.zeros(n, dtype=bool)
    if n == 0:
        return rest
    order = np.lexsort((codes, tick_ts))
    bounds = np.flatnonzero(np.r_[True, np.diff(np.asarray(tick_ts)[order]) != 0, True])
    resting_side = np.full(int(np.max(codes)) + 1, NO_SIDE, dtype=object)
    resting_price = np.full(len(resting_side), np.nan)
    side, price = np.asarray(side, dtype=object), np.asarray(price_cents, dtype=float)
    for start, stop in itertools.pairwise(bounds):
        rows = order[start:stop]
        market = codes[rows]
        step = order_step(open_ok[rows], keep_ok[rows], side[rows], price[rows], edge_cents[rows],
                          resting_side[market], resting_price[market], limits)
        rest[rows] = step.rest
        resting_side[market] = np.where(step.rest, side[rows], NO_SIDE)
        resting_price[market] = np.where(step.rest, price[rows], np.nan)
    return rest
