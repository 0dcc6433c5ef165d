"""The dashboard's MLflow reads: which version trades each family on a day, and the realized calibration.

Resolution is the loop's own (``RegistryCache.resolve``), so the page names exactly the window the loop
trades. Registry answers are kept ``refresh_seconds`` (the loop's ``model_refresh_seconds``): a page that
polls every tick must not turn into a registry query per tick per family.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from kwx.clock import Clock
from kwx.dashboard.views import ModelRow, missing_as_none
from kwx.lifecycle.monitor import MONITOR_EXPERIMENT, MONITOR_KIND
from kwx.registry.cache import RegistryCache
from kwx.registry.resolution import NoModelError
from kwx.registry.versions import all_versions, model_name

# Realized quality per window (its test week, logged by training or `kwx monitor`) and per monitored day.
WINDOW_METRICS = {"test_ece": "ECE (week)", "test_brier": "Brier (week)", "market_brier": "market Brier (week)"}
ROLLING_METRICS = {"rolling_ece": "rolling ECE", "rolling_brier": "rolling Brier",
                   "rolling_market_brier": "rolling market Brier"}
_DAY_SECONDS = 86400


class RegistryView:
    def __init__(self, client: MlflowClient, clock: Clock, *, stage: str, ui_url: str | None,
                 refresh_seconds: float, max_stale_days: int):
        self.client, self.clock, self.stage = client, clock, stage
        self.ui_url = ui_url.rstrip("/") if ui_url else None
        self.resolver = RegistryCache(client, clock, refresh_seconds=refresh_seconds, max_stale_days=max_stale_days)
        self._refresh = timedelta(seconds=refresh_seconds)
        self._cached: dict[tuple, tuple[datetime, object]] = {}
        self._experiments: dict[str, str] = {}  # run id -> experiment id (never changes)

    def _kept(self, key: tuple, read: Callable[[], object]):
        now = self.clock.now()
        hit = self._cached.get(key)
        if hit is None or now - hit[0] >= self._refresh:
            self._cached[key] = (now, read())
        return self._cached[key][1]

    def _aliases(self, name: str) -> dict[str, list[str]]:
        """version -> its aliases (e.g. production), for one registered model."""
        def read() -> dict[str, list[str]]:
            try:
                aliases = self.client.get_registered_model(name).aliases
            except MlflowException:
                return {}
            by_version: dict[str, list[str]] = {}
            for alias, version in aliases.items():
                by_version.setdefault(str(version), []).append(alias)
            return by_version
        return self._kept(("aliases", name), read)

    def run_url(self, run_id: str) -> str | None:
        """The run's page in the MLflow UI, when a UI address is configured."""
        if self.ui_url is None:
            return None
        if run_id not in self._experiments:
            self._experiments[run_id] = self.client.get_run(run_id).info.experiment_id
        return f"{self.ui_url}/#/experiments/{self._experiments[run_id]}/runs/{run_id}"

    def models(self, day: date, families: list[tuple[str, str]]) -> list[ModelRow]:
        """The version each family trades on ``day`` at the configured stage, or the reason none does."""
        rows = []
        for city, bracket in families:
            try:
                choice = self.resolver.resolve(city, bracket, day, self.stage)
            except NoModelError as exc:
                rows.append(ModelRow(city, bracket, model=model_name(city, bracket), problem=str(exc)))
                continue
            facts = choice.facts
            rows.append(ModelRow(
                city, bracket, model=facts.name, version=facts.version, window=facts.window,
                test_start=facts.test_start.isoformat(), test_end=facts.test_end.isoformat(),
                stale_days=choice.stale_days, stage=facts.stage or self.stage,
                aliases=", ".join(sorted(self._aliases(facts.name).get(facts.version, []))), run_id=facts.run_id,
                run_url=self.run_url(facts.run_id)))
        return rows

    def calibration(self, families: list[tuple[str, str]]) -> dict:
        """Per family: each evaluated window's realized ECE and Brier (model and market) at its test week's
        end, and the monitor's rolling series per day, on one date axis."""
        return {"families": [self._kept(("calibration", city, bracket), lambda c=city, b=bracket: self._family(c, b))
                             for city, bracket in families]}

    def _family(self, city: str, bracket: str) -> dict:
        points = []
        for version in all_versions(self.client, model_name(city, bracket)):
            if version.tags.get("evaluation", "done") != "done" or "test_end" not in version.tags:
                continue
            metrics = self.client.get_run(version.run_id).data.metrics
            day = date.fromisoformat(version.tags["test_end"])
            points.append({"t": _epoch(day), **{label: metrics.get(key) for key, label in WINDOW_METRICS.items()}})
        frame = pd.DataFrame(points, columns=["t", *WINDOW_METRICS.values()])
        rolling = self._rolling(city, bracket)
        if not rolling.empty:
            frame = pd.concat([frame, rolling], ignore_index=True)
        frame = frame.groupby("t", sort=True).last().reset_index() if len(frame) else frame
        series = frame.drop(columns="t")
        series = series.loc[:, series.notna().any()]
        values = missing_as_none(series)
        return {"city": city, "bracket": bracket, "t": frame["t"].astype("int64").tolist(),
                "series": {name: values[:, i].tolist() for i, name in enumerate(series.columns)}}

    def _rolling(self, city: str, bracket: str) -> pd.DataFrame:
        """The family's ``kwx monitor`` drift points, one row per monitored day."""
        experiment = self.client.get_experiment_by_name(MONITOR_EXPERIMENT)
        if experiment is None:
            return pd.DataFrame()
        name = model_name(city, bracket)
        runs = self.client.search_runs([experiment.experiment_id], max_results=1,
                                       filter_string=f"tags.`kwx.kind` = '{MONITOR_KIND}' and "
                                                     f"tags.`kwx.model_name` = '{name}'")
        if not runs:
            return pd.DataFrame()
        columns = {}
        for key, label in ROLLING_METRICS.items():
            history = self.client.get_metric_history(runs[0].info.run_id, key)
            columns[label] = pd.Series({m.step * _DAY_SECONDS: m.value for m in history}, dtype=float)
        return pd.DataFrame(columns).rename_axis("t").reset_index()


def _epoch(day: date) -> int:
    return (day - date(1970, 1, 1)).days * _DAY_SECONDS
