"""Report, gated promotion, archive, stage flows and the resolution cache against a temporary MLflow store."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from kwx.clock import SimulatedClock
from kwx.config import TrainConfig
from kwx.data import migrations
from kwx.data.db import make_engine
from kwx.data.demo import load_demo
from kwx.domain.features import feature_columns
from kwx.registry.cache import RegistryCache
from kwx.registry.promotion import Check, PromotionRefused, promote
from kwx.registry.resolution import NoModelError
from kwx.registry.versions import PENDING_TAG
from kwx.report import FILES, build_report, infrastructure_checks
from kwx.training import runner
from tests.conftest import LENIENT_MARKET_GATES

pytestmark = pytest.mark.integration

CONFIG = {"city": "chicago", "bracket": "between", "start": "2025-07-01", "end": "2025-07-24", "train_days": 12,
          "test_days": 4, "step_days": 4, "trials": 2, "cv_splits": 3, "seed": 5,
          "acceptance": {"min_windows": 2, "max_ece": 0.5, "max_brier": 0.5, **LENIENT_MARKET_GATES}}
NOW = datetime(2025, 7, 25, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One demo DB and one MLflow store with two trained runs of the same windows, shared by the module."""
    root = tmp_path_factory.mktemp("registry")
    db = f"sqlite:///{root / 'kwx.db'}"
    migrations.upgrade(db)
    engine = make_engine(db)
    load_demo(engine, ["chicago", "nyc"], date(2025, 7, 1), date(2025, 7, 24), seed=2)
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.chdir(root)
    first = runner.train(TrainConfig.model_validate(CONFIG), engine)
    second = runner.train(TrainConfig.model_validate({**CONFIG, "seed": 6}), engine)
    strict = runner.train(TrainConfig.model_validate({**CONFIG, "acceptance": {
        "max_ece": 0.0001, "min_windows": 9, **LENIENT_MARKET_GATES}}), engine)
    yield {"engine": engine, "client": MlflowClient(), "runs": (first, second, strict), "root": root}
    engine.dispose()
    mp.undo()
    mlflow.set_tracking_uri(None)


def _infra(store, run_id):
    return infrastructure_checks(store["engine"], store["client"], run_id)


def _stages(client, name="kwx-chicago-between"):
    return {str(v.version): v.current_stage for v in client.search_model_versions(f"name = '{name}'")}


def test_report_writes_and_logs_every_artifact(store):
    client, (first, _, _) = store["client"], store["runs"]
    result = build_report(client, store["engine"], first.parent_run_id, root=store["root"] / "reports")
    assert result.passed, [c.line() for c in result.checks if not c.passed]
    for name in (*FILES, "03_reliability_diagram.png"):
        assert (result.directory / name).is_file(), name
    summary = json.loads((result.directory / FILES[0]).read_text())
    assert summary["windows"] == 3 and set(summary["log_loss"]) == {"mean", "std"}
    assert "market_brier" in summary and set(summary["brier_skill"]) == {"mean", "std"}
    pooled = summary["pooled"]
    assert pooled["pooled_n_rows"] == summary["test_rows"] and pooled["pooled_n_comparable_rows"] > 0
    parent = client.get_run(first.parent_run_id).data.metrics
    assert parent["pooled_brier_skill"] == pytest.approx(pooled["pooled_brier_skill"])
    assert {"reliability_pooled.png", "reliability_pooled.json"} <= {
        a.path for a in client.list_artifacts(first.parent_run_id)}
    calibration = json.loads((result.directory / FILES[2]).read_text())
    assert calibration["model_vs_market"]["rows"] == pooled["pooled_n_comparable_rows"]
    markdown = (result.directory / FILES[5]).read_text()
    assert "| Brier | unlocked |" in markdown and "windows beating the market" in markdown
    audit = json.loads((result.directory / FILES[1]).read_text())
    assert audit["cities"]["nyc"]["excluded"] and audit["cities"]["nyc"]["null_fraction"]["dew_f"] == 1.0
    assert audit["cities"]["chicago"]["null_fraction"]["dew_f"] == 0.0 and audit["passed"]
    # Each VC check's name says its value is a null fraction and the bound it is held to.
    vc_checks = {c["check"]: c["value"] for c in audit["checks"] if "VC columns" in c["check"]}
    fractions = {key: city["null_fraction"] for key, city in audit["cities"].items()}
    assert vc_checks == {"chicago: VC columns null fraction < 1 (populated)": fractions["chicago"],
                         "nyc: VC columns null fraction = 1 (all NULL)": fractions["nyc"]}
    # The windows' predictions were downloaded elsewhere: the folder (and its MLflow copy) holds the report only.
    assert sorted(p.name for p in result.directory.iterdir()) == sorted([*FILES, "03_reliability_diagram.png"])
    logged = {a.path for a in client.list_artifacts(first.parent_run_id, "acceptance_report")}
    assert logged == {f"acceptance_report/{name}" for name in (*FILES, "03_reliability_diagram.png")}


