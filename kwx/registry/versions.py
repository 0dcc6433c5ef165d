"""Registered versions: one registered model per city × bracket, one version per window.

Versions carry the tags that say when they may trade (window test dates), so resolution by date
reads the registry, never folder names.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import date, datetime

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from kwx.registry.resolution import PromotionRecord, VersionFacts, stage_members

PENDING_TAG = "pending_promotion"  # version tag: the promotion moving it, until that promotion's record exists
RECORD_PREFIX = "kwx.promotion."  # registered-model tag key of a finished promotion's record, + its id
# The description registered models got before it said what they hold.
LEGACY_MODEL_DESCRIPTION = "kwx walk-forward window models; tags give each window"
# How a version came to be, and whether its trading week has been scored: a walk-forward window is tested
# when it is trained; a forward window (`kwx retrain`) trades a week still ahead, which `kwx monitor`
# scores once it has settled (pending -> done).
ORIGIN_TAG, WALK_FORWARD, FORWARD = "origin", "walk_forward", "forward"
EVALUATION_TAG, EVALUATION_PENDING, EVALUATION_DONE = "evaluation", "pending", "done"
WINDOW_TAGS = ("city", "bracket", "window", "train_start", "train_end", "test_start", "test_end", "feature_set",
               "config_hash")


def model_name(city: str, bracket: str) -> str:
    return f"kwx-{city}-{bracket}"


def pip_requirements() -> list[str]:
    """What the model object needs from PyPI in a served model's environment, pinned to what trained it (MLflow
    adds itself). Never kwx, which is not on PyPI: the model carries its loader (``kwx.training.kwx_pyfunc``).
    Explicit so MLflow skips its slow dependency inference."""
    return [f"{pkg}=={importlib.metadata.version(pkg)}" for pkg in ("scikit-learn", "skops", "numpy", "pandas",
                                                                     "scipy")]


def model_description(city: str, bracket: str) -> str:
    return (f"Walk-forward ElasticNet models of P(YES) for Kalshi's {city} {bracket} temperature markets: one "
            "version per window, tagged with the days it trained on and the days it may trade (test_start to "
            "test_end).")


def version_description(tags: dict[str, str]) -> str:
    return (f"Window {tags['window']}: trained on {tags['train_start']} to {tags['train_end']}, trades "
            f"{tags['test_start']} to {tags['test_end']} ({tags['feature_set']} features).")


def register_window_version(client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str], *,
                            model_id: str, described: bool = False):
    """A new version of ``name`` from a logged model, tagged with its window (all WINDOW_TAGS required).

    ``model_id`` is the logged model's id: a tracking server refuses a ``models:/m-...`` source without it. The
    model is new (training logged it for this version), so this version is the only one it has.
    ``described``: ``name`` exists with its description, which is not read again (a training run's later
    windows, once its first registered).
    """
    missing = [t for t in WINDOW_TAGS if t not in tags]
    if missing:
        raise ValueError(f"model version tags missing {missing}")
    if not described:
        describe_registered_model(client, name, model_description(tags["city"], tags["bracket"]))
    version = client.create_model_version(name, source=model_uri, run_id=run_id,
                                          tags={k: str(v) for k, v in tags.items()},
                                          description=version_description(tags), model_id=model_id)
    link_new_logged_model(client, model_id, name, version.version)
    return version


def describe_registered_model(client: MlflowClient, name: str, description: str) -> None:
    """``name`` registered with ``description``, created if need be."""
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        client.create_registered_model(name, description=description)
        return
    # Models registered before descriptions were complete get the current one; a user's own text stays.
    if registered.description in (None, "", LEGACY_MODEL_DESCRIPTION):
        client.update_registered_model(name, description=description)


def link_new_logged_model(client: MlflowClient, model_id: str, name: str, version: int | str) -> None:
    """Record the version on its logged model, which is what the UI's "Registered models" columns read.

    A tracking server does this itself on registration; a database store used directly does not. The model is
    new, so its one version is the whole list: written without reading it first, it is what a server wrote.
    """
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([{"name": name, "version": version}])})


def all_versions(client: MlflowClient, name: str) -> list:
    """Every version of a registered model (empty when the model does not exist yet)."""
    return list(client.search_model_versions(f"name = '{name}'"))


def facts(version) -> VersionFacts:
    tags = version.tags
    promoted = tags.get("promoted_at")
    return VersionFacts(
        name=version.name, version=str(version.version), window=tags["window"],
        test_start=date.fromisoformat(tags["test_start"]), test_end=date.fromisoformat(tags["test_end"]),
        run_id=version.run_id, promoted_at=datetime.fromisoformat(promoted) if promoted else None,
        feature_set=tags.get("feature_set", "elasticnet_rich"), stage=version.current_stage,
        pending=tags.get(PENDING_TAG),
    )


def record_tag(record: PromotionRecord) -> tuple[str, str]:
    """(key, value) of the registered-model tag that records a finished promotion."""
    return RECORD_PREFIX + record.id, json.dumps({**asdict(record), "at": record.at.isoformat()})


def promotion_records(client: MlflowClient, name: str) -> list[PromotionRecord]:
    """Every finished promotion of a registered model (none when the model does not exist yet)."""
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return []
        raise
    records = []
    for key, value in tags.items():
        if key.startswith(RECORD_PREFIX):
            doc = json.loads(value)
            records.append(PromotionRecord(
                id=doc["id"], stage=doc["stage"], run_id=doc["run_id"], at=datetime.fromisoformat(doc["at"]),
                promoted=tuple(doc["promoted"]), replaced=tuple(doc["replaced"])))
    return sorted(records, key=lambda r: r.id)


def registry_state(client: MlflowClient, name: str) -> tuple[list, list[PromotionRecord]]:
    """(every version, every finished promotion) of one moment: a promotion finishing between the two
    reads would pair its versions' new state with the records before it, so the records are read again
    and the pair re-read until no promotion finished in between."""
    records = promotion_records(client, name)
    while True:
        versions = all_versions(client, name)
        again = promotion_records(client, name)
        if again == records:
            return versions, records
        records = again


def stage_table(client: MlflowClient, name: str, stage: str) -> list[VersionFacts]:
    """The versions that trade at ``stage`` (case-insensitive, as MLflow stores 'Production')."""
    versions, records = registry_state(client, name)
    return stage_members([facts(v) for v in versions], records, stage)


@dataclass
class ModelOverview:
    """One registered kwx model at a glance; metrics are the newest version's training (parent) run's."""

    name: str
    versions: int
    windows: int
    stages: dict[str, int]
    aliases: list[str]
    newest_run_id: str | None
    metrics: dict[str, float]


def model_overviews(client: MlflowClient) -> list[ModelOverview]:
    """Every registered ``kwx-*`` model, by name."""
    models, token = [], None
    while True:
        page = client.search_registered_models("name LIKE 'kwx-%'", max_results=100, page_token=token)
        models += list(page)
        token = page.token
        if not token:
            break
    overviews = []
    for model in sorted(models, key=lambda m: m.name):
        versions = sorted(all_versions(client, model.name), key=lambda v: int(v.version))
        newest = versions[-1] if versions else None
        parent = newest.tags.get("parent_run_id") if newest else None
        metrics = client.get_run(parent).data.metrics if parent else {}
        overviews.append(ModelOverview(
            name=model.name, versions=len(versions), windows=len({v.tags.get("window") for v in versions}),
            stages=dict(Counter(v.current_stage for v in versions)),
            aliases=sorted(f"@{alias}->{version}" for alias, version in model.aliases.items()),
            newest_run_id=parent, metrics=dict(metrics)))
    return overviews
