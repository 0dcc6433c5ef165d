"""`kwx search-worker`: extra Optuna workers for a training run, on any host, logging nothing to MLflow.

The coordinator (`kwx train --optuna-storage URL`) trains, logs and registers every window once. Workers
started with the same config, overrides and storage join its per-window studies (named by
``runner.search_study_prefix``) and run trials until each study holds the config's ``trials``; the
coordinator waits for their running trials before it reads a window's results. Workers need the kwx
database (the same data) and the Optuna storage, never the tracking server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import pandas as pd
from sqlalchemy import Engine

from kwx import tracking
from kwx.config import TrainConfig
from kwx.training.pool import results_in_order, window_slice
from kwx.training.runner import prepare, search_study_prefix, validate_storage
from kwx.training.search import make_storage
from kwx.training.walkforward import WindowPlan, search_window


@dataclass
class WorkerSummary:
    study_prefix: str
    trials: dict[str, int]  # window name -> trials this worker ran
    skipped: dict[str, str]  # window name -> reason
    seconds: float


def _search_in_process(frame: pd.DataFrame, features: list[str], config: TrainConfig, window_plan: WindowPlan,
                       storage_spec: str, study_prefix: str) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return search_window(frame, features, config, window_plan, optuna_storage=make_storage(storage_spec),
                         study_prefix=study_prefix)


def run_worker(
    config: TrainConfig, engine: Engine, storage_spec: str, *, workers: int = 1,
    on_window_done: Callable[[str, int], None] | None = None,
) -> WorkerSummary:
    """Join every usable window's study in window order (the coordinator's order) until each is full."""
    started = time.perf_counter()
    validate_storage(storage_spec, tracking.tracking_uri())
    frame, features, plans = prepare(config, engine)
    usable = [p for p in plans if p.usable]
    prefix = search_study_prefix(config)
    trials: dict[str, int] = {}

    def done(name: str, count: int) -> None:
        trials[name] = count
        if on_window_done is not None:
            on_window_done(name, count)

    jobs = [(window_slice(frame, p), features, config, p, storage_spec, prefix) for p in usable]
    for plan, count in zip(usable, results_in_order(_search_in_process, jobs, workers), strict=True):
        done(plan.window.name, count)
    return WorkerSummary(prefix, trials, {p.window.name: p.skip_reason for p in plans if not p.usable},
                         time.perf_counter() - started)

