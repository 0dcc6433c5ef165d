"""Resolve and load the right window's model for a date, without hitting the registry every tick.

The version table of each (model, stage) is cached and re-read at most every ``refresh_seconds``
(by the injected clock); loaded models are cached by version, which never changes once registered.
A promotion therefore reaches the live loop within one refresh interval, and ``invalidate()`` makes it
immediate. A version whose model cannot be loaded (artifacts deleted or damaged) raises
``ModelUnavailable`` with the reason, so only its markets skip, and is tried again once the refresh
interval has passed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import mlflow.sklearn
from mlflow.tracking import MlflowClient

from kwx.cities import get_city
from kwx.clock import Clock, SystemClock
from kwx.domain.markets import climate_day
from kwx.domain.windows import parse_window_name
from kwx.registry.resolution import Resolution, VersionFacts, resolve
from kwx.registry.versions import model_name, stage_table
from kwx.rt.engine import ModelUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelChoice:
    model: object
    window: str
    metadata: dict[str, object]

    def __iter__(self):  # (model, window_name, metadata), as the seed's load_model_for_date returned
        return iter((self.model, self.window, self.metadata))


class RegistryCache:
    def __init__(self, client: MlflowClient | None = None, clock: Clock | None = None, *,
                 refresh_seconds: float = 60.0, max_stale_days: int = 7, loader=None):
        self._client = client
        self._clock = clock or SystemClock()
        self._refresh = timedelta(seconds=refresh_seconds)
        self.max_stale_days = max_stale_days
        self._load = loader or mlflow.sklearn.load_model
        self._tables: dict[tuple[str, str], tuple[datetime, list[VersionFacts]]] = {}
        self._models: dict[tuple[str, str], object] = {}
        self._broken: dict[tuple[str, str], tuple[datetime, str]] = {}  # version -> (failed at, reason)
        self.registry_reads = 0
        self._warned: set[tuple[str, str, date, str]] = set()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient()
        return self._client

    def invalidate(self) -> None:
        self._tables.clear()

    def table(self, city: str, bracket: str, stage: str) -> list[VersionFacts]:
        key = (model_name(city, bracket), stage)
        now = self._clock.now()
        cached = self._tables.get(key)
        if cached is None or now - cached[0] >= self._refresh:
            self.registry_reads += 1
            self._tables[key] = (now, stage_table(self.client, key[0], stage))
        return self._tables[key][1]

    def resolve(self, city: str, bracket: str, target: date, stage: str = "Production") -> Resolution:
        choice = resolve(self.table(city, bracket, stage), target, city=city, bracket=bracket, stage=stage)
        warning = (city, bracket, target, choice.facts.version)
        # once per market day and version: the loop resolves on every new candle
        if choice.stale_days > self.max_stale_days and warning not in self._warned:
            self._warned.add(warning)
            log.warning("%s/%s on %s uses %s, stale by %d days (limit %d): retrain and promote",
                        city, bracket, target, choice.facts.window, choice.stale_days, self.max_stale_days)
        return choice

    def model(self, facts: VersionFacts):
        key = (facts.name, facts.version)
        if key in self._models:
            return self._models[key]
        now = self._clock.now()
        failed = self._broken.get(key)
        if failed is not None and now - failed[0] < self._refresh:
            raise ModelUnavailable(failed[1])
        try:
            model = self._load(f"models:/{facts.model_id}")
        except Exception as exc:  # missing, truncated or unreadable artifacts all mean the same: no model
            reason = f"model {facts.model_id} ({facts.window}) cannot be loaded: {type(exc).__name__}: {exc}"
            log.warning("%s; its markets skip until it loads (next try in %s)", reason, self._refresh)
            self._broken[key] = (now, reason)
            raise ModelUnavailable(reason) from None
        self._broken.pop(key, None)
        self._models[key] = model
        return model

    def load_model_for_date(self, city: str, bracket: str, target_date: date, stage: str = "Production") -> ModelChoice:
        choice = self.resolve(city, bracket, target_date, stage)
        facts = choice.facts
        train_start, _ = parse_window_name(facts.window)
        metadata = {
            "window": facts.window, "train_start": train_start, "test_start": facts.test_start,
            "test_end": facts.test_end, "version": facts.version, "model_id": facts.model_id,
            "run_id": facts.run_id, "stale_days": choice.stale_days, "reason": choice.reason, "stage": stage,
            "feature_set": facts.feature_set,
        }
        return ModelChoice(self.model(facts), facts.window, metadata)

    def load_model_for_now(self, city: str, bracket: str, stage: str = "Production") -> ModelChoice:
        return self.load_model_for_date(city, bracket, climate_day(self._clock.now(), get_city(city)), stage)


_default: RegistryCache | None = None


def default_cache() -> RegistryCache:
    global _default  # noqa: PLW0603 - one process-wide cache is the point: models load once
    if _default is None:
        _default = RegistryCache()
    return _default


def load_model_for_date(city: str, bracket: str, target_date: date, stage: str = "Production") -> ModelChoice:
    """The seed's API, backed by the registry: (model, window_name, metadata)."""
    return default_cache().load_model_for_date(city, bracket, target_date, stage)


def load_model_for_now(city: str, bracket: str, stage: str = "Production") -> ModelChoice:
    return default_cache().load_model_for_now(city, bracket, stage)
