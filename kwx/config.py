"""Validated configuration: pydantic v2 models (unknown keys rejected) and the one YAML loader.

A bad value must name its dotted field path and the rule it broke, so a typo in a config
never silently trains or trades with a default.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Hashable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kwx.cities import EXCLUDED_VC_CITIES, get_city
from kwx.domain.features import DEFAULT_FEATURE_SET, FEATURE_SETS
from kwx.domain.forecast import DEFAULT_MAX_FORECAST_AGE_HOURS
from kwx.domain.markets import DEFAULT_LOCK_MARGIN_F, Bracket

# Measured on the demo's chicago windows (docs/guides/training.md): 2 pseudo-rows bound the isotonic ends without
# moving the pooled log loss or ECE of the bins in between.
DEFAULT_PRIOR_ROWS = 2.0
# Measured on the demo's chicago test weeks (docs/guides/training.md): it costs between and greater under 10⁻⁴ nats of
# unlocked log loss (none of their rows below it settled YES) and saves less 0.0023 (13 of its 152 rows below it
# did); 10⁻² would cost between and greater 0.002-0.004. A miss at the floor costs ln(1000) ≈ 6.9 nats.
DEFAULT_PROBABILITY_FLOOR = 1e-3

Penalty = Literal["l1", "l2", "elasticnet"]
ClassWeight = Literal["none", "balanced"]


def _validate_city(v: str) -> str:
    get_city(v)
    return v


CityKey = Annotated[str, AfterValidator(_validate_city)]


def _validate_feature_set(v: str) -> str:
    if v not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {v!r}; known: {', '.join(FEATURE_SETS)}")
    return v


FeatureSetName = Annotated[str, AfterValidator(_validate_feature_set)]


def check_http_url(v: str) -> str:
    """``v`` if it is an http(s) URL with a host name, else ValueError: kwx builds requests and the dashboard's
    links on these, and a ``javascript:`` link would run in the operator's browser."""
    problem = "must be an http(s) URL with a host, such as https://host/path"
    try:
        parts = urlsplit(v)
        host = parts.hostname
    except ValueError:  # an unclosed IPv6 bracket
        raise ValueError(problem) from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(problem)
    return v


HttpUrlText = Annotated[str, AfterValidator(check_http_url)]

# Upper bounds keep every accepted value workable: dates stay in range when windows step, and a typo
# like 1e12 trials is refused instead of running for ever.
MAX_DAYS = 3650
MAX_TRIALS = 10_000
MAX_SEED = 2**32 - 1  # numpy seeds are below 2**32
# Money and counts that size orders: far above any real account, yet small enough that a typo (1e300, 1e21) is
# refused rather than sized into an order. Dollars stay exact in float cents (10^11 cents < 2^53); contracts fit
# the orders and fills tables' 32-bit count columns, their cost in cents too (10^6 x 100 < 2^31).
MAX_DOLLARS = 1e9
MAX_CONTRACTS = 1_000_000
MAX_OPEN_ORDERS = 10_000  # a loop trades a few cities' ladders: tens of markets, never thousands of resting orders
MAX_ROWS = 10**9  # row counts: more than any kwx database holds


class StrictModel(BaseModel):
    # allow_inf_nan=False: .inf or .nan in YAML is never a usable bound, cost or duration.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


def _unique(values: list, what: str) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must not repeat values")
    return values


class SearchSpace(StrictModel):
    """Each trial sweeps C along a log-spaced regularization path (glum, each fit starting from the last, strong to
    weak) and keeps its best C; Optuna draws the penalty, l1_ratio (only under elasticnet) and class weight."""

    C_min: float = Field(1e-3, gt=0, description="smallest inverse regularization strength C the search tries")
    C_max: float = Field(10.0, gt=0, description="largest C the search tries")
    C_path_points: StrictInt = Field(
        16, ge=2, le=200,
        description="Cs on each trial's regularization path, log-spaced from C_min to C_max: every trial scores each "
                    "and keeps the best")
    l1_ratio_min: float = Field(0.05, ge=0, le=1,
                                description="smallest ElasticNet l1_ratio drawn (0: pure l2, 1: pure l1)")
    l1_ratio_max: float = Field(0.95, ge=0, le=1, description="largest ElasticNet l1_ratio drawn")
    class_weight: list[ClassWeight] = Field(
        default_factory=lambda: ["none", "balanced"], min_length=1,
        description="class weightings the search chooses from: none, or balanced (inverse class frequency)")

    @field_validator("class_weight")
    @classmethod
    def _distinct_weights(cls, v: list[str]) -> list[str]:
        return _unique(v, "class_weight")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.C_min > self.C_max:
            raise ValueError(f"C_min ({self.C_min}) must be <= C_max ({self.C_max})")
        if self.l1_ratio_min > self.l1_ratio_max:
            raise ValueError(f"l1_ratio_min ({self.l1_ratio_min}) must be <= l1_ratio_max ({self.l1_ratio_max})")
        return self


