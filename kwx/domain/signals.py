"""Signal math: blending, Kalshi fees, edge, fractional Kelly sizing and risk gates. Pure numpy.

Prices are cents (1..99) for a contract paying 100 cents; probabilities are YES probabilities.
Every function takes scalars or arrays alike, so the live loop (one market) and the backtest (a day
of candles) run the same arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kwx.config import RiskParams

_EPS = 1e-6


@dataclass(frozen=True)
class FeeSchedule:
    """Kalshi's quadratic fee: ceil-to-the-cent(rate × C × P × (1 − P)) dollars for C contracts at P dollars.

    The rates are a series' (``kwx.domain.fees``): one number, or one per row when rows belong to
    series or times with different fees. Fees are computed for an order of ``contracts`` contracts and
    spread per contract, since the rounding is per order.
    """

    taker_rate: float | np.ndarray = 0.07
    maker_rate: float | np.ndarray = 0.0
    contracts: int = 10

    def take(self, rows) -> FeeSchedule:
        """The rates of ``rows`` where they are per row."""
        def part(rate):
            return rate[rows] if np.ndim(rate) else rate
        return FeeSchedule(part(self.taker_rate), part(self.maker_rate), self.contracts)

    def per_contract_cents(self, price_cents, maker: bool = False):
        return self.order_cents(price_cents, self.contracts, maker) / self.contracts

    def order_cents(self, price_cents, contracts, maker: bool = False):
        """The fee of one order of ``contracts`` contracts: what a fill actually pays (rounded per order)."""
        price = np.asarray(price_cents, dtype=float) / 100
        rate = self.maker_rate if maker else self.taker_rate
        dollars = rate * np.asarray(contracts, dtype=float) * price * (1 - price)
        # ceil to the next cent; the rounding keeps exact cents (e.g. 1.75 * 100) from rounding up a cent,
        # and + 0.0 turns the -0.0 of a zero fee into 0.0.
        return np.ceil(np.round(dollars * 100, 9) - 1e-9) + 0.0


def market_probability(bid_cents, ask_cents):
    """The quote mid as a probability."""
    return (np.asarray(bid_cents, dtype=float) + np.asarray(ask_cents, dtype=float)) / 200


def blend_linear(p_model, p_market, weight: float):
    """Linear opinion pool: w·p_model + (1 − w)·p_market."""
    _check_weight(weight)
    return weight * np.asarray(p_model, dtype=float) + (1 - weight) * np.asarray(p_market, dtype=float)


def blend_logarithmic(p_model, p_market, weight: float):
    """Logarithmic opinion pool: weighted average in log-odds, normalised back to a probability."""
    _check_weight(weight)
    pm = np.clip(np.asarray(p_model, dtype=float), _EPS, 1 - _EPS)
    pk = np.clip(np.asarray(p_market, dtype=float), _EPS, 1 - _EPS)
    logit = weight * np.log(pm / (1 - pm)) + (1 - weight) * np.log(pk / (1 - pk))
    return 1 / (1 + np.exp(-logit))


BLENDS = {"linear": blend_linear, "logarithmic": blend_logarithmic}


def _check_weight(weight: float) -> None:
    if not 0 <= weight <= 1:
        raise ValueError(f"blend weight must be in [0, 1], got {weight}")


def net_edge_cents(p_win, price_cents, fees: FeeSchedule, slip_cents: float, maker: bool = False):
    """Expected profit per contract bought at ``price_cents``, after fee and slippage."""
    price = np.asarray(price_cents, dtype=float)
    return 100 * np.asarray(p_win, dtype=float) - price - fees.per_contract_cents(price, maker) - slip_cents


def kelly_fraction(p_win, cost_cents):
    """Full-Kelly bankroll fraction for a binary contract costing ``cost_cents`` (all-in) that pays 100.

    f* = (p − q) / (1 − q) with q = cost / 100; zero when the edge is not positive.
    """
    q = np.asarray(cost_cents, dtype=float) / 100
    p = np.asarray(p_win, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(q < 1, (p - q) / (1 - q), 0.0)
    return np.clip(np.nan_to_num(f, nan=0.0), 0.0, 1.0)


@dataclass(frozen=True)
class SignalMath:
    side: np.ndarray  # "yes", "no" or "" (no trade)
    edge_cents: np.ndarray  # net edge of the better side
    kelly_fraction: np.ndarray
    size_fraction: np.ndarray
    better: np.ndarray  # the side with the larger edge, traded or not: "yes" or "no"
    price_cents: np.ndarray  # what one contract of the better side costs before fee and slippage
    target_fraction: np.ndarray  # kelly_alpha·f* capped, whatever the edge gate says (execution's hysteresis)


def best_side(p_blend, bid_cents, ask_cents, risk: RiskParams, fees: FeeSchedule, *, maker: bool = False
              ) -> SignalMath:
    """Buy YES or NO, whichever has the larger net edge; size it by fractional Kelly.

    Taker (default): YES at the ask, NO at 100 − bid, taker fee. Maker: the resting prices, YES at the
    bid and NO at 100 − ask, maker fee. Size is kelly_alpha × f* capped by
    max_bankroll_pct_city_day_side, and zero unless the net edge clears tau_open_cents.
    """
    p = np.asarray(p_blend, dtype=float)
    bid, ask = np.asarray(bid_cents, dtype=float), np.asarray(ask_cents, dtype=float)
    yes_price, no_price = (bid, 100 - ask) if maker else (ask, 100 - bid)
    slip = risk.slip_per_leg_cents
    yes_edge = net_edge_cents(p, yes_price, fees, slip, maker)
    no_edge = net_edge_cents(1 - p, no_price, fees, slip, maker)
    take_yes = yes_edge >= no_edge
    edge = np.where(take_yes, yes_edge, no_edge)
    p_win = np.where(take_yes, p, 1 - p)
    price = np.where(take_yes, yes_price, no_price)
    cost = price + fees.per_contract_cents(price, maker) + slip
    kelly = kelly_fraction(p_win, cost)
    target = np.minimum(risk.kelly_alpha * kelly, risk.max_bankroll_pct_city_day_side)
    trade = (edge >= risk.tau_open_cents) & (edge > 0)
    better = np.where(take_yes, "yes", "no")
    return SignalMath(np.where(trade, better, ""), edge, np.where(trade, kelly, 0.0), np.where(trade, target, 0.0),
                      better, price, target)
