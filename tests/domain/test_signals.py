"""Money math: fees, blending, edge, Kelly and sizing (exhaustive and property-based)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kwx.config import RiskParams
from kwx.domain.signals import (
    FeeSchedule,
    best_side,
    blend_linear,
    blend_logarithmic,
    kelly_fraction,
    market_probability,
    net_edge_cents,
)

prices = st.integers(1, 99)
probs = st.floats(0.0, 1.0)
risks = st.builds(RiskParams, kelly_alpha=st.floats(0.01, 1.0), max_spread_cents=st.just(3.0),
                  tau_open_cents=st.floats(0.0, 5.0), tau_close_cents=st.just(0.0),
                  slip_per_leg_cents=st.floats(0.0, 3.0), max_bankroll_pct_city_day_side=st.floats(0.01, 1.0))


@pytest.mark.parametrize(("contracts", "price", "expected"), [
    (1, 50, 2.0),  # ceil(1.75c) = 2c
    (100, 50, 1.75),  # $1.75 exactly on 100 contracts
    (1, 1, 1.0),  # any fee rounds up to a whole cent
    (10, 30, 1.5),  # 0.07*10*0.3*0.7 = $0.147 -> 15c over 10 contracts
    (3, 80, 1.0),  # 0.07*3*0.8*0.2 = $0.0336 -> 4c over 3 contracts = 1.333c... ceil per order
])
def test_taker_fee_table(contracts, price, expected):
    fee = FeeSchedule(contracts=contracts).per_contract_cents(price)
    assert fee == pytest.approx(math.ceil(round(0.07 * contracts * price / 100 * (1 - price / 100) * 100, 9))
                                / contracts)
    if contracts != 3:
        assert fee == pytest.approx(expected)


def test_maker_fee_follows_the_series_rate():
    assert FeeSchedule(maker_rate=0.0).per_contract_cents(50, maker=True) == 0
    assert FeeSchedule(maker_rate=0.0175, contracts=100).per_contract_cents(50, maker=True) == pytest.approx(0.44)


@given(st.integers(1, 49), st.integers(1, 500))
def test_fee_is_symmetric_and_grows_towards_fifty(price, contracts):
    fees = FeeSchedule(contracts=contracts)
    assert fees.per_contract_cents(price) == fees.per_contract_cents(100 - price)
    assert fees.per_contract_cents(price) <= fees.per_contract_cents(price + 1) + 1e-12
    assert 0 < fees.per_contract_cents(price) <= 2.0


@given(probs, probs, st.floats(0, 1))
def test_blends_stay_between_their_inputs(pm, pk, w):
    for blend in (blend_linear, blend_logarithmic):
        b = float(blend(pm, pk, w))
        assert min(pm, pk) - 2e-6 <= b <= max(pm, pk) + 2e-6  # the log pool clips at 1e-6
    assert float(blend_linear(pm, pk, 1.0)) == pytest.approx(pm)
    assert float(blend_linear(pm, pk, 0.0)) == pytest.approx(pk)


def test_blend_weight_is_checked():
    with pytest.raises(ValueError, match=r"blend weight must be in \[0, 1\]"):
        blend_linear(0.5, 0.5, 1.2)


def test_market_probability_and_edge_by_hand():
    assert market_probability(40, 44) == pytest.approx(0.42)
    # p=0.6 buying YES at 50: 60 - 50 - fee(50)=2 (1 contract) - slip 1 = 7
    assert net_edge_cents(0.6, 50, FeeSchedule(contracts=1), 1.0) == pytest.approx(7.0)


@pytest.mark.parametrize(("p", "cost", "expected"), [(0.6, 50, 0.2), (0.5, 50, 0.0), (0.4, 50, 0.0),
                                                     (1.0, 99, 1.0), (0.3, 10, 0.3 - 0.1 * 0.7 / 0.9 - 0.0222222)])
def test_kelly_for_a_binary_contract(p, cost, expected):
    q = cost / 100
    assert float(kelly_fraction(p, cost)) == pytest.approx(max(0.0, (p - q) / (1 - q)), abs=1e-9)


@given(probs, prices, st.integers(1, 10), risks)
def test_sizes_are_bounded_and_need_positive_edge(p, bid, spread, risk):
    ask = min(bid + spread, 99)
    out = best_side(p, bid, ask, risk, FeeSchedule())
    size = float(out.size_fraction)
    assert 0.0 <= size <= risk.max_bankroll_pct_city_day_side + 1e-12
    if size > 0:
        assert float(out.edge_cents) > 0 and float(out.edge_cents) >= risk.tau_open_cents
        assert str(out.side) in ("yes", "no")
        assert size == pytest.approx(min(risk.kelly_alpha * float(out.kelly_fraction),
                                         risk.max_bankroll_pct_city_day_side))
    else:
        assert str(out.side) == "" and float(out.kelly_fraction) == 0.0


@given(probs, prices, st.integers(1, 10), risks)
def test_yes_and_no_are_mirror_images(p, bid, spread, risk):
    ask = min(bid + spread, 99)
    a = best_side(p, bid, ask, risk, FeeSchedule())
    # The same market seen from the NO side: probability 1-p, bid/ask mirrored.
    b = best_side(1 - p, 100 - ask, 100 - bid, risk, FeeSchedule())
    assert float(a.edge_cents) == pytest.approx(float(b.edge_cents), abs=1e-9)
    assert float(a.size_fraction) == pytest.approx(float(b.size_fraction), abs=1e-9)
    if str(a.side):
        assert {str(a.side), str(b.side)} == {"yes", "no"}


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), prices, st.integers(1, 5))
def test_more_belief_never_shrinks_the_yes_edge(p1, p2, bid, spread):
    lo, hi = sorted((p1, p2))
    ask = min(bid + spread, 99)
    fees = FeeSchedule()
    assert net_edge_cents(hi, ask, fees, 1.0) >= net_edge_cents(lo, ask, fees, 1.0)


def test_vectorised_equals_scalar():
    rng = np.random.default_rng(0)
    p, bid = rng.random(200), rng.integers(1, 95, 200)
    ask = bid + rng.integers(1, 5, 200)
    risk = RiskParams()
    batch = best_side(p, bid, ask, risk, FeeSchedule())
    for i in range(200):
        one = best_side(p[i], bid[i], ask[i], risk, FeeSchedule())
        assert float(one.size_fraction) == batch.size_fraction[i] and str(one.side) == batch.side[i]