class Calibration(StrictModel):
    """Isotonic needs many independent outcomes to not overfit; short of them Platt (sigmoid) scaling is used.

    A market's rows all share its one outcome, so rows overstate what a calibration fold knows: a tail
    bracket's fold of ~2,000 rows may hold three winning days, and an isotonic map fit to them learns
    those days' steps (measured on the demo's tails: see the Training guide, docs/guides/training.md).
    """

    method: Literal["auto", "isotonic", "sigmoid"] = Field(
        "auto", description="probability calibration: isotonic, sigmoid (Platt), or auto (isotonic only when the "
        "folds hold isotonic_min_rows rows and isotonic_min_events days)")
    isotonic_min_rows: StrictInt = Field(
        1000, ge=1, le=MAX_ROWS,
        description="auto picks isotonic only when every calibration fold holds this many rows")
    isotonic_min_events: StrictInt = Field(
        8, ge=1, le=100_000,
        description="auto picks isotonic only when every calibration fold also holds this many climate days with "
                    "a winning and with a losing market")
    prior_rows: float = Field(
        DEFAULT_PRIOR_ROWS, gt=0, le=10_000, allow_inf_nan=False,
        description="pseudo-rows at the base rate added to every calibration bin, so no probability is 0 or 1: "
                    "a bin of n rows, k positive, says (k + prior_rows·base rate) / (n + prior_rows)")
    probability_floor: float = Field(
        DEFAULT_PROBABILITY_FLOOR, ge=0, le=0.1, allow_inf_nan=False,
        description="open-row probabilities stay within [probability_floor, 1 − probability_floor]: the "
                    "pseudo-rows shrink a bin by its row count, but its rows come from a few independent days, so "
                    "a bin of 30,000 rows would otherwise still say 3·10⁻⁵ (see the Training guide)")

    def method_for(self, n_rows: int, n_events: int) -> Literal["isotonic", "sigmoid"]:
        """``n_rows`` and ``n_events`` (days of the rarer outcome) of the smallest calibration fold."""
        if self.method != "auto":
            return self.method
        enough = n_rows >= self.isotonic_min_rows and n_events >= self.isotonic_min_events
        return "isotonic" if enough else "sigmoid"


class RiskParams(StrictModel):
    """How much to bet and when. Strict numbers, as every money and count field: a quoted "1" is refused, not
    read as 1, since a string where money belongs is a template left unfilled or a typo, never a value."""

    kelly_alpha: StrictFloat = Field(0.25, gt=0, le=1, description="fraction of full Kelly to bet")
    max_spread_cents: StrictFloat = Field(3, ge=0, le=100, description="no order on a wider bid-ask spread")
    tau_open_cents: StrictFloat = Field(1.0, ge=0, le=100, description="minimum net edge to open")
    tau_close_cents: StrictFloat = Field(0.5, ge=0, le=100,
                                         description="edge below which a resting order is cancelled")
    slip_per_leg_cents: StrictFloat = Field(1, ge=0, le=100,
                                            description="slippage assumed per traded leg, taken off the edge")
    max_bankroll_pct_city_day_side: StrictFloat = Field(
        0.10, gt=0, le=1, description="share of the bankroll all positions of one city, climate day and side may "
        "cost together")

    @model_validator(mode="after")
    def _hysteresis(self) -> Self:
        if self.tau_close_cents > self.tau_open_cents:
            raise ValueError(
                f"tau_close_cents ({self.tau_close_cents}) must be <= tau_open_cents ({self.tau_open_cents})"
            )
        return self


class VCFeatures(StrictModel):
    """Visual Crossing minute-weather settings for one city."""

    minute_features: bool = Field(True, description="use dew point, humidity and wind from VC minute data")
    max_obs_age_minutes: StrictInt = Field(20, ge=1, le=24 * 60, description="older observations count as missing")


class PilotProvenance(StrictModel):
    """Where an earlier pilot of this config came from: recorded with the run (as params), not used to train."""

    directory: str = Field(description="the pilot's model directory")
    windows: list[str] = Field(default_factory=list,
                               description="the pilot's window names (win_YYYYMMDD_YYYYMMDD) this config reproduces")
    test_rows: StrictInt | None = Field(None, ge=0, le=MAX_ROWS, description="the pilot's test rows, for comparison")

    @field_validator("windows")
    @classmethod
    def _window_names(cls, v: list[str]) -> list[str]:
        from kwx.domain.windows import parse_window_name

        for name in v:
            parse_window_name(name)
        return v


