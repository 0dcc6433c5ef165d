"""What kwx writes to MLflow, in one place: experiments, runs (by their ``kwx.kind`` tag) with their run names, tags,
params, metrics and artifacts, and the registered models with their aliases and tags.

The documentation's MLflow reference (docs/reference/mlflow.md) is generated from this module, and
tests/test_docs.py checks every key a real training run, its promotion and a backtest log against it: a key logged
but not listed here fails that test. A key may be a pattern: ``{name}`` stands for any value of ``PLACEHOLDERS[name]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import get_args

from pydantic import BaseModel

from kwx.config import RtConfig, TrainConfig


@dataclass(frozen=True)
class Entry:
    key: str  # a name, or a pattern with {placeholders}
    description: str


@dataclass(frozen=True)
class RunLayout:
    kind: str  # the run's kwx.kind tag
    experiment: str
    run_name: str
    description: str
    tags: tuple[Entry, ...] = ()
    params: tuple[Entry, ...] = ()
    metrics: tuple[Entry, ...] = ()
    artifacts: tuple[Entry, ...] = ()


def _config_paths(model: type[BaseModel], prefix: str = "", only: tuple[str, ...] = ()) -> list[str]:
    """Dotted paths of a config's leaves as ``tracking.flat_params`` names them (a dict of models: any key)."""
    paths = []
    for name, info in model.model_fields.items():
        if only and name not in only:
            continue
        dotted = f"{prefix}{re.escape(name)}"
        inner = [a for a in (info.annotation, *get_args(info.annotation)) if isinstance(a, type)
                 and issubclass(a, BaseModel)]
        dict_values = [a for a in get_args(info.annotation)[1:] if isinstance(a, type) and issubclass(a, BaseModel)]
        if dict_values:
            paths += _config_paths(dict_values[0], rf"{dotted}\.[a-z_]+\.")
        elif inner:
            paths += [dotted, *_config_paths(inner[0], rf"{dotted}\.")]  # an optional section logs "None" unset
        else:
            paths.append(dotted)
    return paths


SCORES = "log_loss|brier|ece|mce|auc"
PLACEHOLDERS: dict[str, tuple[str, str]] = {
    # name: (regular expression, what it stands for)
    "city": ("[a-z_]+", "a city key (reference/config.md)"),
    "bracket": ("between|greater|less", "between, greater or less"),
    "window": (r"win_\d{8}_\d{8}", "a window name, win_<first train day>_<last test day>"),
    "score": (SCORES, "log_loss, brier, ece (expected calibration error), mce (maximum calibration error) or auc"),
    "train_config_field": ("|".join(_config_paths(TrainConfig)), "every field of the train config by its dotted "
                           "path (reference/config.md#train)"),
    "rt_trading_field": ("|".join(_config_paths(RtConfig, only=("risk", "fees", "execution"))),
                         "every field of the rt config's risk, fees and execution sections"),
    "timing": ("wall_seconds|mlflow_seconds|mlflow_fraction|summary_seconds|fits|paths|search_seconds|"
               "seconds_per_path",
               "wall_seconds, mlflow_seconds (logging: runs, params, metrics, files, models, versions), "
               "mlflow_fraction, summary_seconds (the pooled evaluation over the windows and its diagram), fits "
               "(the search's fits, one per C on a path), paths (its regularization paths: one per trial and fold), "
               "search_seconds, seconds_per_path"),
    "evidence": ("brier_skill|log_loss_skill|calibration_slope|calibration_intercept",
                 "brier_skill, log_loss_skill, calibration_slope or calibration_intercept"),
    "source": ("open|locked", "open (rows the model priced) or locked (rows the settlement rule decided)"),
    "baseline": ("market_only|model_only", "market_only (blend weight 0) or model_only (blend weight 1)"),
    "strategy_metric": ("", "any metric of a backtest_weight run"),  # filled in below, from BACKTEST_METRICS
    "window_metric": ("", "any metric of a window run"),  # filled in below, from WINDOW_METRICS
    "source_tag": ("name|type|git.commit", "name, type or git.commit (MLflow's source tags)"),
    "promotion_id": (r"\d{6}-[0-9a-f]{8}", "a promotion's id: its sequence number and a random token"),
    "day": (r"\d{4}-\d{2}-\d{2}", "a climate day, YYYY-MM-DD"),
    "loop_metric": ("signals|sized_signals|mean_edge_cents|traded_brier_model|traded_brier_market",
                    "signals, sized_signals, mean_edge_cents, traded_brier_model or traded_brier_market"),
    "system_tag": ("runName|user|note.content|parentRunId", "MLflow's runName, user, note.content, parentRunId"),
}

