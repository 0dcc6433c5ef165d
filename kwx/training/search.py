"""Hyperparameter search with Optuna: seeded TPE, median pruning per fold, day-grouped CV.

MLflow-free: the runner logs what this returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import log_loss

from kwx.config import TrainConfig
from kwx.training.model import ModelParams, fit_quietly, group_folds, l1_ratio_for, make_pipeline


def suggest_params(trial: optuna.Trial, config: TrainConfig) -> ModelParams:
    """The search space as a function of the trial: l1_ratio is searched only under elasticnet."""
    space = config.search
    penalty = trial.suggest_categorical("penalty", list(config.penalties))
    C = trial.suggest_float("C", space.C_min, space.C_max, log=True)
    searched = (trial.suggest_float("l1_ratio", space.l1_ratio_min, space.l1_ratio_max)
                if penalty == "elasticnet" else None)
    class_weight = trial.suggest_categorical("class_weight", list(space.class_weight))
    return ModelParams(penalty, C, l1_ratio_for(penalty, searched), class_weight)


def params_from_trial(trial: optuna.trial.FrozenTrial) -> ModelParams:
    p = trial.params
    return ModelParams(p["penalty"], p["C"], l1_ratio_for(p["penalty"], p.get("l1_ratio")), p["class_weight"])


@dataclass
class SearchResult:
    best: ModelParams
    best_cv_log_loss: float
    trials: pd.DataFrame
    fits: int
    unconverged_fits: int


def run_search(
    X: pd.DataFrame, y: np.ndarray, groups, config: TrainConfig, *, storage: str | None = None,
    study_name: str | None = None,
) -> SearchResult:
    """Minimise mean day-grouped CV log loss over ``config.trials`` trials.

    Each fold's log loss is reported as an intermediate value so MedianPruner can stop a bad
    trial after the warm-up folds. ``storage`` (an Optuna RDB URL or journal) lets workers on
    several hosts share one study; default in-memory.
    """
    folds = group_folds(groups, config.cv_splits)
    counters = {"fits": 0, "unconverged": 0}

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, config)
        losses = []
        for step, (train, test) in enumerate(folds):
            model = make_pipeline(params, config.seed)
            report = fit_quietly(model, X.iloc[train], y[train])
            counters["fits"] += 1
            counters["unconverged"] += not report.converged
            losses.append(log_loss(y[test], model.predict_proba(X.iloc[test])[:, 1], labels=[0, 1]))
            trial.report(float(np.mean(losses)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(losses))

    study = optuna.create_study(
        study_name=study_name, storage=storage, load_if_exists=storage is not None, direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
    )
    # With shared storage several workers run this at once; together they stop at config.trials.
    study.optimize(objective, n_trials=config.trials,
                   callbacks=[optuna.study.MaxTrialsCallback(config.trials, states=None)])
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(f"no Optuna trial completed out of {len(study.trials)}")
    trials = study.trials_dataframe(attrs=("number", "value", "params", "state", "duration"))
    trials["duration"] = trials["duration"].dt.total_seconds()
    return SearchResult(params_from_trial(study.best_trial), float(study.best_value), trials,
                        counters["fits"], counters["unconverged"])
