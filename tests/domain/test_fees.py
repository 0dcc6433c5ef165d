"""Kalshi's fees by series and time: fee types, timelines, the vectorised schedule against the scalar rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kwx.domain.fees import GENERAL, FeeBook, FeeChange, SeriesFee, UnpricedFeeError, series_of
from kwx.domain.signals import FeeSchedule

DAY = 86_400
T0 = 1_750_000_000


def test_each_fee_type_prices_by_kalshis_schedule():
    assert SeriesFee("quadratic", 1.0).rates() == (0.07, 0.0)
    assert SeriesFee("quadratic_with_maker_fees", 1.0).rates() == (0.07, 0.0175)
    assert SeriesFee("quadratic_with_maker_fees", 0.5).rates() == (0.035, 0.00875)
    assert SeriesFee("quadratic", 2.0).rates() == (0.14, 0.0)
    with pytest.raises(UnpricedFeeError, match=r"set fees\.taker_rate and fees\.maker_rate"):
        SeriesFee("flat", 1.0).rates()
    for bad in (("tiered", 1.0), ("quadratic", -1.0), ("quadratic", math.nan), ("quadratic", math.inf)):
        with pytest.raises(ValueError):
            SeriesFee(*bad)


def test_a_timeline_applies_each_fee_from_its_time_and_the_first_before_it():
    book = FeeBook([FeeChange("KXA", T0 + DAY, SeriesFee("quadratic_with_maker_fees", 1.0)),
                    FeeChange("KXA", T0, GENERAL)])
    assert book.rates("KXA", T0 - 10 * DAY) == (0.07, 0.0)  # before the first record: the earliest known fee
    assert book.rates("KXA", T0 + DAY - 1) == (0.07, 0.0)
    assert book.rates("KXA", T0 + DAY) == (0.07, 0.0175)  # in force from its second on
    assert book.rates("KXB", T0) == GENERAL.rates()  # no record: Kalshi's general schedule
    assert FeeBook.fixed(0.1, 0.02).rates("KXA", T0 + DAY) == (0.1, 0.02)  # the config's override wins


def test_a_flat_series_is_refused_by_name_unless_the_config_sets_rates():
    flat = [FeeChange("KXF", T0, SeriesFee("flat", 1.0))]
    with pytest.raises(UnpricedFeeError, match="series KXF: fee type 'flat'"):
        FeeBook(flat)
    assert FeeBook(flat, override=(0.07, 0.0)).rates("KXF", T0) == (0.07, 0.0)


def test_series_come_from_market_tickers():
    assert list(series_of(["KXHIGHCHI-25JUL18-B80.5", "KXHIGHNY-25JUL18-T90"])) == ["KXHIGHCHI", "KXHIGHNY"]


def test_fills_pay_the_rate_in_force_at_their_time():
    book = FeeBook([FeeChange("KXA", T0, GENERAL), FeeChange("KXA", T0 + DAY, SeriesFee("quadratic_with_maker_fees",
                                                                                        2.0))])
    assert book.order_cents("KXA-25JUL18-B80.5", T0 + 5, 50, 100, maker=True) == 0.0
    # 0.035 · 100 · 0.5 · 0.5 = $0.875 → 88¢
    assert book.order_cents("KXA-25JUL18-B80.5", T0 + DAY, 50, 100, maker=True) == 88.0
    assert book.order_cents("KXA-25JUL18-B80.5", T0 + DAY, 50, 100) == 350.0  # taker 0.14: $3.50


def test_the_book_says_where_its_fees_come_from():
    book = FeeBook([FeeChange("KXA", T0, GENERAL)])
    assert book.describe(["KXA", "KXB"]) == ("exchange: KXA: quadratic ×1 from 2025-06-15 15:06 UTC (the first also "
                                             "before); KXB: no fee data, Kalshi's general schedule (quadratic ×1)")
    assert FeeBook.fixed(0.07, 0.0).describe(["KXA"]) == ("config: taker rate 0.07, maker rate 0 for every "
                                                          "series")


fee_types = st.sampled_from(["quadratic", "quadratic_with_maker_fees"])
changes = st.lists(st.tuples(st.sampled_from(["KXA", "KXB", "KXC"]), st.integers(0, 20), fee_types,
                             st.sampled_from([0.5, 1.0, 1.5, 2.0])), max_size=8)
queries = st.lists(st.tuples(st.sampled_from(["KXA", "KXB", "KXC", "KXD"]), st.integers(-2, 22),
                             st.integers(1, 99), st.integers(1, 500)), min_size=1, max_size=30)


@given(changes, queries)
def test_the_vectorised_schedule_prices_every_row_as_the_scalar_rule(planted, asked):
    # later duplicates of one (series, time) replace earlier ones, as the table's primary key does
    unique = {(s, t): FeeChange(s, T0 + t * DAY, SeriesFee(kind, m)) for s, t, kind, m in planted}
    book = FeeBook(unique.values())
    tickers = np.array([f"{s}-25JUL18-B80.5" for s, *_ in asked], dtype=object)
    times = np.array([T0 + d * DAY for _, d, *_ in asked])
    prices = np.array([p for *_, p, _ in asked], dtype=float)
    counts = np.array([c for *_, c in asked], dtype=float)
    schedule = book.schedule(tickers, times)
    for maker in (False, True):
        expected = [book.order_cents(t, ts, p, c, maker) for t, ts, p, c in zip(tickers, times, prices, counts,
                                                                               strict=True)]
        np.testing.assert_array_equal(schedule.order_cents(prices, counts, maker), expected)
        # the rows' own schedules, taken one by one, agree too
        for i in range(len(asked)):
            one = schedule.take(i)
            assert float(one.order_cents(prices[i], counts[i], maker)) == expected[i]
    # a book with an override ignores every record
    np.testing.assert_array_equal(FeeBook(unique.values(), override=(0.07, 0.0)).schedule(tickers, times)
                                  .order_cents(prices, counts), FeeSchedule(0.07, 0.0).order_cents(prices, counts))