SYSTEM_TAGS = (
    Entry("mlflow.{system_tag}", "MLflow's own tags: the run name, the user, the run's description (a note saying "
                                 "what the run is) and, for a nested run, its parent"),
    Entry("mlflow.source.{source_tag}", "where the run was started from (the script, or the MLproject and its commit "
                                        "under `mlflow run`)"),
)
PROCESS_TAGS = (
    Entry("kwx.host", "host name of the process that wrote the run"),
    Entry("kwx.pid", "its process id"),
    Entry("kwx.process_start", "its start time, so `kwx runs clean` can tell a dead run from a running one"),
    Entry("kwx.end_reason", "why `kwx runs clean` ended the run (its process was gone)"),
)

WINDOW_METRICS = (
    Entry("test_{score}", "the calibrated model on every test row (locked rows included)"),
    Entry("test_unlocked_{score}", "the model on the test rows the settlement rule had not decided yet"),
    Entry("market_{score}", "the market's mid price as a forecast, on the same rows"),
    Entry("market_unlocked_{score}", "the market on the unlocked test rows"),
    Entry("test_brier_skill", "1 − Brier(model) / Brier(market) on unlocked rows the market quotes"),
    Entry("test_beats_market", "1 when test_brier_skill > 0, else 0 (NaN without quoted rows)"),
    Entry("test_unlocked_days", "climate days with unlocked test rows"),
    Entry("test_locked_fraction", "share of test rows the settlement rule had decided"),
    Entry("test_at_bounds_fraction", "share of unlocked test rows whose probability is exactly 0 or 1"),
    Entry("cv_log_loss", "the hyperparameter search's objective: cross-validated log loss of the best trial"),
    Entry("cv_calibrated_{score}", "out-of-fold scores of the calibrated model on the training days"),
    Entry("cv_market_{score}", "the market on the same out-of-fold rows"),
    Entry("cv_brier_skill", "out-of-fold Brier skill vs the market on quoted rows (forward gates read it)"),
    Entry("nonzero_coefs", "coefficients the fitted ElasticNet kept"),
    Entry("search_fits", "fits the search ran: one per C of each trial's regularization path on each fold (each "
                         "path's first fit cold, the rest warm-started from the previous C)"),
    Entry("unconverged_fits", "of those, fits that stopped at the iteration limit"),
    Entry("final_fit_converged", "1 when the final fit converged"),
    Entry("loop_{loop_metric}", "written by `kwx monitor` for a forward window's settled week: what the live loop "
                                "signalled and traded with this version"),
)