def test_gates_refuse_and_name_each_failure(store):
    client, (_, _, strict) = store["client"], store["runs"]
    with pytest.raises(PromotionRefused) as info:
        promote(client, strict.parent_run_id, "Production", now=NOW, infrastructure=_infra(store, strict.parent_run_id))
    names = {c.name for c in info.value.failing}
    assert names == {"pooled unlocked test ECE <= max_ece", "windows >= min_windows"}
    assert "threshold 0.0001" in str(info.value)
    broken_infra = [Check("database at migration head", False, None, "416360ac63f3")]
    with pytest.raises(PromotionRefused, match="database at migration head"):
        promote(client, store["runs"][0].parent_run_id, "Production", now=NOW, infrastructure=broken_infra)
    assert "Production" not in _stages(client).values()


def test_promotion_flow_archive_and_cache_refresh(store):
    client, (first, second, _) = store["client"], store["runs"]
    clock = SimulatedClock(NOW)
    cache = RegistryCache(client, clock, refresh_seconds=60)
    with pytest.raises(NoModelError, match="no version is in that stage"):
        cache.resolve("chicago", "between", date(2025, 7, 18))

    dry = promote(client, first.parent_run_id, "Staging", now=NOW, infrastructure=_infra(store, first.parent_run_id),
                  dry_run=True)
    assert dry.promoted == ["1", "2", "3"] and set(_stages(client).values()) == {"None"}
    promote(client, first.parent_run_id, "Staging", now=NOW, infrastructure=_infra(store, first.parent_run_id))
    result = promote(client, first.parent_run_id, "Production", now=NOW,
                     infrastructure=_infra(store, first.parent_run_id), reason="looks good", actor="tester")
    assert result.promoted == ["1", "2", "3"]
    version = client.get_model_version("kwx-chicago-between", "2")
    assert version.current_stage == "Production"
    assert (version.tags["promoted_by"], version.tags["promotion_reason"]) == ("tester", "looks good")
    assert str(client.get_model_version_by_alias("kwx-chicago-between", "production").version) == "3"

    cache.invalidate()
    model, window, meta = cache.load_model_for_date("chicago", "between", date(2025, 7, 18))
    assert (window, meta["version"], meta["stale_days"]) == ("win_20250705_20250720", "2", 0)
    assert meta["test_start"] == date(2025, 7, 17) and meta["run_id"]
    reads = cache.registry_reads
    for _ in range(100):  # the live loop's ticks: no registry query, the model stays loaded
        assert cache.load_model_for_date("chicago", "between", date(2025, 7, 18)).model is model
    assert cache.registry_reads == reads

    later = promote(client, second.parent_run_id, "Production", now=NOW + timedelta(hours=1),
                    infrastructure=_infra(store, second.parent_run_id))
    assert later.archived == ["1", "2", "3"]
    stages = _stages(client)
    assert [stages[v] for v in ("1", "2", "3")] == ["Archived"] * 3
    assert [stages[v] for v in ("4", "5", "6")] == ["Production"] * 3
    assert cache.resolve("chicago", "between", date(2025, 7, 18)).facts.version == "2"  # cached until refresh
    clock.advance(timedelta(seconds=61))
    assert cache.resolve("chicago", "between", date(2025, 7, 18)).facts.version == "5"
    assert cache.registry_reads == reads + 1

    now_choice = RegistryCache(client, SimulatedClock(datetime(2025, 7, 22, 18, tzinfo=UTC))).load_model_for_now(
        "chicago", "between")
    assert now_choice.window == "win_20250709_20250724"
    frame_cols = feature_columns("elasticnet_relative", "between")
    assert now_choice.model.n_features_in_ == len(frame_cols)
    # a finished promotion leaves no version marked pending: the mark only outlives a promotion killed midway
    assert [v.version for v in client.search_model_versions("name = 'kwx-chicago-between'")
            if PENDING_TAG in v.tags] == []


def test_keep_existing_overlap_newest_promotion_wins(store):
    client, (first, _, _) = store["client"], store["runs"]
    result = promote(client, first.parent_run_id, "Production", now=NOW + timedelta(hours=2),
                     infrastructure=_infra(store, first.parent_run_id), archive_existing=False)
    assert result.archived == []
    stages = _stages(client)
    assert stages["1"] == "Production" and stages["4"] == "Production"
    choice = RegistryCache(client).resolve("chicago", "between", date(2025, 7, 14))
    assert choice.facts.version == "1" and "newest promotion of 2 covering windows" in choice.reason


def test_bad_stage_and_non_training_run(store):
    client, (first, _, _) = store["client"], store["runs"]
    with pytest.raises(ValueError, match="stage must be one of Staging, Production"):
        promote(client, first.parent_run_id, "Prod", now=NOW, infrastructure=[])
    child = client.search_runs([first.experiment_id], f"tags.mlflow.parentRunId = '{first.parent_run_id}'")[0]
    with pytest.raises(ValueError, match="not a kwx training"):
        promote(client, child.info.run_id, "Production", now=NOW, infrastructure=[])
