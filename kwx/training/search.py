"""Hyperparameter search: regularization paths over C inside Optuna trials (seeded TPE, median pruning per
fold) on day-grouped CV folds prepared once per window.

MLflow-free: the runner logs what this returns. With a shared storage the same per-window study is
joined by ``kwx search-worker`` processes on other hosts (``join_search``), which log nothing.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
import sqlalchemy.exc

from kwx.config import SearchSpace, TrainConfig
from kwx.training.model import (
    ModelParams,
    PreparedFold,
    group_folds,
    l1_ratio_for,
    prepare_folds,
    regularization_path,
)

WARMUP_FOLDS = 2  # folds every trial completes before the pruner may stop it
C_ATTR = "C"  # trial user attribute: the path's best C (C is swept, not drawn, so it is no Optuna param)


def c_path(space: SearchSpace) -> np.ndarray:
    """The Cs every trial sweeps: log-spaced, strong to weak regularization."""
    return np.geomspace(space.C_min, space.C_max, space.C_path_points)


def suggest_params(trial: optuna.Trial, config: TrainConfig) -> ModelParams:
    """What Optuna draws (l1_ratio only under elasticnet), at the path's first C: the objective sweeps the rest."""
    space = config.search
    penalty = trial.suggest_categorical("penalty", list(config.penalties))
    searched = (trial.suggest_float("l1_ratio", space.l1_ratio_min, space.l1_ratio_max)
                if penalty == "elasticnet" else None)
    class_weight = trial.suggest_categorical("class_weight", list(space.class_weight))
    return ModelParams(penalty, space.C_min, l1_ratio_for(penalty, searched), class_weight)


def params_from_trial(trial: optuna.trial.FrozenTrial) -> ModelParams:
    p = trial.params
    return ModelParams(p["penalty"], trial.user_attrs[C_ATTR], l1_ratio_for(p["penalty"], p.get("l1_ratio")),
                       p["class_weight"])


@dataclass
class SearchResult:
    best: ModelParams
    best_cv_log_loss: float
    trials: pd.DataFrame
    fits: int
    unconverged_fits: int


class SearchTimeoutError(RuntimeError):
    """Other workers' trials of a shared study were still running when the coordinator's wait ran out."""


WORKER_ATTR = "worker"  # trial user attribute: which process ran the trial
DEFAULT_WAIT_SECONDS = 900.0
# A worker that dies mid-trial stops beating; after the grace period its trial is failed instead of
# leaving the coordinator waiting on it until the timeout.
HEARTBEAT_SECONDS = 10
HEARTBEAT_GRACE_SECONDS = 60
STORAGE_ATTEMPTS = 3


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def make_storage(spec: str | None) -> optuna.storages.BaseStorage | None:
    """None: in-memory; 'journal:PATH': a journal file (safe for several local processes); else an RDB URL."""
    if spec is None:
        return None
    if spec.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(spec.removeprefix("journal:")))
    # Workers starting together on a fresh database race to create Optuna's tables; the loser sees a
    # duplicate and succeeds on the next attempt, when the tables exist.
    attempt = 1
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
                return optuna.storages.RDBStorage(spec, heartbeat_interval=HEARTBEAT_SECONDS,
                                                  grace_period=HEARTBEAT_GRACE_SECONDS)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt >= STORAGE_ATTEMPTS:
                raise
            time.sleep(0.5 * attempt)
            attempt += 1


def _objective(folds: list[PreparedFold], config: TrainConfig, counters: dict[str, int]):
    """A trial sweeps the C path on each fold in turn; its value is the best C's mean fold log loss.

    From the warm-up on, it reports the best mean over the folds done so far, so MedianPruner compares
    trials at their best C, as their final values do. Not before: the pruner weighs a trial's best report
    over all its steps against the others' at the current step, so an early report on an easier fold would
    shield a bad trial. Not after the last fold: pruning then saves no work and discards a finished value.
    """
    Cs = c_path(config.search)
    worker = worker_id()

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, worker)
        params = suggest_params(trial, config)
        fold_losses = []
        for step, fold in enumerate(folds):
            path = regularization_path(fold, params, Cs)
            counters["fits"] += len(Cs)
            counters["unconverged"] += path.unconverged
            fold_losses.append(path.losses)
            mean = np.mean(fold_losses, axis=0)
            best = int(np.argmin(mean))
            trial.set_user_attr(C_ATTR, float(Cs[best]))
            if WARMUP_FOLDS <= step < len(folds) - 1:
                trial.report(float(mean[best]), step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return float(mean[best])

    return objective


def _prepared_folds(X: pd.DataFrame, y: np.ndarray, groups, config: TrainConfig) -> list[PreparedFold]:
    return prepare_folds(X, y, group_folds(groups, config.cv_splits))


def _study(config: TrainConfig, storage, study_name: str | None, seed: int) -> optuna.Study:
    return optuna.create_study(
        study_name=study_name, storage=storage, load_if_exists=storage is not None, direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=WARMUP_FOLDS),
    )


