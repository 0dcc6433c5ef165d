"""The python_function loader every logged kwx model carries: feature rows in, a named ``p_yes`` column out.

``serving.save_model`` copies this file into the model's ``code/`` directory (MLflow's ``code_paths``), and
MLflow imports it from there by its bare name, in whatever environment serves the model: `mlflow models
serve --env-manager virtualenv` and `mlflow models build-docker` install only the model's requirements.txt,
never kwx (not on PyPI). So it imports nothing from kwx, only what loading the model itself needs. It answers
with scikit-learn's ``predict_proba``, the reference kwx's compiled ``predict_yes`` is held to (1e-12).
"""

from __future__ import annotations

import mlflow.sklearn
import pandas as pd

OUTPUT = "p_yes"


def _load_pyfunc(path: str) -> YesProbabilityModel:
    # ``path`` is the model directory: the sklearn flavor's pyfunc configuration names no ``data`` file.
    return YesProbabilityModel(mlflow.sklearn.load_model(path))


class YesProbabilityModel:
    """What ``mlflow.pyfunc.load_model`` wraps: P(label = 1) of each row, its columns matched by name."""

    def __init__(self, model):
        self.model = model

    def predict(self, data: pd.DataFrame) -> pd.DataFrame:
        rows = data[list(self.model.feature_names_in_)].astype(float)
        return pd.DataFrame({OUTPUT: self.model.predict_proba(rows)[:, 1]}, index=data.index)