class AcceptanceGates(StrictModel):
    """Promotion is refused unless every gate holds on the run's test weeks, pooled.

    Rows of one climate day share its weather, so a week of a tail bracket holds seven outcomes however many rows
    it has: skill and calibration are judged on all test weeks pooled, with paired day-block bootstrap intervals
    (``kwx.domain.evidence``), and a single window's ECE only once it holds enough days to mean something.
    """

    max_ece: float = Field(0.08, gt=0, le=1,
                           description="highest expected calibration error of the model on the pooled unlocked test "
                                       "rows, and on any window with at least min_window_ece_days outcome-days")
    max_brier: float = Field(0.20, gt=0, le=1, description="highest Brier score of the model on pooled unlocked rows")
    min_windows: StrictInt = Field(4, ge=1, le=MAX_DAYS,
                                   description="fewest walk-forward windows the run must have trained")
    min_brier_skill: float = Field(
        0.0, ge=-1, le=1,
        description="lowest *lower bound* of the pooled Brier skill 1 − Brier(model) / Brier(market) on unlocked "
                    "rows the market quotes (confidence_level interval): 0 means the model must beat yes_mid beyond "
                    "noise, a tie is refused")
    min_log_loss_skill: float = Field(
        0.0, ge=-1, le=1,
        description="lowest lower bound of the pooled log-loss skill 1 − log loss(model) / log loss(market) on the "
                    "same rows: catches confident misses a Brier score forgives")
    min_windows_beating_market: float = Field(
        0.5, ge=0, le=1,
        description="lowest share of windows whose model Brier is below the market's on unlocked quoted rows: "
                    "a majority, not every week, since one test week holds only a few settled days and an "
                    "honest market wins some of them by chance")
    min_window_ece_days: StrictInt = Field(
        28, ge=1, le=MAX_DAYS,
        description="climate days of unlocked test rows a single window needs before its own ECE is gated (it is "
                    "always logged and plotted): a week holds seven outcomes, and their ECE measures how those "
                    "seven fell")
    min_calibration_slope: float = Field(
        0.8, gt=0, le=1, allow_inf_nan=False,
        description="refused when the whole interval of the calibration slope (logistic recalibration of the "
                    "outcome on the model's logit; 1 is calibrated, below 1 over-confident) lies below this")
    max_calibration_slope: float = Field(
        1.25, ge=1, le=10, allow_inf_nan=False,
        description="refused when the whole interval of the calibration slope lies above this (under-confident)")
    max_abs_calibration_intercept: float = Field(
        0.25, gt=0, le=5, allow_inf_nan=False,
        description="refused when the whole interval of the calibration intercept (calibration in the large, in "
                    "log-odds; 0 is calibrated) lies farther than this from 0")
    confidence_level: float = Field(0.95, ge=0.5, lt=1, allow_inf_nan=False,
                                    description="coverage of the bootstrap intervals the gates read")
    bootstrap_resamples: StrictInt = Field(
        2000, ge=100, le=100_000,
        description="day-block bootstrap replicates behind each interval (a few hundred already fix a 95% "
                    "interval's ends to within a few per cent of its width)")
    bootstrap_seed: StrictInt = Field(0, ge=0, le=MAX_SEED,
                                      description="seed of the day resampling: the same rows give the same interval")



Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[str, ...] = Weekday.__args__