TRAIN = RunLayout(
    kind="train", experiment="kwx-{city}-{bracket}", run_name="train {city}/{bracket}",
    description="One walk-forward training (`kwx train`, `kwx retrain`, `kwx demo`): the parent of one window run "
                "per window. `kwx monitor` adds a step to its summary metrics whenever a forward window's week is "
                "scored.",
    tags=(
        Entry("kwx.kind", "train"),
        Entry("kwx.city", "the config's city"),
        Entry("kwx.bracket", "the config's bracket"),
        Entry("kwx.config_hash", "fingerprint of the effective config (defaults filled)"),
        Entry("kwx.data_fingerprint", "fingerprint of the training rows"),
        Entry("kwx.git_commit", "kwx's git commit, when run from a checkout"),
        Entry("kwx.model_name", "the registered model its windows become versions of"),
        Entry("kwx.forward_as_of", "a forward retrain: the first day its window trades"),
        Entry("kwx.launched_by_run_id", "the run `mlflow run` created to launch it"),
        *PROCESS_TAGS, *SYSTEM_TAGS,
    ),
    params=(
        Entry("{train_config_field}", "the effective train config, one param per field"),
        Entry("n_windows_planned", "walk-forward windows start..end holds"),
        Entry("n_windows_usable", "of those, windows with enough rows to train"),
        Entry("workers", "parallel window workers"),
        Entry("n_rows", "sampled, labelled rows of start..end"),
        Entry("features", "the model's feature columns, comma-separated"),
    ),
    metrics=(
        Entry("mean_{window_metric}", "mean of a window metric over the windows that have it"),
        Entry("std_{window_metric}", "its population standard deviation"),
        Entry("n_windows", "windows trained"),
        Entry("n_test_rows", "test rows over all windows"),
        Entry("n_windows_ece_gated", "windows with enough unlocked test days for their own ECE to be gated "
                                     "(acceptance.min_window_ece_days)"),
        Entry("max_gated_window_unlocked_ece", "the worst unlocked ECE among them (NaN when none)"),
        Entry("pooled_test_{score}", "the model on all windows' test rows pooled"),
        Entry("pooled_test_unlocked_{score}", "the model on the pooled unlocked test rows"),
        Entry("pooled_market_{score}", "the market on the pooled test rows"),
        Entry("pooled_market_unlocked_{score}", "the market on the pooled unlocked test rows"),
        Entry("pooled_{evidence}", "pooled skill or calibration, the acceptance gates' evidence"),
        Entry("pooled_{evidence}_low", "lower end of its day-block bootstrap interval (acceptance.confidence_level)"),
        Entry("pooled_{evidence}_high", "upper end of that interval"),
        Entry("pooled_n_rows", "pooled test rows"),
        Entry("pooled_n_unlocked_rows", "of those, unlocked rows"),
        Entry("pooled_n_unlocked_days", "climate days of the unlocked rows"),
        Entry("pooled_n_comparable_rows", "unlocked rows the market quotes (the skill metrics' rows)"),
        Entry("pooled_n_comparable_days", "their climate days (the bootstrap's blocks)"),
        Entry("timing_{timing}", "where the run's time went"),
    ),
    artifacts=(
        Entry("config.yaml", "the effective config (overrides applied, defaults filled): what promotion re-reads"),
        Entry("config_source.yaml", "the config file as given"),
        Entry("window_plan.json", "every planned window: its days, row counts and why it was skipped"),
        Entry("windows.json", "skipped windows and the registered version of each trained one"),
        Entry("reliability_pooled.json", "reliability curves of model and market on the pooled test rows"),
        Entry("reliability_pooled.png", "their diagram"),
        Entry("acceptance_report/", "`kwx report` / `kwx promote`: the acceptance report (Markdown, JSON, plots)"),
        Entry("feature_audit/", "`kwx audit features`: permutation importance and coefficients per window"),
    ),
)

WINDOW = RunLayout(
    kind="window", experiment="kwx-{city}-{bracket}", run_name="{window}",
    description="One walk-forward window, nested under its training run; its model is a version of the registered "
                "model. Train and test rows are logged as MLflow dataset inputs (schema and digest, not the rows).",
    tags=(
        Entry("kwx.kind", "window"),
        Entry("kwx.window", "the window's name"),
        Entry("kwx.parent_run_id", "its training run"),
        Entry("kwx.model_version", "the registered model version of its model"),
        *PROCESS_TAGS, *SYSTEM_TAGS,
    ),
    params=(
        Entry("C", "inverse regularization strength the search chose"),
        Entry("l1_ratio", "ElasticNet mixing the search chose (elasticnet penalty)"),
        Entry("penalty", "l1, l2 or elasticnet"),
        Entry("class_weight", "none or balanced"),
        Entry("calibration_method", "isotonic or sigmoid, as calibration.method chose"),
        Entry("calibration_bounds", "probability bounds of the calibrated model (calibration.probability_floor)"),
        Entry("feature_set", "the config's feature set"),
        Entry("lock_margin_f", "°F the running maximum may exceed the climate report's before an outcome locks"),
        Entry("n_features", "feature columns"),
        Entry("n_train", "training rows"),
        Entry("n_test", "test rows"),
        Entry("n_test_locked", "test rows the settlement rule had decided"),
        Entry("window", "the window's name"),
        Entry("train_start", "first training day"),
        Entry("train_end", "last training day"),
        Entry("test_start", "first test (traded) day"),
        Entry("test_end", "last test day"),
    ),
    metrics=WINDOW_METRICS,
    artifacts=(
        Entry("optuna_trials.csv", "every Optuna trial of the window's search"),
        Entry("test_predictions.csv", "per test row: model, market and outcome"),
        Entry("reliability.json", "reliability curves of model and market on the test week"),
        Entry("reliability.png", "their diagram"),
    ),
)

