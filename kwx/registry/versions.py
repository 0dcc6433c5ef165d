"""The MLflow model registry: one registered model per city × bracket, one version per window.

Versions carry the tags that say when they may trade (window test dates), so resolution by date
reads the registry, never folder names.
"""

from __future__ import annotations

import importlib.metadata

from mlflow.tracking import MlflowClient

WINDOW_TAGS = ("city", "bracket", "window", "train_start", "train_end", "test_start", "test_end", "feature_set",
               "config_hash")


def model_name(city: str, bracket: str) -> str:
    return f"kwx-{city}-{bracket}"


def pip_requirements() -> list[str]:
    """Pinned to what trained the model; explicit so MLflow skips its slow dependency inference."""
    return [f"{pkg}=={importlib.metadata.version(pkg)}" for pkg in ("scikit-learn", "skops", "numpy", "pandas",
                                                                     "scipy")]


def register_window_version(client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str]):
    """A new version of ``name`` from a logged model, tagged with its window (all WINDOW_TAGS required)."""
    missing = [t for t in WINDOW_TAGS if t not in tags]
    if missing:
        raise ValueError(f"model version tags missing {missing}")
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name, description="kwx walk-forward window models; tags give each window")
    return client.create_model_version(name, source=model_uri, run_id=run_id, tags={k: str(v) for k, v in tags.items()})
