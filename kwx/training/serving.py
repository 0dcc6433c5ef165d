"""A window's model as MLflow stores and serves it: scikit-learn's flavor, served as a named ``p_yes``.

The saved directory is MLflow's sklearn flavor unchanged (skops file, explicit trusted types), so
``mlflow.sklearn.load_model`` returns the fitted ``CalibratedClassifierCV`` that kwx's registry cache loads.
Only the python_function flavor's loader is ``kwx_pyfunc`` instead of ``mlflow.sklearn``: a sklearn
``pyfunc_predict_fn`` can name an estimator method only, whose output is an unnamed array, so
``mlflow.pyfunc.load_model`` and ``mlflow models serve`` answer with a ``p_yes`` column. The model carries that
loader in its ``code/`` directory and pins what it needs from PyPI (``kwx.registry.versions.pip_requirements``),
so it serves in an environment without kwx (``--env-manager virtualenv``, ``mlflow models build-docker``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow.sklearn
import pandas as pd
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.models.model import MLMODEL_FILE_NAME, ModelInfo
from mlflow.pyfunc import FLAVOR_NAME as PYFUNC_FLAVOR
from mlflow.pyfunc import MAIN as PYFUNC_LOADER
from mlflow.types import ColSpec, Schema
from mlflow.utils.model_utils import FLAVOR_CONFIG_CODE

from kwx.training import kwx_pyfunc
from kwx.training.kwx_pyfunc import OUTPUT, YesProbabilityModel
from kwx.training.model import SKOPS_TRUSTED_TYPES, predict_yes


def log_model(model, name: str, input_example: pd.DataFrame, *, signature: ModelSignature | None = None,
              **kwargs) -> ModelInfo:
    """Log a fitted model to the active run; ``signature`` defaults to the model's own (``model_signature``), ``kwargs``
    go to ``mlflow.sklearn.save_model`` / ``Model.log``."""
    return Model.log(
        artifact_path=None, name=name, flavor=sys.modules[__name__], sk_model=model, serialization_format="skops",
        skops_trusted_types=list(SKOPS_TRUSTED_TYPES), signature=signature or model_signature(model, input_example),
        # Missing features are NaN, which MLflow writes as a bare NaN (invalid JSON); None is written as null.
        input_example=input_example.astype(object).where(input_example.notna(), None), **kwargs,
    )


class RunModelLogging:
    """Logs a training run's window models, doing once per run what is the same for every one of them.

    The signature (the run's feature columns in, ``p_yes`` out) is built from the first model; MLflow's check
    that the saved model answers its input example, which loads and predicts it, runs on the first model only
    (every window's model has the same structure and loader); MLflow's check of the pinned requirements against
    this environment rebuilds a map of every installed package for each requirement, so within the run it is
    built once (``_installed_packages_mapped_once``).
    """

    def __init__(self):
        self.signature: ModelSignature | None = None
        self.validated = False

    def log_model(self, model, name: str, input_example: pd.DataFrame, **kwargs) -> ModelInfo:
        if self.signature is None:
            self.signature = model_signature(model, input_example)
        with _installed_packages_mapped_once():
            info = log_model(model, name, input_example, signature=self.signature,
                             validate_serving_input=not self.validated, **kwargs)
        self.validated = True
        return info


@contextmanager
def _installed_packages_mapped_once() -> Iterator[None]:
    """MLflow rebuilds its package-to-module map of the whole environment (thousands of entries) once per pinned
    requirement of every model it saves: 0.1-0.2 s a model here. Nothing is installed while a run logs, so its
    saves reuse the first map. MLflow-internal: where the function is gone, this changes nothing."""
    from mlflow.utils import requirements_utils

    rebuild = getattr(requirements_utils, "_init_packages_to_modules_map", None)
    if rebuild is None:
        yield
        return

    def build_once() -> None:
        if getattr(requirements_utils, "_PACKAGES_TO_MODULES", None) is None:
            rebuild()

    requirements_utils._init_packages_to_modules_map = build_once
    try:
        yield
    finally:
        requirements_utils._init_packages_to_modules_map = rebuild


def model_signature(model, input_example: pd.DataFrame) -> ModelSignature:
    """Every feature a double column the request must send, whose values may be null (imputed, as in
    training); the output the named ``p_yes``.

    Inference marks a column optional only when the example happens to miss a value in it, but the model
    needs every column (a missing value is null, not an absent column): MLflow then rejects a request that
    lacks one, naming it, before it reaches the model.
    """
    inferred = infer_signature(input_example, pd.DataFrame({OUTPUT: predict_yes(model, input_example)}))
    present = Schema([ColSpec(spec.type, spec.name, required=True) for spec in inferred.inputs.inputs])
    return ModelSignature(present, inferred.outputs)


def save_model(sk_model, path: str, mlflow_model: Model, **kwargs) -> None:
    """``Model.log``'s flavor hook: MLflow's sklearn flavor, its pyfunc loader switched to ``kwx_pyfunc``, which
    the model carries as its only code."""
    kwargs.pop("validate_serving_input", None)  # Model.log's own option, which it hands on to the flavor too
    mlflow.sklearn.save_model(sk_model, path, mlflow_model=mlflow_model, code_paths=[kwx_pyfunc.__file__], **kwargs)
    # MLflow imports it from code/, where the file lies outside any package: by its bare name
    mlflow_model.flavors[PYFUNC_FLAVOR][PYFUNC_LOADER] = kwx_pyfunc.__name__.rsplit(".", 1)[1]
    # The sklearn flavor loads from skops alone; without this every registry-cache load would put the
    # model's code/ on sys.path.
    mlflow_model.flavors[mlflow.sklearn.FLAVOR_NAME].pop(FLAVOR_CONFIG_CODE)
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))


def _load_pyfunc(path: str) -> YesProbabilityModel:
    """The loader of models logged before they carried ``kwx_pyfunc``: they name this module."""
    return kwx_pyfunc._load_pyfunc(path)
