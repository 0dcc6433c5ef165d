"""A promoted chicago/between model in a temporary MLflow store, shared by the rt tests."""

from __future__ import annotations

from datetime import UTC, date, datetime

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from kwx.config import TrainConfig
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.demo import load_demo
from kwx.registry.promotion import promote
from kwx.report import infrastructure_checks
from kwx.training import runner


@pytest.fixture(scope="session")
def promoted(tmp_path_factory):
    root = tmp_path_factory.mktemp("rt")
    db = f"sqlite:///{root / 'kwx.db'}"
    migrations.upgrade(db)
    engine = make_engine(db)
    load_demo(engine, ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)
    mp = pytest.MonkeyPatch()
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    mp.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    mp.chdir(root)
    summary = runner.train(TrainConfig.model_validate({
        "city": "chicago", "bracket": "between", "start": "2025-07-01", "end": "2025-07-24", "train_days": 12,
        "test_days": 4, "step_days": 4, "trials": 2, "cv_splits": 3, "acceptance": {"min_windows": 1,
                                                                                     "max_ece": 0.5}}), engine)
    client = MlflowClient(tracking_uri)
    promote(client, summary.parent_run_id, "Production", now=datetime(2025, 7, 25, tzinfo=UTC),
            infrastructure=infrastructure_checks(engine, client, summary.parent_run_id))
    yield {"engine": engine, "client": client, "db": db, "tracking_uri": tracking_uri}
    engine.dispose()
    mp.undo()
    mlflow.set_tracking_uri(None)