BACKTEST_METRICS = (
    Entry("total_pnl", "profit and loss in dollars, fees included"),
    Entry("daily_sharpe", "mean over standard deviation of daily P&L"),
    Entry("annualized_sharpe", "daily_sharpe × √365"),
    Entry("roi_on_capital", "total_pnl over capital_at_risk"),
    Entry("hit_rate", "share of settled positions that made money"),
    Entry("max_drawdown", "largest fall of cumulative P&L from its peak, dollars"),
    Entry("max_drawdown_pct", "the same as a share of bankroll plus peak P&L"),
    Entry("capital_at_risk", "dollars spent on positions"),
    Entry("contracts", "contracts bought"),
    Entry("fees_paid", "exchange fees, dollars"),
    Entry("n_fills", "fills"),
    Entry("n_maker_fills", "fills of resting (maker) orders"),
    Entry("n_taker_fills", "fills that crossed the spread (taker fallback)"),
    Entry("n_orders_posted", "orders posted"),
    Entry("fill_rate", "fills per order posted"),
    Entry("n_positions", "positions held to settlement"),
    Entry("unsettled_fills", "fills of markets not settled by the end"),
    Entry("active_days", "days with at least one fill"),
    Entry("days_total", "days in start..end"),
    Entry("days_traded", "days with a model to trade"),
    Entry("days_skipped", "days skipped (the kwx.days_skipped tag says why)"),
    Entry("{source}_pnl", "P&L of the open or locked rows alone"),
    Entry("{source}_daily_sharpe", "their daily Sharpe ratio"),
    Entry("{source}_hit_rate", "their hit rate"),
    Entry("{source}_max_drawdown", "their largest drawdown"),
    Entry("{source}_capital_at_risk", "their capital at risk"),
    Entry("{source}_contracts", "their contracts"),
    Entry("{source}_fees_paid", "their fees"),
    Entry("{source}_n_fills", "their fills"),
    Entry("{source}_n_positions", "their positions"),
    Entry("{source}_roi_on_capital", "their return on capital"),
)

BACKTEST = RunLayout(
    kind="backtest", experiment="kwx-backtests", run_name="backtest {pairs} {start}..{end}",
    description="`kwx backtest`: the live signal path replayed over stored days with out-of-sample models, the "
                "strategy against two baselines; with --blend-grid one nested backtest_weight run per weight.",
    tags=(
        Entry("kwx.kind", "backtest"),
        Entry("kwx.pairs", "the city/bracket pairs traded"),
        Entry("kwx.model_sources", "where each pair's models came from (run or stage)"),
        Entry("kwx.demo_data", "true when the days are demo data"),
        Entry("kwx.fees", "where fees came from (the exchange's series fees or the config's override)"),
        Entry("kwx.days_skipped", "JSON: days skipped per reason"),
        *SYSTEM_TAGS,
    ),
    params=(
        Entry("start", "first event day"),
        Entry("end", "last event day"),
        Entry("pairs", "the city/bracket pairs"),
        Entry("blend", "linear or logarithmic"),
        Entry("blend_weight", "the model's weight in the blend that traded"),
        Entry("blend_weights", "the grid's weights (none without --blend-grid)"),
        Entry("grid_metric", "--metric"),
        Entry("grid_ranked_by", "the metric the grid ranked weights by, on open rows"),
        Entry("tick_seconds", "decision interval of the replay"),
        Entry("decision_rows", "decision rows replayed"),
        Entry("{rt_trading_field}", "the rt config's risk, fees and execution settings"),
    ),
    metrics=(
        *BACKTEST_METRICS,
        Entry("{baseline}_{strategy_metric}", "the same metrics for a baseline"),
        Entry("best_blend_weight", "with --blend-grid: the weight that won"),
    ),
    artifacts=(
        Entry("trades.csv", "every fill"),
        Entry("daily_pnl.csv", "P&L per day"),
        Entry("by_city_bracket.csv", "results per city and bracket"),
        Entry("daily_pnl_vs_baselines.csv", "daily P&L of the strategy and the baselines"),
        Entry("equity_curve.png", "equity curves"),
        Entry("summary.json", "all summaries, sources, fees and skipped days"),
        Entry("blend_grid.csv", "with --blend-grid: metrics per weight"),
        Entry("blend_grid.png", "the ranking metric by weight"),
    ),
)

