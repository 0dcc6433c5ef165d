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

from kwx.registry.versions import pip_requirements
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
    (every window's model has the same structure and loader). The pinned requirements are read once
    (``pip_requirements``), and MLflow's check of them against this environment is skipped
    (``_requirement_check_skipped``): they were read from this environment, so it could never warn.
    """

    def __init__(self):
        self.signature: ModelSignature | None = None
        self.validated = False
        self.pip_requirements = pip_requirements()

    def log_model(self, model, name: str, input_example: pd.DataFrame, **kwargs) -> ModelInfo:
        if self.signature is None:
            self.signature = model_signature(model, input_example)
        with _requirement_check_skipped():
            info = log_model(model, name, input_example, signature=self.signature,
                             validate_serving_input=not self.validated, pip_requirements=self.pip_requirements,
                             **kwargs)
        self.validated = True
        return info


@contextmanager
def _requirement_check_skipped() -> Iterator[None]:
    """MLflow compares a model's pinned requirements with the installed packages when it saves the model and when
    it loads it to check the input example, mapping every installed package to its modules first: about 0.3 s a
    run and 0.01 s a model here. kwx pins exactly what is installed (``pip_requirements``; MLflow pins its own
    version), so the comparison is of this environment with itself. MLflow-internal: where a module no longer
    has the function, it is left alone."""
    import mlflow.pyfunc
    from mlflow.utils import environment

    checking = [m for m in (environment, mlflow.pyfunc) if hasattr(m, "warn_dependency_requirement_mismatches")]
    checks = [m.warn_dependency_requirement_mismatches for m in checking]
    for module in checking:
        module.warn_dependency_requirement_mismatches = _no_requirement_check
    try:
        yield
    finally:
        for module, check in zip(checking, checks, strict=True):
            module.warn_dependency_requirement_mismatches = check


def _no_requirement_check(requirements: list[str]) -> None:
    """What `_requirement_check_skipped` puts in the place of MLflow's check."""


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
