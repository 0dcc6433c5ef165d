"""The loop's one database retry policy, the tick's fetch deadline and the outage summary: pure parts first."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from kwx.config import RtConfig
from kwx.data.clients.http import Deadline, DeadlineError, JsonHttp, RetryPolicy
from kwx.domain.signals import FeeSchedule
from kwx.registry.resolution import NoModelError
from kwx.rt.engine import ModelUnavailable, TickInputs, decide, signal_rows, unavailable_inputs
from kwx.rt.loop import RegistryResolver
from kwx.rt.outages import TickRecord, outage_lines
from kwx.rt.retry import Backoff, DatabaseUnavailable, DbRetry, unreachable
from tests.data.fake_http import FakeApi, Reply

REFUSED = "postgresql+psycopg2://postgres@127.0.0.1:1/none"  # nothing listens on port 1


def _refused() -> OperationalError:
    """A real driver error for a database that refuses connections."""
    engine = create_engine(REFUSED)
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("port 1 accepted a connection")


def test_backoff_doubles_up_to_its_cap_and_stops_when_its_budget_is_spent():
    assert Backoff(attempts=1).delays() == []
    assert Backoff(attempts=6).delays() == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert Backoff(attempts=8, cap=3).delays() == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]
    assert Backoff(attempts=6, budget=2.25).delays() == [0.5, 1.0, 0.75]  # a 9 s tick's quarter
    assert Backoff(attempts=6, budget=0.25).delays() == [0.25]
    assert sum(Backoff(attempts=100, budget=5).delays()) == 5


def test_only_a_lost_refused_or_locked_connection_is_waited_out():
    refused = _refused()
    assert unreachable(refused) and unreachable(refused.orig)  # wrapped, and raw from a driver cursor
    wrapped = MlflowException("registry store failed")
    wrapped.__cause__ = refused  # MLflow's SQL store re-raises SQLAlchemy's error this way
    assert unreachable(wrapped)
    assert unreachable(MlflowException("503 from the tracking server", error_code=TEMPORARILY_UNAVAILABLE))
    assert not unreachable(MlflowException("Registered Model not found", error_code=RESOURCE_DOES_NOT_EXIST))
    assert unreachable(OperationalError("UPDATE", {}, Exception("database is locked")))
    assert not unreachable(IntegrityError("INSERT", {}, Exception("duplicate key value")))
    assert not unreachable(OperationalError("SELECT", {}, Exception("no such table: markets")))
    assert not unreachable(ValueError("connection"))


def test_db_retry_waits_on_the_schedule_then_names_the_driver_reason():
    slept = []
    retry = DbRetry(Backoff(attempts=3), sleep=slept.append)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _refused()
        return "rows"

    assert retry(flaky) == "rows" and slept == [0.5, 1.0]
    slept.clear()
    with pytest.raises(DatabaseUnavailable, match=r'^connection to server at "127.0.0.1", port 1 failed'):
        retry(lambda: create_engine(REFUSED).connect())
    assert slept == [0.5, 1.0]
    slept.clear()
    with pytest.raises(IntegrityError):  # a real error is not retried
        retry(lambda: (_ for _ in ()).throw(IntegrityError("INSERT", {}, Exception("duplicate"))))
    assert slept == []


def test_a_registry_that_stays_unreachable_skips_its_markets_with_the_reason():
    class Cache:
        def __init__(self, error):
            self.error = error

        def load_model_for_date(self, *args):
            raise self.error

    wrapped = MlflowException("registry store failed")
    wrapped.__cause__ = _refused()
    resolver = RegistryResolver(Cache(wrapped), "Production", DbRetry(Backoff(attempts=2), sleep=lambda _s: None))
    with pytest.raises(ModelUnavailable, match=r"^registry unavailable: connection to server at"):
        resolver("chicago", "between", date(2025, 7, 18))
    with pytest.raises(ModelUnavailable, match="no model for"):
        RegistryResolver(Cache(NoModelError("no model for chicago/between")), "Production")(
            "chicago", "between", date(2025, 7, 18))


def test_a_deadline_is_shared_and_never_negative():
    now = [100.0]
    deadline = Deadline(2.0, monotonic=lambda: now[0])
    assert deadline.remaining() == 2.0
    now[0] = 101.5
    assert deadline.remaining() == 0.5
    now[0] = 105
    assert deadline.remaining() == 0.0


def test_a_request_under_a_deadline_ends_by_it_retries_included():
    with FakeApi() as api:
        api.handlers["/slow"] = lambda q: Reply({"ok": True}, delay=3)
        api.handlers["/busy"] = lambda q: Reply({}, status=503, headers={"Retry-After": "30"})
        http = JsonHttp(api.url, timeout=15, retry=RetryPolicy(attempts=5), per_second=0)
        for path in ("/slow", "/busy"):
            started = time.perf_counter()
            with http.within(Deadline(0.5)), pytest.raises(DeadlineError, match=fr"^{path}: did not answer "
                                                                                 r"within the tick deadline \(0.5 s\)"):
                http.get(path, what=path)
            assert time.perf_counter() - started < 1.5
        assert http.get("/slow", what="slow") == {"ok": True}  # outside the block: its own timeout again


def test_an_unreadable_tick_skips_the_markets_last_seen_open():
    config = RtConfig.model_validate({"markets": [{"city": "chicago", "bracket": "between"}]})
    assert len(unavailable_inputs(None, 1000, "database unavailable: x").tickers) == 0
    last = TickInputs(np.array(["A", "B"], dtype=object), np.array(["chicago"] * 2, dtype=object),
                      np.array(["between"] * 2, dtype=object), np.array([900, 2000]), np.array([960.0] * 2),
                      np.array([40.0] * 2), np.array([42.0] * 2), np.array([0.6] * 2),
                      np.array(["m/1"] * 2, dtype=object), np.array(["w"] * 2, dtype=object),
                      np.full(2, None, dtype=object), np.zeros(2, dtype=bool), FeeSchedule())
    inputs = unavailable_inputs(last, 1000, "database unavailable: x")
    rows = signal_rows(1000, inputs, decide(1000, inputs, config)).frame()
    assert list(rows["market_ticker"]) == ["B"]  # A closed before the tick
    assert list(rows["skip_reason"]) == ["database unavailable: x"] and rows["size_fraction"].eq(0).all()
    assert rows[["p_model", "p_market", "edge_cents"]].isna().all().all()


def test_status_names_each_database_outage_and_each_silence():
    start = datetime(2025, 7, 18, 12, tzinfo=UTC)
    down = json.dumps({"database unavailable: connection refused": 4})

    def ticks(mode, seconds, skips):
        return [TickRecord(start + timedelta(seconds=s), mode, k) for s, k in zip(seconds, skips, strict=True)]

    live = ticks("live", [0, 3, 6, 9, 12, 15, 18, 60, 63], ["{}", "{}", down, down, down, "{}", "{}", "{}", down])
    assert outage_lines(live + ticks("replay", [0, 60, 120], ["{}"] * 3)) == [
        "live: database unavailable 2025-07-18 12:00:06 → 2025-07-18 12:00:12 UTC, 3 ticks skipped "
        "(connection refused)",
        "live: no tick for 42 s before 2025-07-18 12:01:00 UTC (typically every 3 s)",
        "live: database unavailable 2025-07-18 12:01:03 → 2025-07-18 12:01:03 UTC, 1 tick skipped "
        "(connection refused)",
    ]
    assert outage_lines(ticks("live", [0, 3, 6], ["{}"] * 3)) == []


def test_db_retry_against_a_real_refusal_is_bounded_by_its_budget():
    retry = DbRetry(Backoff(attempts=50, budget=0.5))
    engine = create_engine(REFUSED)
    started = time.perf_counter()
    with pytest.raises(DatabaseUnavailable):
        retry(lambda: engine.connect().execute(text("select 1")))
    engine.dispose()
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("fraction", [0, -0.1, 0.95, float("nan"), float("inf")])
def test_the_fetch_deadline_leaves_part_of_the_tick(fraction):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="fetch_deadline_fraction"):
        RtConfig.model_validate({"markets": [{"city": "chicago", "bracket": "between"}],
                                 "fetch_deadline_fraction": fraction})