BACKTEST_WEIGHT = RunLayout(
    kind="backtest_weight", experiment="kwx-backtests", run_name="w={blend_weight}",
    description="One weight of `kwx backtest --blend-grid`, nested under the backtest run.",
    tags=(Entry("kwx.kind", "backtest_weight"), Entry("kwx.parent_run_id", "the backtest run"), *SYSTEM_TAGS),
    params=(Entry("blend_weight", "the model's weight in the blend"),),
    metrics=BACKTEST_METRICS,
    artifacts=(Entry("trades.csv", "every fill"), Entry("daily_pnl.csv", "P&L per day"),
               Entry("by_city_bracket.csv", "results per city and bracket")),
)

MONITOR = RunLayout(
    kind="monitor", experiment="kwx-monitoring", run_name="monitor kwx-{city}-{bracket}",
    description="`kwx monitor`: one run per registered model, one step per monitored day (days since 1970-01-01): "
                "the Production family's rolling realized quality and drift thresholds.",
    tags=(Entry("kwx.kind", "monitor"), Entry("kwx.model_name", "the registered model"),
          Entry("kwx.city", "its city"), Entry("kwx.bracket", "its bracket"), *PROCESS_TAGS, *SYSTEM_TAGS),
    metrics=(
        Entry("rolling_ece", "the model's ECE on unlocked rows of the monitoring span"),
        Entry("rolling_brier", "its Brier score there"),
        Entry("rolling_market_brier", "the market's Brier score there"),
        Entry("rolling_market_ece", "the market's ECE there"),
        Entry("rolling_brier_skill", "1 − Brier(model) / Brier(market) on quoted unlocked rows"),
        Entry("rolling_rows", "rows of the span"),
        Entry("rolling_unlocked_rows", "of those, unlocked"),
        Entry("rolling_comparable_rows", "unlocked rows the market quotes"),
        Entry("rolling_days", "settled days of the span"),
        Entry("drift_breaches", "thresholds breached (an alarm when above 0)"),
        Entry("drift_max_ece", "lifecycle.drift.max_ece in force"),
        Entry("drift_max_brier", "lifecycle.drift.max_brier in force"),
        Entry("drift_min_brier_skill", "lifecycle.drift.min_brier_skill in force"),
    ),
    artifacts=(Entry("drift/{day}.json", "the day's numbers, thresholds, versions that traded and breaches"),),
)

SIMULATION = RunLayout(
    kind="simulation", experiment="kwx-simulations", run_name="simulate {city}/{bracket} {start}..{end}",
    description="`kwx simulate`: a season replayed day by day (retrain, promote, trade, monitor); per-day metrics "
                "stepped by date. Its retrains are ordinary training runs in the workspace's store.",
    tags=(Entry("kwx.kind", "simulation"), Entry("kwx.city", "the city"), Entry("kwx.bracket", "the bracket"),
          *SYSTEM_TAGS),
    params=tuple(Entry(k, d) for k, d in (
        ("start", "first simulated day"), ("end", "last simulated day"), ("tick_seconds", "the replay's tick"),
        ("trials", "Optuna trials per retrain"), ("retrain_weekday", "lifecycle.retrain_weekday"),
        ("auto_withdraw", "lifecycle.auto_withdraw"), ("monitor_days", "lifecycle.monitor_days"))),
    metrics=tuple(Entry(k, d) for k, d in (
        ("signals", "signals of the day"), ("sized_signals", "signals with a position size"),
        ("drift_alarms", "drift alarms of the day (at the end: of the season)"),
        ("stale_days", "days since the trading model's test week ended (-1 without a model)"),
        ("has_model", "1 when a model traded the day"), ("days", "simulated days"),
        ("days_without_model", "days no model traded"))),
    artifacts=(Entry("config_source.yaml", "the train config as given"), Entry("weeks.csv", "per week results"),
               Entry("days.json", "per day records")),
)

