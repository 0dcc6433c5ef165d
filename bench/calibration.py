"""Benchmark: probability quality of the demo's models against the market, per city, bracket and feature set.

    .venv/bin/python bench/calibration.py --trials 10 [--market-skill 0.5] [--brackets between greater less]
        [--cities chicago austin] [--feature-sets elasticnet_relative elasticnet_forecast]
        [--set calibration.prior_rows=5] [--out evidence.json]

Builds the demo data of every requested city once, in a temporary SQLite file, trains each (city, bracket)
config (configs/elasticnet_{abbr}_{bracket}.yaml, 8 walk-forward windows) into a temporary MLflow store, once
per feature set (``--feature-sets``; default: the config's own), and pools every window's logged test
predictions.

First table, per (city, bracket, feature set), over all test rows and over the rows the settlement rule leaves
open (unlocked): log loss, Brier, ECE, the share of rows whose probability is exactly 0 or 1, and the Brier
skill against the market's mid price (1 − Brier_model / Brier_market on the open rows the market quotes).
``ece_day_sd`` is the ECE's standard deviation over resamples of whole days: its noise on a bracket with few
settled days.

Second table, tidy, on the unlocked rows only, by phase of the candle (its end time in local standard time
against the event's climate day): "all", "day before" (before the climate day starts), "morning" (hour < 12),
"before noon" (day before + morning), "afternoon" (12-17), "evening" (>= 17). Scorers: each feature set's
model, ``p_forecast (prior alone)`` (the physical prior logged beside a forecast set's model, on the rows where
it exists) and ``market`` (the mid). ``brier`` is over the scorer's unlocked rows, ``market_brier`` and
``brier_skill`` over those the market quotes. ``--out`` writes it as JSON records.

Everything is computed from the ``test_predictions.csv`` artifacts, so the same script measures
older kwx versions too (without a ``locked`` column every row counts as open).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _workspace import scratch_workspace

REPO = Path(__file__).resolve().parents[1]
PHASES = ("all", "day before", "morning", "before noon", "afternoon", "evening")
BEFORE_NOON = ("day before", "morning")
PRIOR_SCORER = "p_forecast (prior alone)"
MARKET_SCORER = "market"
TIDY_COLUMNS = ["city", "bracket", "scorer", "phase", "rows", "brier", "market_brier", "brier_skill", "ece"]


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


def phases(predictions: pd.DataFrame, city: str) -> np.ndarray:
    """Each row's phase: its candle's end, less a second (the candle's last instant), in local standard time
    against the start of its event's climate day (``climate_day_bounds``)."""
    from datetime import date

    from kwx.cities import get_city
    from kwx.domain.markets import climate_day_bounds

    where = get_city(city)
    days = predictions["event_date"].astype(str).str[:10]
    starts = {d: climate_day_bounds(date.fromisoformat(d), where)[0].timestamp() for d in days.unique()}
    hours = (predictions["end_period_ts"].to_numpy(dtype=float) - 1 - days.map(starts).to_numpy(dtype=float)) / 3600
    return np.select([hours < 0, hours < 12, hours < 17], ["day before", "morning", "afternoon"], "evening")


def phase_scores(y: np.ndarray, p: np.ndarray, market: np.ndarray) -> dict[str, float]:
    """One scorer on one phase's unlocked rows: Brier and ECE on all of them, skill on the quoted ones."""
    from kwx.domain.metrics import brier, brier_skill, reliability

    if len(y) == 0:
        return {"rows": 0, "brier": np.nan, "market_brier": np.nan, "brier_skill": np.nan, "ece": np.nan}
    quoted = ~np.isnan(market)
    return {"rows": len(y), "brier": brier(y, p),
            "market_brier": brier(y[quoted], market[quoted]) if quoted.any() else np.nan,
            "brier_skill": brier_skill(y[quoted], p[quoted], market[quoted]), "ece": reliability(y, p).ece}


def tidy_scores(city: str, bracket: str, by_set: dict[str, pd.DataFrame]) -> list[dict[str, object]]:
    """The tidy rows of one (city, bracket): every feature set's model, the prior alone, and the market."""
    rows = []
    scorers: list[tuple[str, pd.DataFrame, str]] = [(name, frame, "p_model") for name, frame in by_set.items()]
    with_prior = [frame for frame in by_set.values() if "p_forecast" in frame]
    if with_prior:
        scorers.append((PRIOR_SCORER, with_prior[0], "p_forecast"))
    if by_set:
        scorers.append((MARKET_SCORER, next(iter(by_set.values())), "p_market"))
    for scorer, frame, column in scorers:
        locked = frame["locked"].to_numpy(dtype=bool) if "locked" in frame else np.zeros(len(frame), bool)
        p = frame[column].to_numpy(dtype=float)
        keep = ~locked & ~np.isnan(p)  # the prior is NaN where no forecast was fresh; the market where unquoted
        y, market, phase = (frame["label"].to_numpy(dtype=float)[keep], frame["p_market"].to_numpy(dtype=float)[keep],
                            phases(frame, city)[keep])
        p = p[keep]
        for name in PHASES:
            rows_in = (np.ones(len(y), bool) if name == "all" else np.isin(phase, BEFORE_NOON)
                       if name == "before noon" else phase == name)
            rows.append({"city": city, "bracket": bracket, "scorer": scorer, "phase": name}
                        | phase_scores(y[rows_in], p[rows_in], market[rows_in]))
    return rows


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


def city_abbreviations() -> dict[str, str]:
    """City key → the abbreviation of its configs (configs/elasticnet_{abbr}_{bracket}.yaml), read from them."""
    found = {}
    for path in sorted((REPO / "configs").glob("elasticnet_*_*.yaml")):
        city = (yaml.safe_load(path.read_text()) or {}).get("city")
        if city:
            found.setdefault(city, path.stem.split("_")[1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--market-skill", type=float, default=None,
                        help="demo market skill (default: the generator's default)")
    parser.add_argument("--brackets", nargs="+", default=["between", "greater", "less"])
    parser.add_argument("--cities", nargs="+", default=["chicago"], help="city keys (default: chicago)")
    parser.add_argument("--feature-sets", nargs="+", default=None, metavar="SET",
                        help="train each (city, bracket) once per feature set (default: the config's own)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every bracket, e.g. calibration.prior_rows=5 (YAML value)")
    parser.add_argument("--out", type=Path, default=None, help="write the tidy phase table here as JSON records")
    args = parser.parse_args()
    wall_started = time.perf_counter()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"command: {command}\narguments: {vars(args)}", flush=True)

    import mlflow

    from kwx.config import load_config
    from kwx.data.demo import load_demo
    from kwx.training import runner

    abbreviations = city_abbreviations()
    unknown = [c for c in args.cities if c not in abbreviations]
    if unknown:
        parser.error(f"no configs for {', '.join(unknown)}; cities with configs: {', '.join(sorted(abbreviations))}")
    skill = {} if args.market_skill is None else {"market_skill": args.market_skill}
    if skill and "market_skill" not in inspect.signature(load_demo).parameters:
        parser.error("this kwx version's demo generator has no market skill")
    base_overrides = {"trials": args.trials} | {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.set)}
    # The feature set of an explicit `--set feature_set=...` wins over the config's; --feature-sets over both.
    paths = {(city, bracket): REPO / "configs" / f"elasticnet_{abbreviations[city]}_{bracket}.yaml"
             for city in args.cities for bracket in args.brackets}
    configs = {key: load_config(path, overrides=base_overrides) for key, path in paths.items()}
    quality, tidy = {}, []
    with scratch_workspace() as (tmp, engine):
        start, end = min(c.start for c in configs.values()), max(c.end for c in configs.values())
        started = time.perf_counter()
        load_demo(engine, list(args.cities), start, end, seed=42, **skill)
        print(f"demo data {', '.join(args.cities)} {start}..{end} {skill or ''}: {time.perf_counter() - started:.1f} s",
              flush=True)
        for (city, bracket), path in paths.items():
            by_set = {}
            for feature_set in args.feature_sets or [configs[city, bracket].feature_set]:
                config = load_config(path, overrides=base_overrides | {"feature_set": feature_set})
                store = Path(tmp) / f"mlflow-{city}-{bracket}-{feature_set}.db"
                os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
                started = time.perf_counter()
                summary = runner.train(config, engine, workers=args.workers)
                by_set[feature_set] = run_predictions(summary.parent_run_id)
                mlflow.set_tracking_uri(None)
                seconds = time.perf_counter() - started
                quality[city, bracket, feature_set] = pooled_quality(by_set[feature_set]) | {"train_seconds": seconds}
                print(f"{city}/{bracket}/{feature_set}: {len(summary.versions)} windows trained in {seconds:.0f} s",
                      flush=True)
            tidy += tidy_scores(city, bracket, by_set)
    wall = time.perf_counter() - wall_started
    table = pd.DataFrame(tidy, columns=TIDY_COLUMNS)
    if args.out is not None:
        args.out.write_text(json.dumps(json.loads(table.to_json(orient="records")), indent=1) + "\n")
    overall = pd.DataFrame(quality).T.rename_axis(["city", "bracket", "feature_set"])
    print(f"\ncommand: {command}\narguments: {vars(args)}\nwall time: {wall:.0f} s ({wall / 60:.1f} min)")
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_rows", 1000,
                           "display.float_format", "{:.4f}".format):
        print(overall)
        print("\nunlocked rows by phase (brier_skill = 1 - brier / market_brier on the rows the market quotes):")
        print(table.to_string(index=False))
    if args.out is not None:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
