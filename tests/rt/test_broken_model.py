"""A promoted version whose artifacts are gone or damaged skips its own markets; the rest trade on."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from kwx.cli import app
from kwx.clock import SimulatedClock
from kwx.config import RtConfig
from kwx.registry.cache import RegistryCache
from kwx.registry.promotion import promote
from kwx.registry.resolution import VersionFacts
from kwx.rt.engine import ModelUnavailable
from kwx.rt.replay import replay_day
from tests.conftest import small_training_run

NAME = "kwx-chicago-between"


def _artifacts(client, version: str) -> Path:
    """The directory holding a registered version's model files (a local artifact store)."""
    return Path(urlparse(client.get_model_version_download_uri(NAME, version)).path)


@pytest.mark.integration
def test_a_model_that_cannot_load_skips_its_markets_and_resolve_says_so(tmp_path):
    with small_training_run(tmp_path) as trained:
        client, engine = trained["client"], trained["engine"]
        promote(client, trained["run_id"], "Production", now=datetime(2025, 7, 25, tzinfo=UTC), infrastructure=[])
        # version 1 tests 07-13..16, 2 tests 07-17..20, 3 tests 07-21..24
        for path in _artifacts(client, "1").iterdir():  # the artifacts deleted, the registry entry left
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        skops = _artifacts(client, "3") / "model.skops"
        skops.write_bytes(skops.read_bytes()[:200])

        # 07-16's markets need version 1; 07-17's, open the same day, need version 2
        config = RtConfig.model_validate({"markets": [{"city": "chicago", "bracket": "between"}],
                                          "tick_seconds": 900})
        result = replay_day(config, engine, client, date(2025, 7, 16))
        assert result.ticks > 0
        with engine.connect() as conn:
            rows = pd.read_sql(text("SELECT market_ticker, model_id, skip_reason FROM rt_signals"), conn)
        broken = rows[rows["market_ticker"].str.contains("25JUL16")]
        assert not broken.empty and broken["model_id"].isna().all()
        # every tick that got as far as asking for the model says why it has none
        unloadable = broken["skip_reason"].str.startswith(
            f"no model: model {NAME}/1 (win_20250701_20250716) cannot be loaded: MlflowException")
        assert unloadable.sum() > len(broken) / 2, broken["skip_reason"].unique()
        healthy = rows[rows["market_ticker"].str.contains("25JUL17")]
        assert set(healthy["model_id"].dropna()) == {f"{NAME}/2"}
        assert not healthy["skip_reason"].fillna("").str.startswith("no model").any()

        def resolve(day: str):
            return CliRunner().invoke(app, ["models", "resolve", "--city", "chicago", "--bracket", "between",
                                            "--date", day])

        gone, damaged, fine = resolve("2025-07-16"), resolve("2025-07-22"), resolve("2025-07-18")
        assert gone.exit_code == 1 and f"model {NAME}/1 (win_20250701_20250716) cannot be loaded" in gone.output
        assert "MLmodel" in gone.output, gone.output
        assert damaged.exit_code == 1 and "BadZipFile" in damaged.output, damaged.output
        assert fine.exit_code == 0 and "version 2" in fine.output, fine.output


def test_a_failed_load_is_not_retried_before_the_refresh_interval():
    clock = SimulatedClock(datetime(2025, 7, 18, tzinfo=UTC))
    attempts = []

    def loader(uri):
        attempts.append(uri)
        if len(attempts) < 3:
            raise OSError("artifact store unreachable")
        return "a model"

    cache = RegistryCache(clock=clock, refresh_seconds=60, loader=loader)
    facts = VersionFacts(NAME, "4", "win_x", date(2025, 7, 17), date(2025, 7, 20), "run", None)
    for _ in range(5):  # ticks inside one refresh interval: one attempt
        with pytest.raises(ModelUnavailable, match=rf"model {NAME}/4 \(win_x\) cannot be loaded: OSError: "
                                                   "artifact store unreachable"):
            cache.model(facts)
    assert attempts == [f"models:/{NAME}/4"]
    clock.advance(timedelta(seconds=61))
    with pytest.raises(ModelUnavailable):
        cache.model(facts)
    clock.advance(timedelta(seconds=61))
    assert cache.model(facts) == "a model" and cache.model(facts) == "a model"
    assert len(attempts) == 3
