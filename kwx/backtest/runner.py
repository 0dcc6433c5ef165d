"""A backtest run: model sources → one loaded period → strategy, baselines, blend grid → MLflow.

The only backtest module that talks to MLflow. The period (features, decisions' model
probabilities) is built once; every blend weight re-runs only the cheap gates, math and execution.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from sqlalchemy import Engine

from kwx import tracking
from kwx.backtest.data import load_period
from kwx.backtest.engine import TICK_SECONDS, BacktestResult, Period, simulate
from kwx.backtest.models import ModelSource, OutOfSampleResolver
from kwx.cities import get_city
from kwx.config import RtConfig
from kwx.data.dataset import has_demo_settlements
from kwx.domain.performance import source_key
from kwx.domain.positions import SOURCE_LABELS, SOURCES
from kwx.plots import equity_curves, metric_by_weight
from kwx.registry.cache import RegistryCache

EXPERIMENT = "kwx-backtests"
# The two baselines a blend must beat: trading the market's own price, and trading the model alone.
BASELINES = {"market_only": 0.0, "model_only": 1.0}
# What `--metric` may rank the blend grid by. The grid ranks on the figure's open-row part (``ranking_key``):
# locked rows trade the rule's 0 or 1 whatever the weight, so only open rows tell the weights apart, and a
# total would let PnL that no weight earns sway the choice.
RANKING_METRICS = ("daily_sharpe", "total_pnl", "roi_on_capital", "hit_rate")


def ranking_key(metric: str) -> str:
    """The summary key the grid ranks by for ``--metric``: its open-row part ('daily_sharpe' -> 'open_daily_sharpe')."""
    return source_key("open", metric)


class BacktestError(ValueError):
    """A backtest request that cannot run: bad grid, metric or model source; the message says which."""


MAX_GRID_WEIGHTS = 101


def parse_grid(spec: str) -> list[float]:
    """'0.5:0.8:0.05' -> [0.5, 0.55, ..., 0.8] (both ends included)."""
    parts = spec.split(":")
    try:
        low, high, step = (float(p) for p in parts)
    except ValueError:
        raise BacktestError(f"blend grid {spec!r} is not START:STOP:STEP (e.g. 0.5:0.8:0.05)") from None
    if not all(math.isfinite(v) for v in (low, high, step)):
        raise BacktestError(f"blend grid {spec!r} needs finite numbers START:STOP:STEP")
    if not (0 <= low <= high <= 1) or step <= 0:
        raise BacktestError(f"blend grid {spec!r} needs 0 <= START <= STOP <= 1 and STEP > 0")
    count = int(np.floor((high - low) / step + 1e-9)) + 1
    if count > MAX_GRID_WEIGHTS:
        # Each weight is a full simulated backtest and an MLflow child run.
        raise BacktestError(f"blend grid {spec!r} has {count:,} weights, more than {MAX_GRID_WEIGHTS}: use a "
                            "larger STEP")
    return [round(low + k * step, 10) for k in range(count)]


@dataclass
class BacktestRun:
    run_id: str
    experiment_id: str
    strategy: BacktestResult
    baselines: dict[str, BacktestResult]
    grid: list[BacktestResult]
    metric: str
    sources: list[str]
    demo_data: bool  # the markets are the demo generator's: their P&L says nothing about a real market
    fees: str = ""  # where the fees came from (``FeeBook.describe``): the exchange's data per series, or the config
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def best_weight(self) -> float | None:
        return self.strategy.blend_weight if self.grid else None

    @property
    def ranked_by(self) -> str:
        return ranking_key(self.metric)


def model_sources(client: MlflowClient, pairs: list[tuple[str, str]], *, run_id: str | None = None,
                  stage: str | None = None) -> list[ModelSource]:
    if run_id and stage:
        raise BacktestError("give --run-id or --stage, not both")
    if run_id and len(pairs) > 1:
        raise BacktestError("--run-id names one training run: give one --city and --bracket with it")
    if stage:
        return [ModelSource.from_stage(client, city, bracket, stage) for city, bracket in pairs]
    return [ModelSource.from_run(client, city, bracket, run_id) for city, bracket in pairs]


def run_backtest(config: RtConfig, engine: Engine, pairs: list[tuple[str, str]], start: date, end: date, *,
                 run_id: str | None = None, stage: str | None = None, grid: list[float] | None = None,
                 metric: str = "daily_sharpe", on_step: Callable[[str], None] | None = None) -> BacktestRun:
    """Backtest ``pairs`` over event dates [start, end]; with ``grid``, the best weight by ``metric`` on open
    rows (``ranking_key``) wins."""
    if metric not in RANKING_METRICS:
        raise BacktestError(f"unknown metric {metric!r}; choose one of {', '.join(RANKING_METRICS)}")
    if start > end:
        raise BacktestError(f"start ({start}) is after end ({end})")
    step = on_step or (lambda _text: None)
    started = time.perf_counter()
    tracking.configure()
    client = MlflowClient()
    sources = model_sources(client, pairs, run_id=run_id, stage=stage)
    step("loading candles, weather and model probabilities")
    period = load_period(engine, pairs, start, end, OutOfSampleResolver(sources, RegistryCache(client)),
                         max_obs_age_minutes=config.max_obs_age_minutes, lock_margin_f=config.lock_margin_f,
                         max_forecast_age_hours=config.max_forecast_age_hours, fees=config.fees)
    demo_data = has_demo_settlements(engine, [city for city, _ in pairs], start, end)
    loaded = time.perf_counter()

    def trade(weight: float) -> BacktestResult:
        step(f"trading w={weight:.2f}")
        return simulate(period, config.model_copy(update={"blend_weight": weight}))

    baselines = {name: trade(weight) for name, weight in BASELINES.items()}
    results = [trade(weight) for weight in grid] if grid else []
    strategy = (max(results, key=lambda r: r.summary[ranking_key(metric)]) if results
                else trade(config.blend_weight))
    simulated = time.perf_counter()
    series = [get_city(city).series for city, _ in pairs]
    run = BacktestRun("", "", strategy, baselines, results, metric, [s.description for s in sources], demo_data,
                      period.fees.describe(series))
    step("logging to MLflow")
    run.run_id, run.experiment_id = _log(run, config, pairs, start, end, period, client)
    run.timings = {"load_seconds": loaded - started, "simulate_seconds": simulated - loaded,
                   "log_seconds": time.perf_counter() - simulated, "wall_seconds": time.perf_counter() - started,
                   "decision_rows": float(len(period.rows))}
    return run


def _write_result(result: BacktestResult, out: Path) -> None:
    fills = result.fills.assign(fill_time=pd.to_datetime(result.fills["fill_ts"], unit="s", utc=True))
    fills.to_csv(out / "trades.csv", index=False)
    result.daily.to_csv(out / "daily_pnl.csv")
    result.by_city_bracket.to_csv(out / "by_city_bracket.csv", index=False)


def _log(run: BacktestRun, config: RtConfig, pairs: list[tuple[str, str]], start: date, end: date, period: Period,
         client: MlflowClient) -> tuple[str, str]:
    # Under `mlflow run`, MLflow already created the run (MLFLOW_RUN_ID): log into its experiment.
    launched = os.environ.get("MLFLOW_RUN_ID")
    experiment_id = (client.get_run(launched).info.experiment_id if launched
                     else tracking.ensure_experiment(EXPERIMENT))
    label = ", ".join(f"{c}/{b}" for c, b in pairs)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"backtest {label} {start}..{end}") as parent, \
            tempfile.TemporaryDirectory() as tmp:
        coverage = run.strategy.coverage  # the same at every weight
        mlflow.set_tags({"kwx.kind": "backtest", "kwx.pairs": label, "kwx.model_sources": "; ".join(run.sources),
                         "kwx.demo_data": str(run.demo_data).lower(), "kwx.fees": run.fees,
                         "kwx.days_skipped": json.dumps(coverage.skipped_by_reason)})
        mlflow.log_params({"start": start.isoformat(), "end": end.isoformat(), "pairs": label, "blend": config.blend,
                           "blend_weight": run.strategy.blend_weight, "grid_metric": run.metric,
                           "grid_ranked_by": run.ranked_by,
                           "blend_weights": ",".join(f"{r.blend_weight:g}" for r in run.grid) or "none",
                           "tick_seconds": TICK_SECONDS, "decision_rows": len(period.rows),
                           **tracking.flat_params(config.model_dump(mode="json", include={"risk", "fees",
                                                                                         "execution"}))})
        mlflow.log_metrics(run.strategy.summary)
        for name, result in run.baselines.items():
            mlflow.log_metrics({f"{name}_{k}": v for k, v in result.summary.items()})
        out = Path(tmp)
        _write_result(run.strategy, out)
        bankroll = config.execution.bankroll_dollars
        labelled = {f"blend w={run.strategy.blend_weight:.2f}": run.strategy,
                    **{f"{name.replace('_', ' ')} (w={BASELINES[name]:g})": r for name, r in run.baselines.items()}}
        # each strategy's equity, and beside it the model's share of it: its open rows' PnL alone
        curves = {f"{text}{part}": r.daily[column].cumsum() + bankroll for text, r in labelled.items()
                  for column, part in (("pnl", ""), ("open_pnl", f", {SOURCE_LABELS['open']} only"))}
        equity_curves(curves, out / "equity_curve.png", f"{label} {start}..{end}")
        strategies = {"strategy": run.strategy, **run.baselines}
        daily = pd.DataFrame({f"{name}_{column}": r.daily[column] for name, r in strategies.items()
                              for column in ("pnl", *(f"{source}_pnl" for source in SOURCES))})
        daily.to_csv(out / "daily_pnl_vs_baselines.csv")
        skipped: dict[str, list[str]] = {}
        for day, reason in coverage.skipped.items():
            skipped.setdefault(reason, []).append(day.isoformat())
        summary = {"strategy": run.strategy.summary, **{n: r.summary for n, r in run.baselines.items()},
                   "blend_weight": run.strategy.blend_weight, "model_sources": run.sources, "fees": run.fees,
                   "days_total": coverage.days_total, "days_traded": len(coverage.traded), "days_skipped": skipped}
        if run.grid:
            table = pd.DataFrame([{"blend_weight": r.blend_weight, **r.summary} for r in run.grid])
            table.to_csv(out / "blend_grid.csv", index=False)
            metric_by_weight(table, run.ranked_by, out / "blend_grid.png", f"{label}: {run.ranked_by} by blend weight")
            summary["grid"] = table.to_dict(orient="records")
            mlflow.log_metric("best_blend_weight", run.strategy.blend_weight)
            for result in run.grid:
                _log_child(result, experiment_id, parent.info.run_id)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        mlflow.log_artifacts(tmp)
    return parent.info.run_id, experiment_id


def _log_child(result: BacktestResult, experiment_id: str, parent_run_id: str) -> None:
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"w={result.blend_weight:.2f}", nested=True), \
            tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({"kwx.kind": "backtest_weight", "kwx.parent_run_id": parent_run_id})
        mlflow.log_param("blend_weight", result.blend_weight)
        mlflow.log_metrics(result.summary)
        _write_result(result, Path(tmp))
        mlflow.log_artifacts(tmp)