def _validate_clock_time(v: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
        raise ValueError("must be a 24-hour HH:MM time such as 06:30")
    return v


ClockTime = Annotated[str, AfterValidator(_validate_clock_time)]


class ForwardGates(StrictModel):
    """What a forward window must show on its training days before it may trade: cross-validated scores
    (out-of-fold probabilities, calibrated by calibrators that never saw the fold), since its test week
    lies in the future."""

    max_cv_log_loss: float = Field(0.45, gt=0, le=10, description="highest out-of-fold log loss")
    max_cv_ece: float = Field(0.08, gt=0, le=1, description="highest out-of-fold ECE on unlocked rows")
    max_cv_brier: float = Field(0.20, gt=0, le=1, description="highest out-of-fold Brier on unlocked rows")
    min_cv_brier_skill: float = Field(
        -0.05, ge=-1, le=1,
        description="lowest out-of-fold Brier skill vs the market on unlocked quoted rows; slightly below 0 by "
                    "default because a model that leans on the market's price cannot beat it in-sample by much")


class DriftThresholds(StrictModel):
    """Rolling realized quality of the Production family over ``monitor_days`` settled days; a breach of any
    of these is a drift alarm (`kwx monitor` exits 1)."""

    max_ece: float = Field(0.12, gt=0, le=1, description="highest rolling ECE on unlocked rows")
    max_brier: float = Field(0.25, gt=0, le=1, description="highest rolling Brier on unlocked rows")
    min_brier_skill: float = Field(
        -0.10, ge=-1, le=1, description="lowest rolling Brier skill vs the market on unlocked quoted rows")
    min_days: StrictInt = Field(3, ge=1, le=MAX_DAYS,
                                description="fewer settled days than this in the rolling span raise no alarm")


class Lifecycle(StrictModel):
    """Forward windows, their promotion policy, realized monitoring and the schedule that runs them.

    Times are the city's local wall-clock time (its IANA zone, daylight time included); the climate day a
    job works on is still the local *standard* day.
    """

    retrain_weekday: Weekday = Field("monday", description="day of the week a forward window is trained")
    retrain_time: ClockTime = Field("06:00", description="local time of the weekly retrain")
    monitor_time: ClockTime = Field(
        "09:00", description="local time of the daily monitor pass: after the NWS climate report of yesterday")
    min_train_coverage: float = Field(
        0.8, gt=0, le=1,
        description="share of the train_days before a forward window that must hold settled markets: fewer "
                    "(a data gap) and the retrain refuses rather than fit a short window")
    gates: ForwardGates = Field(ForwardGates(), description="what a forward window must show before it may trade")
    recent_windows: StrictInt = Field(
        4, ge=1, le=100, description="how many of the family's most recent evaluated windows the health check reads")
    min_healthy_windows: StrictInt = Field(
        2, ge=0, le=100,
        description="of those, how many must have passed the acceptance gates on their realized weeks "
                    "(a family with fewer evaluated windows needs all of them to have passed)")
    monitor_days: StrictInt = Field(14, ge=1, le=MAX_DAYS, description="rolling span of the drift metrics")
    drift: DriftThresholds = Field(DriftThresholds(), description="the drift alarm's thresholds")
    auto_withdraw: bool = Field(
        False, description="archive a drifting Production version so the loop falls back to the previous window")

    @model_validator(mode="after")
    def _healthy_within_recent(self) -> Self:
        if self.min_healthy_windows > self.recent_windows:
            raise ValueError(f"min_healthy_windows ({self.min_healthy_windows}) must be <= recent_windows "
                             f"({self.recent_windows})")
        return self


class TrainConfig(StrictModel):
    """One model family (`kwx train -c`): a city and bracket trained walk-forward over start..end, one window per
    step, each window a registered model version; its acceptance gates and lifecycle policy."""

    city: CityKey = Field(description="the city whose markets are modelled (a key of kwx.cities, e.g. chicago)")
    bracket: Bracket = Field(description="the market type: between (a range of whole °F), greater or less (the tails)")
    feature_set: FeatureSetName = Field(DEFAULT_FEATURE_SET, description="the model's feature columns, by name")
    start: date = Field(description="first event day of the data the windows are cut from")
    end: date = Field(description="last event day of that data (a window's test days stay within start..end)")
    train_days: StrictInt = Field(90, ge=1, le=MAX_DAYS, description="event days a window trains on")
    test_days: StrictInt = Field(7, ge=1, le=MAX_DAYS,
                                 description="event days after them a window is tested on (and trades)")
    step_days: StrictInt = Field(7, ge=1, le=MAX_DAYS, description="days between the starts of successive windows")
    penalties: list[Penalty] = Field(default_factory=lambda: ["elasticnet"], min_length=1,
                                     description="regularization penalties the search chooses from")
    trials: StrictInt = Field(40, ge=1, le=MAX_TRIALS,
                              description="Optuna trials per window (`kwx train --trials` overrides it)")
    cv_splits: StrictInt = Field(4, ge=2, le=100,
                                 description="time-ordered cross-validation folds a trial is scored on")
    sample_every_minutes: StrictInt = Field(
        10, ge=1, le=60, description="use candles ending on multiples of N minutes: neighbours are near-duplicates"
    )
    blend_weight: float = Field(
        0.7, ge=0, le=1, description="the model's weight in the model/market blend, recorded with the run; the "
        "live loop and backtests trade with the rt config's blend_weight")
    max_forecast_age_hours: float = Field(
        DEFAULT_MAX_FORECAST_AGE_HOURS, gt=0, le=14 * 24, allow_inf_nan=False,
        description="forecast features of a row whose day's newest public forecast is older are missing (imputed "
        "by the training median)")
    lock_margin_f: float = Field(
        DEFAULT_LOCK_MARGIN_F, ge=0, le=5, allow_inf_nan=False,
        description="°F the observed running maximum may exceed the climate report's: outcomes lock only beyond it")
    seed: StrictInt = Field(42, ge=0, le=MAX_SEED, description="numpy seeds are below 2**32")
    search: SearchSpace = Field(SearchSpace(), description="the Optuna search space of each window")
    calibration: Calibration = Field(Calibration(), description="how predicted probabilities are calibrated")
    risk: RiskParams = Field(RiskParams(), description="betting parameters recorded with the run; the live loop "
                             "and backtests read the rt config's risk")
    vc_features: dict[CityKey, VCFeatures] = Field(
        default_factory=dict, description="Visual Crossing minute-weather settings per city (a city not listed: "
        "minute features on unless it is in EXCLUDED_VC_CITIES)")
    acceptance: AcceptanceGates = Field(AcceptanceGates(), description="the gates promotion checks")
    lifecycle: Lifecycle = Field(Lifecycle(), description="forward windows, monitoring and their schedule")
    pilot: PilotProvenance | None = Field(None, description="provenance of a pilot this config reproduces")

    @field_validator("penalties")
    @classmethod
    def _distinct_penalties(cls, v: list[str]) -> list[str]:
        return _unique(v, "penalties")

    @field_validator("vc_features")
    @classmethod
    def _vc_cities(cls, v: dict[str, VCFeatures]) -> dict[str, VCFeatures]:
        for key, settings in v.items():
            if key in EXCLUDED_VC_CITIES and settings.minute_features:
                raise ValueError(f"{key} is in EXCLUDED_VC_CITIES: its VC minute features cannot be enabled")
        return v

    @model_validator(mode="after")
    def _dates(self) -> Self:
        if self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        span = (self.end - self.start).days + 1
        if span < self.train_days + self.test_days:
            raise ValueError(
                f"start..end spans {span} days, fewer than train_days + test_days "
                f"({self.train_days + self.test_days}): no walk-forward window fits"
            )
        return self

    def vc_for(self, city: str) -> VCFeatures:
        default = VCFeatures(minute_features=city not in EXCLUDED_VC_CITIES)
        return self.vc_features.get(city, default)

    def fingerprint(self) -> str:
        """Stable hash of the effective config (defaults included): tags models with what made them."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def summary(self) -> str:
        return (
            f"{self.city}/{self.bracket} {self.feature_set} {self.start}..{self.end} "
            f"train={self.train_days}d test={self.test_days}d step={self.step_days}d "
            f"penalties={','.join(self.penalties)} trials={self.trials} folds={self.cv_splits} "
            f"sample={self.sample_every_minutes}m"
        )


class MarketSelector(StrictModel):
    """One city's markets of one bracket type, traded by the loop."""

    city: CityKey = Field(description="a city key, e.g. chicago")
    bracket: Bracket = Field(description="between, greater or less")


class FeeConfig(StrictModel):
    """Kalshi's fees: by default each series' fee type and multiplier as the exchange publishes them (stored by
    ``kwx data ingest kalshi`` / ``kwx data ingest fees``, refreshed by the live loop) in force at each trade's
    time; set both rates to price every series and time the same instead."""

    taker_rate: StrictFloat | None = Field(
        None, ge=0, le=1, description="override: fee of a taker fill, ceil(rate·C·P·(1−P)) dollars, for every "
        "series; null (with maker_rate null): the exchange's fee data")
    maker_rate: StrictFloat | None = Field(
        None, ge=0, le=1, description="override: fee of a maker fill by the same formula; set together with "
        "taker_rate")
    contracts: StrictInt = Field(10, ge=1, le=MAX_CONTRACTS,
                                 description="order size the per-contract fee rounding assumes")

    @model_validator(mode="after")
    def _both_rates_or_none(self) -> FeeConfig:
        if (self.taker_rate is None) != (self.maker_rate is None):
            raise ValueError("set both taker_rate and maker_rate to override the exchange's fees, or neither")
        return self

    @property
    def override(self) -> tuple[float, float] | None:
        """(taker, maker) when the config replaces the exchange's fee data."""
        return None if self.taker_rate is None else (self.taker_rate, self.maker_rate)


def _validate_halt_file(v: str) -> str:
    # Only existence is ever checked, so a directory (or "/") would halt for ever and a creatable name never.
    # The directory may be missing: validation also runs where the loop's volume is not mounted (CI, a laptop).
    path = Path(v)
    if "\0" in v or v.endswith("/") or path.name in ("", ".", ".."):
        raise ValueError("must be a file path such as /data/HALT, not a directory")
    try:
        is_directory = path.is_dir()
    except OSError:  # an unreadable parent: nothing to say about the path itself
        is_directory = False
    if is_directory:
        raise ValueError("must be a file path such as /data/HALT, not an existing directory")
    return v


HaltFilePath = Annotated[str, AfterValidator(_validate_halt_file)]


class ExecutionParams(StrictModel):
    """How the signals are traded: maker-first orders, an optional taker fallback, a fixed bankroll (backtest and
    loop alike); and whether the loop places orders at all (``mode``), with the live loop's safety limits."""

    bankroll_dollars: StrictFloat = Field(10_000, gt=0, le=MAX_DOLLARS,
                                          description="capital the Kelly fractions and caps refer to")
    taker_fallback_cents: StrictFloat | None = Field(
        None, ge=0, le=100, description="cross the spread when the taker edge reaches this; null: maker orders only")
    cancel_minutes_before_close: StrictFloat = Field(
        15, ge=0, le=24 * 60, description="cancel resting orders (and post none) this close to the market's close")
    mode: Literal["signals", "paper", "live"] = Field(
        "signals", description="signals: no orders; paper: simulated fills recorded as orders and fills; "
        "live: real orders on Kalshi")
    halt_file: HaltFilePath | None = Field(
        None, description="while a file exists at this path no new order is placed (a kill switch for operators "
        "without a shell); its first line is the reason. Its directory need not exist yet")
    reconcile_seconds: StrictFloat = Field(
        60, ge=5, le=3600, description="how often orders, fills and positions are reconciled with the exchange")
    max_open_orders: StrictInt = Field(20, ge=0, le=MAX_OPEN_ORDERS,
                                       description="no new order while this many are open")
    max_position_contracts: StrictInt = Field(
        500, ge=0, le=MAX_CONTRACTS,
        description="most contracts held per market and side, resting buy orders included")
    max_daily_loss_dollars: StrictFloat = Field(
        500, gt=0, le=MAX_DOLLARS,
        description="a climate day's realized plus mark-to-market loss beyond this halts trading")
    trade_api_url: HttpUrlText | None = Field(
        None, description="Kalshi trading API base URL for live mode; null: the --env's URL (demo or production). "
        "$KWX_KALSHI_TRADE_URL overrides it; Kalshi's production host still needs --env prod --confirm-production")


class RtConfig(StrictModel):
    """The real-time loop (`kwx serve-rt`). Keys for the APIs come from the environment only."""

    markets: list[MarketSelector] = Field(min_length=1, description="the city/bracket pairs the loop signals on")
    tick_seconds: float = Field(9.0, ge=0.5, le=3600, description="seconds between ticks (fetch, score, signal); "
                                "below half a second the APIs' rate limits bite")
    stage: Literal["Production", "Staging"] = Field(
        "Production", description="registry stage whose versions the loop trades")
    blend: Literal["linear", "logarithmic"] = Field(
        "linear", description="how model and market probabilities are pooled: linear (weighted mean) or "
        "logarithmic (weighted mean of log-odds)")
    blend_weight: float = Field(0.7, ge=0, le=1, description="the model's weight in the blend (0: market only, "
                                "1: model only); `kwx backtest --write-rt-config` sets it")
    risk: RiskParams = Field(RiskParams(), description="how much to bet and when")
    fees: FeeConfig = Field(FeeConfig(), description="the exchange fees edges and P&L are net of")
    execution: ExecutionParams = Field(ExecutionParams(),
                                       description="how signals become orders, and the live loop's safety limits")
    max_quote_age_seconds: StrictInt = Field(180, ge=1, le=24 * 3600, description="older candles are stale")
    max_obs_age_minutes: StrictInt = Field(20, ge=1, le=24 * 60, description="older weather is stale")
    max_forecast_age_hours: float = Field(
        DEFAULT_MAX_FORECAST_AGE_HOURS, gt=0, le=14 * 24, allow_inf_nan=False,
        description="a market whose day's newest public forecast is older is skipped as a stale forecast (forecast "
        "feature sets only)")
    forecast_refresh_seconds: float = Field(
        900, ge=60, le=24 * 3600, allow_inf_nan=False,
        description="how often the live loop asks for new forecast runs (models publish every 6-12 hours)")
    lock_margin_f: float = Field(
        DEFAULT_LOCK_MARGIN_F, ge=0, le=5, allow_inf_nan=False,
        description="°F the observed running maximum may exceed the climate report's: outcomes lock only beyond it")
    min_minutes_to_close: float = Field(5, ge=0, le=24 * 60, description="stop signalling this close to the close")
    model_refresh_seconds: float = Field(60, ge=1, le=24 * 3600,
                                         description="how often the registry version table is re-read")
    max_stale_days: StrictInt = Field(7, ge=0, le=MAX_DAYS,
                                      description="warn when the model's test week ended longer ago")
    db_retry_attempts: StrictInt = Field(
        6, ge=1, le=100, description="attempts per database call (live: within a quarter tick) before the tick "
        "is skipped (reads) or buffered (writes)")
    fetch_deadline_fraction: float = Field(
        0.5, gt=0, le=0.9, allow_inf_nan=False,
        description="share of tick_seconds a tick's fetches may take together; later sources skip their markets")
    buffer_max_ticks: StrictInt = Field(200, ge=1, le=100_000,
                                        description="ticks held while the database is unreachable")
    kalshi_base_url: HttpUrlText = Field("https://api.elections.kalshi.com/trade-api/v2",
                                         description="Kalshi's market data API (markets, quotes and candles)")
    vc_base_url: HttpUrlText = Field(
        "https://weather.visualcrossing.com/VisualCrossingWebServices/rest/services/timeline",
        description="Visual Crossing's Timeline API (minute weather; key from $VC_API_KEY)")
    forecast_models: list[str] = Field(
        default_factory=lambda: ["gfs_seamless", "ecmwf_ifs025"],
        description="Open-Meteo deterministic models the live loop polls (empty: read only stored forecasts)")
    forecast_ensemble_models: list[str] = Field(
        default_factory=lambda: ["gfs025", "ecmwf_ifs025"],
        description="Open-Meteo ensembles the live loop polls, every member")
    forecast_base_url: HttpUrlText = Field("https://api.open-meteo.com", description="Open-Meteo's Forecast API")
    forecast_ensemble_base_url: HttpUrlText = Field("https://ensemble-api.open-meteo.com",
                                                    description="Open-Meteo's Ensemble API")

    @field_validator("markets")
    @classmethod
    def _distinct_markets(cls, v: list[MarketSelector]) -> list[MarketSelector]:
        return _unique(v, "markets")

    @field_validator("forecast_models", "forecast_ensemble_models")
    @classmethod
    def _known_forecast_models(cls, v: list[str], info) -> list[str]:
        from kwx.data.clients.open_meteo import model_spec

        for name in v:
            model_spec(name, ensemble=info.field_name == "forecast_ensemble_models")  # ValueError naming the known
        return _unique(v, info.field_name)

    @model_validator(mode="after")
    def _taker_above_open(self) -> Self:
        fallback = self.execution.taker_fallback_cents
        if fallback is not None and fallback < self.risk.tau_open_cents:
            raise ValueError(f"execution.taker_fallback_cents ({fallback}) must be >= risk.tau_open_cents "
                             f"({self.risk.tau_open_cents}): crossing the spread needs the larger edge")
        return self

    def summary(self) -> str:
        pairs = ", ".join(f"{m.city}/{m.bracket}" for m in self.markets)
        return (f"rt {pairs} every {self.tick_seconds:g}s stage={self.stage} blend={self.blend}:{self.blend_weight} "
                f"kelly_alpha={self.risk.kelly_alpha}")


def _matrix_dir(info: ValidationInfo) -> Path:
    return Path((info.context or {}).get("config_dir", ".")).resolve()


def _matching_files(pattern: str, directory: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(directory / pattern)) if Path(p).is_file())