def _run_until_full(study: optuna.Study, objective, trials: int) -> int:
    """Run trials while the study (every process's trials, in any state) holds fewer than ``trials``.

    Counting before each trial, not after, means a process joining a finished study adds nothing; two
    processes racing for the last slot can overshoot by one trial each.
    """
    ran = 0
    while len(study.get_trials(deepcopy=False)) < trials:
        study.optimize(objective, n_trials=1)
        ran += 1
    return ran


def wait_for_running_trials(study: optuna.Study, timeout_seconds: float, poll_seconds: float = 0.5) -> None:
    """Block until no trial of the study is RUNNING (other workers' included), or raise after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a no-op unless the storage has heartbeats
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            return
        if time.monotonic() >= deadline:
            who = ", ".join(f"#{t.number} ({t.user_attrs.get(WORKER_ATTR, 'unknown worker')})" for t in running)
            raise SearchTimeoutError(
                f"Optuna study {study.study_name}: trials still running after {timeout_seconds:.0f} s: {who}")
        time.sleep(poll_seconds)


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """Every trial of the study, whichever process ran it, with its duration in seconds, its worker and its
    path's best C."""
    trials = study.trials_dataframe(attrs=("number", "value", "params", "state", "duration", "user_attrs"))
    trials["duration"] = trials["duration"].dt.total_seconds()
    return trials.rename(columns={f"user_attrs_{WORKER_ATTR}": WORKER_ATTR, f"user_attrs_{C_ATTR}": C_ATTR})


def run_search(
    X: pd.DataFrame, y: np.ndarray, groups, config: TrainConfig, *, storage=None,
    study_name: str | None = None, wait_seconds: float = DEFAULT_WAIT_SECONDS,
) -> SearchResult:
    """Minimise mean day-grouped CV log loss over ``config.trials`` trials, each sweeping the C path.

    The folds are imputed and scaled once here, for every trial. After each warm-up fold the trial reports
    its best mean log loss so far, so MedianPruner can stop a bad trial before its last fold. ``storage``
    (an Optuna storage from ``make_storage``) lets ``join_search`` workers on other hosts share the study:
    this process runs trials until the study holds ``config.trials``, then waits (at most ``wait_seconds``)
    for the other workers' running trials before it reads the best one. Default in-memory.
    """
    counters = {"fits": 0, "unconverged": 0}
    study = _study(config, storage, study_name, config.seed)
    _run_until_full(study, _objective(_prepared_folds(X, y, groups, config), config, counters), config.trials)
    if storage is not None:
        wait_for_running_trials(study, wait_seconds)
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise RuntimeError(f"no Optuna trial completed out of {len(study.get_trials(deepcopy=False))}")
    return SearchResult(params_from_trial(study.best_trial), float(study.best_value), trials_table(study),
                        counters["fits"], counters["unconverged"])


def join_search(X: pd.DataFrame, y: np.ndarray, groups, config: TrainConfig, *, storage,
                study_name: str) -> int:
    """Contribute trials to a shared study until it holds ``config.trials``; returns how many ran here.

    Each worker seeds its sampler from the config seed and its own identity: with one seed every
    process would draw the same random start-up trials.
    """
    seed = (config.seed + zlib.crc32(worker_id().encode())) % 2**32
    study = _study(config, storage, study_name, seed)
    objective = _objective(_prepared_folds(X, y, groups, config), config, {"fits": 0, "unconverged": 0})
    return _run_until_full(study, objective, config.trials)
