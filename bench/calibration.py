"""Benchmark: probability quality of the demo's chicago models against the market, per bracket.

    .venv/bin/python bench/calibration.py --trials 10 [--market-skill 0.5] [--brackets between greater less]
        [--set calibration.prior_rows=5]

Builds the chicago demo data in a temporary SQLite file, trains each bracket's config
(configs/elasticnet_chi_{bracket}.yaml, 8 walk-forward windows) into a temporary MLflow store,
and pools every window's logged test predictions. Prints, per bracket, over all test rows and over
the rows the settlement rule leaves open (unlocked): log loss, Brier, ECE, the share of rows whose
probability is exactly 0 or 1, and the Brier skill against the market's mid price
(1 − Brier_model / Brier_market on the open rows the market quotes). ``ece_day_sd`` is the ECE's
standard deviation over resamples of whole days: its noise on a bracket with few settled days.

Everything is computed from the ``test_predictions.csv`` artifacts, so the same script measures
older kwx versions too (without a ``locked`` column every row counts as open).
"""

from __future__ import annotations

import argparse
import inspect
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _workspace import scratch_workspace

REPO = Path(__file__).resolve().parents[1]


def day_bootstrap_ece_sd(y: np.ndarray, p: np.ndarray, days: np.ndarray, resamples: int = 200) -> float:
    """Standard deviation of the 10-bin ECE over resamples of whole event days.

    A day's rows share one outcome, so the days, not the rows, are the sample: this is the noise an ECE
    computed on so few outcomes carries even for a calibrated forecaster.
    """
    codes, unique_days = pd.factorize(days)
    bins = np.minimum((p * 10).astype(int), 9)
    rng = np.random.default_rng(0)
    values = []
    for _ in range(resamples):
        weight = np.bincount(rng.integers(0, len(unique_days), len(unique_days)), minlength=len(unique_days))[codes]
        rows = np.bincount(bins, weights=weight, minlength=10)
        gap = np.abs(np.bincount(bins, weights=weight * y, minlength=10) - np.bincount(bins, weights=weight * p,
                                                                                        minlength=10))
        values.append(gap.sum() / rows.sum())
    return float(np.std(values))


def pooled_quality(predictions: pd.DataFrame) -> dict[str, float]:
    from kwx.domain.metrics import brier, log_loss, reliability

    y = predictions["label"].to_numpy(dtype=float)
    p = predictions["p_model"].to_numpy(dtype=float)
    market = predictions["p_market"].to_numpy(dtype=float)
    locked = predictions["locked"].to_numpy(dtype=bool) if "locked" in predictions else np.zeros(len(y), bool)
    open_rows = ~locked
    comparable = open_rows & ~np.isnan(market)
    return {
        "rows": len(y), "locked_share": float(locked.mean()),
        "log_loss": log_loss(y, p), "brier": brier(y, p), "ece": reliability(y, p).ece,
        "ece_day_sd": day_bootstrap_ece_sd(y, p, predictions["event_date"].to_numpy()),
        "open_log_loss": log_loss(y[open_rows], p[open_rows]), "open_brier": brier(y[open_rows], p[open_rows]),
        "open_ece": reliability(y[open_rows], p[open_rows]).ece,
        "open_at_bounds": float(np.mean((p[open_rows] <= 0) | (p[open_rows] >= 1))),
        "market_brier_open": brier(y[comparable], market[comparable]),
        "brier_skill_open": 1 - brier(y[comparable], p[comparable]) / brier(y[comparable], market[comparable]),
        "market_ece_open": reliability(y[comparable], market[comparable]).ece,
    }


def run_predictions(run_id: str) -> pd.DataFrame:
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(run_id)
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    frames = [pd.read_csv(mlflow.artifacts.download_artifacts(run_id=c.info.run_id,
                                                              artifact_path="test_predictions.csv"))
              for c in children if c.data.tags.get("kwx.kind") == "window"]
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--market-skill", type=float, default=None,
                        help="demo market skill (default: the generator's default)")
    parser.add_argument("--brackets", nargs="+", default=["between", "greater", "less"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every bracket, e.g. calibration.prior_rows=5 (YAML value)")
    args = parser.parse_args()

    import mlflow

    from kwx.config import load_config
    from kwx.data.demo import load_demo
    from kwx.training import runner

    skill = {} if args.market_skill is None else {"market_skill": args.market_skill}
    if skill and "market_skill" not in inspect.signature(load_demo).parameters:
        parser.error("this kwx version's demo generator has no market skill")
    rows = {}
    with scratch_workspace() as (tmp, engine):
        config = load_config(REPO / "configs" / "elasticnet_chi_between.yaml")
        started = time.perf_counter()
        load_demo(engine, ["chicago"], config.start, config.end, seed=42, **skill)
        print(f"demo data {config.start}..{config.end} {skill or ''}: {time.perf_counter() - started:.1f} s")
        for bracket in args.brackets:
            overrides = {"trials": args.trials} | {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.set)}
            config = load_config(REPO / "configs" / f"elasticnet_chi_{bracket}.yaml", overrides=overrides)
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / f'mlflow-{bracket}.db'}"
            started = time.perf_counter()
            summary = runner.train(config, engine, workers=args.workers)
            rows[bracket] = pooled_quality(run_predictions(summary.parent_run_id))
            rows[bracket]["train_seconds"] = time.perf_counter() - started
            mlflow.set_tracking_uri(None)
            print(f"{bracket}: {len(summary.versions)} windows trained in {rows[bracket]['train_seconds']:.0f} s")
    table = pd.DataFrame(rows).T
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format):
        print(table)


if __name__ == "__main__":
    main()