def _config_pattern(v: str, info: ValidationInfo) -> str:
    if not _matching_files(v, _matrix_dir(info)):
        raise ValueError(f"matches no file in {_matrix_dir(info)}")
    return v


class MatrixConfig(StrictModel):
    """`kwx train --matrix`: train configs (paths or globs relative to the matrix file) and `--set`-style
    dotted-key overrides applied to every one of them."""

    configs: list[Annotated[str, AfterValidator(_config_pattern)]] = Field(
        min_length=1, description="train config paths or globs, relative to the matrix file; each must match a file")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="dotted train config keys and values applied to every config, as --set "
        "does (--set on the command line wins)")
    _config_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source: str = PrivateAttr(default="<matrix>")

    @field_validator("configs")
    @classmethod
    def _distinct_configs(cls, v: list[str]) -> list[str]:
        return _unique(v, "configs")

    @field_validator("overrides")
    @classmethod
    def _known_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(k for k in v if k.split(".")[0] not in TrainConfig.model_fields)
        if unknown:
            raise ValueError(f"not a field of the train config: {', '.join(unknown)}")
        return v

    @model_validator(mode="after")
    def _remember_location(self, info: ValidationInfo) -> Self:
        self._config_dir = _matrix_dir(info)
        self._source = str((info.context or {}).get("source", self._source))
        return self

    def paths(self) -> list[Path]:
        """Matched files in entry order, each once."""
        return list(dict.fromkeys(p for pattern in self.configs for p in _matching_files(pattern, self._config_dir)))

    def load_members(self, extra_overrides: dict[str, Any] | None = None) -> list[tuple[Path, TrainConfig]]:
        """Every member config with the overrides applied (``extra_overrides`` win); all problems at once."""
        overrides = {**self.overrides, **(extra_overrides or {})}
        members, problems = [], []
        for path in self.paths():
            try:
                members.append((path, load_config(path, TrainConfig, overrides)))
            except ConfigError as exc:
                problems += [f"{path.name}: {problem}" for problem in exc.problems]
        seen: dict[tuple[str, str], Path] = {}
        for path, cfg in members:
            # Two configs of one city/bracket would interleave their versions in one registered model.
            first = seen.setdefault((cfg.city, cfg.bracket), path)
            if first != path:
                problems.append(f"{path.name}: trains {cfg.city}/{cfg.bracket} like {first.name}")
        if problems:
            raise ConfigError(self._source, problems)
        return members

    def summary(self) -> str:
        names = ", ".join(p.stem.removeprefix("elasticnet_") for p in self.paths())
        overrides = ",".join(f"{k}={v}" for k, v in self.overrides.items())
        return f"matrix of {len(self.paths())} configs ({names})" + (f" overrides {overrides}" if overrides else "")


