"""Train a matrix of configs (city × bracket): prepare every one, then train them one after another.

Every config is prepared (data loaded, windows planned) before the first MLflow run is created, so bad
input is reported for all failing configs at once. Each config then trains as ``runner.train`` does on
its own: one parent run, one registered model ``kwx-{city}-{bracket}``, windows in parallel workers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from kwx import tracking
from kwx.config import MatrixConfig, TrainConfig, load_config, parse_config
from kwx.data.dataset import forecasts_shared
from kwx.training import runner
from kwx.training.pool import worker_pool
from kwx.training.walkforward import WindowPlan, WindowResult

# `kwx train --all` trains the user's configs, relative to the working directory (`kwx init` writes them).
CONFIGS_DIR = Path("configs")
ALL_CONFIGS = "elasticnet_*.yaml"

Prepared = tuple[pd.DataFrame, list[str], list[WindowPlan]]


@dataclass
class MatrixEntry:
    path: Path
    config: TrainConfig
    prepared: Prepared | None

    @property
    def usable_windows(self) -> int:
        return sum(p.usable for p in self.prepared[2]) if self.prepared else 0


@dataclass
class MatrixResult:
    path: Path
    summary: runner.TrainSummary
    seconds: float

    def mean(self, metric: str) -> float:
        return float(np.mean([m[metric] for m in self.summary.window_metrics.values()]))

    def row(self) -> dict[str, Any]:
        return {"config": self.path.name, "model": self.summary.model_name,
                "parent_run_id": self.summary.parent_run_id, "windows": len(self.summary.versions),
                "test_log_loss": self.mean("test_log_loss"), "market_log_loss": self.mean("market_log_loss"),
                "test_ece": self.mean("test_ece"), "seconds": self.seconds}


def load_matrix(path: Path, overrides: dict[str, Any] | None = None) -> list[tuple[Path, TrainConfig]]:
    """The member configs of a matrix file; ``overrides`` (the command line's) win over the file's."""
    return load_config(path, MatrixConfig).load_members(overrides)


def load_all(overrides: dict[str, Any] | None = None,
             config_dir: Path = CONFIGS_DIR) -> list[tuple[Path, TrainConfig]]:
    """Every ``elasticnet_*.yaml`` config (one per city × bracket)."""
    matrix = parse_config({"configs": [ALL_CONFIGS]}, MatrixConfig, "--all",
                          context={"config_dir": config_dir, "source": f"{config_dir}/{ALL_CONFIGS}"})
    return matrix.load_members(overrides)


def prepare_all(members: list[tuple[Path, TrainConfig]], engine: Engine,
                on_prepared: Callable[[Path], None] | None = None) -> tuple[list[MatrixEntry], dict[Path, str]]:
    """Prepare every config; returns those that can train and, per failing config, its one-line reason."""
    entries, failures = [], {}
    with forecasts_shared():  # a city's brackets read its forecasts once
        for path, config in members:
            try:
                entries.append(MatrixEntry(path, config, runner.prepare(config, engine)))
            except runner.PREPARE_ERRORS as exc:
                failures[path] = " ".join(str(exc).split())
            if on_prepared is not None:
                on_prepared(path)
    return entries, failures


@contextmanager
def _outside_launched_run() -> Iterator[str | None]:
    """Under `mlflow run`, MLFLOW_RUN_ID names one launched run; every config needs a parent run of its own."""
    launched = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        yield launched
    finally:
        if launched is not None:
            os.environ["MLFLOW_RUN_ID"] = launched


def train_matrix(
    entries: list[MatrixEntry], engine: Engine, *, workers: int, optuna_storage_spec: str | None = None,
    experiment: str | None = None, on_config_start: Callable[[MatrixEntry], None] | None = None,
    on_window_done: Callable[[MatrixEntry, str, WindowResult], None] | None = None,
) -> list[MatrixResult]:
    """Train each prepared config in turn, its windows in one pool of ``workers`` processes shared by all."""
    tracking.configure()  # an unreachable store fails here, before the first config's run
    results = []
    with ExitStack() as stack:
        launched = stack.enter_context(_outside_launched_run())
        pool = stack.enter_context(worker_pool(workers)) if workers > 1 else None
        for entry in entries:
            if on_config_start is not None:
                on_config_start(entry)
            started = time.perf_counter()
            summary = runner.train(
                entry.config, engine, workers=workers, optuna_storage_spec=optuna_storage_spec, experiment=experiment,
                config_text=entry.path.read_text(), prepared=entry.prepared, executor=pool, launched_run_id=launched,
                on_window_done=None if on_window_done is None else
                (lambda window, result, e=entry: on_window_done(e, window, result)))
            results.append(MatrixResult(entry.path, summary, time.perf_counter() - started))
            entry.prepared = None  # the frame is no longer needed; 21 of them would add up
        if launched is not None:
            runner.log_summary(launched, [r.row() for r in results], "matrix_summary.json")
    return results