RUNS = (TRAIN, WINDOW, BACKTEST, BACKTEST_WEIGHT, MONITOR, SIMULATION)

EXPERIMENTS = (
    Entry("kwx-{city}-{bracket}", "training runs and their window runs (`kwx train --experiment` names another)"),
    Entry("kwx-backtests", "backtests (under `mlflow run`: the launching run's experiment)"),
    Entry("kwx-monitoring", "one monitoring run per registered model"),
    Entry("kwx-simulations", "season simulations (inside the simulation's own workspace store)"),
)

REGISTERED_MODEL = Entry("kwx-{city}-{bracket}", "one registered model per city and bracket; each trained window "
                                                 "is a version, trading is by stage (Staging, Production)")
ALIASES = (
    Entry("production", "the newest version in Production"),
    Entry("staging", "the newest version in Staging"),
)
MODEL_TAGS = (
    Entry("kwx.promotion.{promotion_id}", "JSON record of one finished promotion: stage, run, versions promoted "
                                          "and archived, time; the newest promotion wins an overlap"),
)
VERSION_TAGS = (
    Entry("city", "the city"), Entry("bracket", "the bracket"), Entry("window", "the window's name"),
    Entry("train_start", "first training day"), Entry("train_end", "last training day"),
    Entry("test_start", "first traded day"), Entry("test_end", "last traded day"),
    Entry("feature_set", "the feature set"), Entry("config_hash", "the config's fingerprint"),
    Entry("parent_run_id", "the training run"),
    Entry("origin", "walk_forward (tested when trained) or forward (its week still ahead)"),
    Entry("evaluation", "done, or pending until `kwx monitor` scores a forward window's week"),
    Entry("pending_promotion", "the promotion moving it into a stage, until that promotion's record exists"),
    Entry("promoted_at", "when it was promoted"), Entry("promoted_by", "who promoted it ($KWX_USER or the user)"),
    Entry("promoted_stage", "Staging or Production"), Entry("promotion_reason", "--reason, or gates passed"),
    Entry("promotion_run_id", "the training run promoted"), Entry("promotion_id", "the promotion's id"),
    Entry("archived_by_run", "the training run whose promotion archived it"),
    Entry("archived_at", "when it was archived"),
    Entry("lifecycle_verdict", "`kwx retrain --promote`: promoted at or refused at a time"),
    Entry("promotion_refused", "the lifecycle gates it failed (empty when promoted)"),
    Entry("evaluated_at", "when `kwx monitor` scored its week"),
    Entry("realized_verdict", "pass or fail of the acceptance gates on its realized week"),
    Entry("realized_failing", "the gates it failed there"),
    Entry("withdrawn_at", "when a drift alarm archived it (lifecycle.auto_withdraw)"),
    Entry("withdrawn_reason", "the breaches that did"), Entry("withdrawn_as_of", "the climate day of the alarm"),
)


@cache
def _pattern(key: str) -> re.Pattern:
    def placeholder(match: re.Match) -> str:
        name = match.group(1)
        if name == "window_metric":
            return "(?:" + "|".join(_pattern(e.key).pattern for e in WINDOW_METRICS) + ")"
        if name == "strategy_metric":
            return "(?:" + "|".join(_pattern(e.key).pattern for e in BACKTEST_METRICS) + ")"
        return f"(?:{PLACEHOLDERS[name][0]})"

    parts = re.split(r"(\{[a-z_]+\})", key)
    return re.compile("".join(placeholder(re.match(r"\{([a-z_]+)\}", p)) if p.startswith("{") else re.escape(p)
                              for p in parts if p))


def matches(entry_key: str, key: str) -> bool:
    """Whether a logged ``key`` is the entry's name or fits its pattern; a directory entry (``x/``) holds any file
    below it."""
    if entry_key.endswith("/"):
        return key.startswith(entry_key)
    return _pattern(entry_key).fullmatch(key) is not None


def unlisted(keys: list[str] | set[str], entries: tuple[Entry, ...]) -> list[str]:
    """The keys no entry describes."""
    return sorted(k for k in keys if not any(matches(e.key, k) for e in entries))
