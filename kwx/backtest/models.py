"""Which model trades each backtest day: out of sample only, from registry tags.

A day is traded only by the window whose *test* period contains it, so no day is traded by a model
that trained on it; days outside every window's test period are skipped with the reason.
"""

from __future__ import annotations

from datetime import date

from mlflow.tracking import MlflowClient

from kwx.registry.cache import RegistryCache
from kwx.registry.promotion import run_versions
from kwx.registry.resolution import NoModelError, VersionFacts, resolve
from kwx.registry.versions import facts, model_name, stage_table
from kwx.report import latest_training_run
from kwx.rt.engine import ModelHandle, ModelUnavailable


class ModelSource:
    """The window versions a backtest may use for one (city, bracket): a training run's, or a stage's."""

    def __init__(self, city: str, bracket: str, table: list[VersionFacts], description: str):
        self.city, self.bracket, self.table, self.description = city, bracket, table, description

    @classmethod
    def from_run(cls, client: MlflowClient, city: str, bracket: str, run_id: str | None = None) -> ModelSource:
        """The window versions of training run ``run_id`` (default: the latest finished one of the pair)."""
        run_id = run_id or latest_training_run(client, city, bracket)
        name, versions = run_versions(client, run_id)
        if name != model_name(city, bracket):
            raise ValueError(f"run {run_id} trained {name}, not {model_name(city, bracket)}")
        if not versions:
            raise LookupError(f"training run {run_id} registered no window versions")
        return cls(city, bracket, [facts(v) for v in versions], f"run {run_id}")

    @classmethod
    def from_stage(cls, client: MlflowClient, city: str, bracket: str, stage: str) -> ModelSource:
        table = stage_table(client, model_name(city, bracket), stage)
        if not table:
            raise LookupError(f"no version of {model_name(city, bracket)} is in stage {stage}")
        return cls(city, bracket, table, f"stage {stage}")


class OutOfSampleResolver:
    """The engine's resolver for backtests: the covering window's model, or ModelUnavailable."""

    def __init__(self, sources: list[ModelSource], cache: RegistryCache):
        self.sources = {(s.city, s.bracket): s for s in sources}
        self.cache = cache

    def __call__(self, city: str, bracket: str, day: date) -> ModelHandle:
        source = self.sources.get((city, bracket))
        if source is None:
            raise ModelUnavailable(f"no model source for {city}/{bracket}")
        try:
            choice = resolve(source.table, day, city=city, bracket=bracket, stage=source.description)
        except NoModelError as exc:
            raise ModelUnavailable(f"out of sample only: {exc}") from None
        if choice.stale_days:
            raise ModelUnavailable(f"out of sample only: no window of {source.description} tests {city}/{bracket} "
                                   f"on {day}")
        f = choice.facts
        return ModelHandle(self.cache.model(f), f.model_id, f.window, f.feature_set)