CONFIG_KINDS: dict[str, type[StrictModel]] = {"train": TrainConfig, "rt": RtConfig, "matrix": MatrixConfig}
ModelT = TypeVar("ModelT", bound=StrictModel)


class ConfigError(ValueError):
    """A config that cannot be used; ``problems`` has one line per failing field."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses a repeated key (plain YAML silently keeps the last one) and keeps an impossible
    date such as 2025-02-30 a string, so validation names its field instead of the parser failing."""

    def construct_mapping(self, node, deep=False):
        first_line: dict[Hashable, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader itself reports an unhashable key
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first_line[key]})", key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


_ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", _ConfigLoader.construct_yaml_timestamp)
# PyYAML follows YAML 1.1, whose floats need a dot: it reads 1e5 as the text "1e5". Money is never coerced from
# text, so read it as YAML 1.2 (and anyone reading the file) does: a number, which its field's bounds then judge.
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """YAML as every config and ``--set`` value is read: safe, no duplicate keys, bad dates left to validation."""
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: no arbitrary objects


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def validation_problems(exc: ValidationError) -> list[str]:
    """One line per error: dotted field path, the rule, and the offending value."""
    problems = []
    for err in exc.errors(include_url=False):
        path = _field_path(err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(f"{path}: unknown key (not a field of this config)")
            continue
        message = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if isinstance(value, dict) or err["type"] == "missing" else f" (got {value!r})"
        problems.append(f"{path}: {message}{shown}")
    return problems


def parse_config(data: Any, model: type[ModelT], source: str = "<config>", context: dict | None = None) -> ModelT:
    if not isinstance(data, dict):
        raise ConfigError(source, [f"(top level): expected a mapping of fields, got {type(data).__name__}"])
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(source, validation_problems(exc)) from None


_PACKAGE_DIR = Path(__file__).resolve().parent


def sample_configs_dir() -> Path:
    """The sample configs kwx ships: the copy a wheel carries inside the package (looked for first, since a
    site-packages directory may hold anyone's ``configs/``), else the checkout's ``configs/``."""
    for candidate in (_PACKAGE_DIR / "sample_configs", _PACKAGE_DIR.parent / "configs"):
        if (candidate / "rt.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"the sample configs are missing next to {_PACKAGE_DIR}")


def load_config(path: str | Path, model: type[ModelT] = TrainConfig, overrides: dict | None = None) -> ModelT:
    """Load a YAML config; ``overrides`` maps dotted keys to values (e.g. {"trials": 5})."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset {exc.start}"]
                          ) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(str(path), [f"invalid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    data = {} if data is None else data
    if overrides and isinstance(data, dict):
        data = apply_overrides(data, overrides)
    # The file's directory anchors relative paths inside it (a matrix's config globs).
    return parse_config(data, model, str(path), context={"config_dir": path.parent, "source": str(path)})


def write_top_level_value(path: str | Path, key: str, value: float, model: type[StrictModel]) -> None:
    """Set one top-level scalar in a YAML config in place, keeping its comments, then re-validate it.

    The file is left as it was when the result would not validate.
    """
    path = Path(path)
    original = path.read_text()
    pattern = re.compile(rf"^({re.escape(key)}:[ \t]*)[^#\n]*?([ \t]*#.*)?$", re.MULTILINE)
    updated, count = pattern.subn(lambda m: f"{m.group(1)}{value}{m.group(2) or ''}", original, count=1)
    if not count:
        updated = original.rstrip("\n") + f"\n{key}: {value}\n"
    path.write_text(updated)
    try:
        load_config(path, model)
    except ConfigError:
        path.write_text(original)
        raise


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    merged = json.loads(json.dumps(data, default=str))
    for dotted, value in overrides.items():
        node = merged
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError("<overrides>", [f"{dotted}: {key} is not a mapping"])
        node[leaf] = value
    return merged
