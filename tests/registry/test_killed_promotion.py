"""A promotion killed after any registry call: resolution sees the whole old set or the whole new set.

The MLflow tracking store is SQLite and, when the server is there, PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from kwx.config import TrainConfig
from kwx.data.db import make_engine
from kwx.registry.promotion import promote
from kwx.registry.resolution import NoModelError, resolve
from kwx.registry.versions import PENDING_TAG, stage_table
from kwx.training import runner
from tests.conftest import LENIENT_MARKET_GATES, demo_database

pytestmark = [pytest.mark.integration, pytest.mark.long(seconds=120)]

NAME = "kwx-chicago-between"
CONFIG = {"city": "chicago", "bracket": "between", "start": "2025-07-01", "end": "2025-07-24", "train_days": 12,
          "test_days": 4, "step_days": 4, "trials": 2, "cv_splits": 3, "seed": 5,
          "acceptance": {"min_windows": 1, "max_ece": 0.5, "max_brier": 0.5, **LENIENT_MARKET_GATES}}
# every day some window of both runs tests: the dates a promotion of either run affects
DAYS = [date(2025, 7, 13) + timedelta(days=d) for d in range(12)]
# the registry writes a promotion makes; a kill between two of them is a failure raised by the next
WRITES = ("set_model_version_tag", "delete_model_version_tag", "transition_model_version_stage",
          "set_registered_model_tag", "set_registered_model_alias", "delete_registered_model_alias")


class Killed(Exception):
    pass


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_runs(request, tmp_path, monkeypatch):
    """Two training runs of the same windows (old and new), registered in a fresh tracking store."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        # the driver stays explicit: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3
        tracking_uri = make_url(url).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    else:
        tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    engine = make_engine(demo_database(tmp_path, ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2))
    old = runner.train(TrainConfig.model_validate(CONFIG), engine)
    new = runner.train(TrainConfig.model_validate({**CONFIG, "seed": 6}), engine)
    yield MlflowClient(tracking_uri), old.parent_run_id, new.parent_run_id
    engine.dispose()
    mlflow.set_tracking_uri(None)


def _trading(client) -> dict[date, tuple[str, str]]:
    """(training run, version) that trades each affected day at Production, read afresh from the registry."""
    parents = {str(v.version): v.tags["parent_run_id"] for v in client.search_model_versions(f"name = '{NAME}'")}
    table = stage_table(client, NAME, "Production")
    chosen = {}
    for day in DAYS:
        try:
            choice = resolve(table, day, city="chicago", bracket="between", stage="Production")
        except NoModelError as exc:
            chosen[day] = ("no model", str(exc))
            continue
        chosen[day] = (parents[choice.facts.version] if choice.stale_days == 0 else f"stale by {choice.stale_days}",
                       choice.facts.version)
    return chosen


def _kill_after(client, monkeypatch, calls: int) -> list[str]:
    """Make the client's registry writes fail from write number ``calls + 1`` on; returns the writes made."""
    made: list[str] = []
    for method in WRITES:
        real = getattr(client, method)

        def write(*args, _real=real, _method=method, **kwargs):
            if len(made) >= calls:
                raise Killed(f"killed before {_method}{args}")
            made.append(_method)
            return _real(*args, **kwargs)

        monkeypatch.setattr(client, method, write)
    return made


def test_a_killed_promotion_never_trades_a_mix_and_a_rerun_completes_it(two_runs, monkeypatch):
    client, old_run, new_run = two_runs
    clock = iter(datetime(2025, 7, 25, tzinfo=UTC) + timedelta(minutes=m) for m in range(10_000))

    def promote_run(run_id):
        return promote(client, run_id, "Production", now=next(clock), infrastructure=[])

    promote_run(old_run)
    old = _trading(client)
    assert {run for run, _ in old.values()} == {old_run}, old
    with monkeypatch.context() as patch:
        counted = _kill_after(client, patch, 10**6)
        promote_run(new_run)
    new = _trading(client)
    assert {run for run, _ in new.values()} == {new_run}, new
    writes = len(counted)

    # each kill point once, alternately killing a promotion of the old run over the new and back
    sets, target = {old_run: old, new_run: new}, old_run
    for calls in range(writes):
        before = _trading(client)
        with monkeypatch.context() as patch:
            _kill_after(client, patch, calls)
            with pytest.raises(Killed):
                promote_run(target)
        assert _trading(client) in (before, sets[target]), f"killed after {calls} of {writes} registry writes"
        promote_run(target)
        assert _trading(client) == sets[target], f"rerun after a kill after {calls} writes"
        target = new_run if target == old_run else old_run
    if target == new_run:
        promote_run(new_run)

    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{NAME}'")}
    stages = {v.tags["parent_run_id"]: set() for v in versions.values()}
    for v in versions.values():
        stages[v.tags["parent_run_id"]].add(v.current_stage)
    assert stages == {old_run: {"Archived"}, new_run: {"Production"}}
    # the reruns finished every killed promotion: none left a version marked pending
    assert [v for v in versions.values() if PENDING_TAG in v.tags] == []
    alias = client.get_model_version_by_alias(NAME, "production")
    assert alias.tags["parent_run_id"] == new_run and alias.current_stage == "Production"
