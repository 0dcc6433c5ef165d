"""Weather-model forecasts as features: the as-of pick, ensemble summaries, the error scale and a physical prior.

PURE (numpy and pandas only). A forecast is data with a time of availability, never a function of the target
day alone: a feature row of a market at time t sees, for the market's climate day, each model's (and each
ensemble member's) newest run whose ``available_ts <= t``. Everything here is a function of those rows, so a
day computed in one batch equals the same day computed minute by minute.

- **State**: for one city and climate day, what the published forecasts said after each new publication:
  the deterministic consensus (mean of each model's newest run), the spread between models, the freshest lead,
  and the pooled ensemble members.
- **Error scale**: how far the consensus missed the settled high, per 6-hour horizon before the day, over the
  trailing ``ERROR_LOOKBACK_DAYS`` settled days before the row's day (never the day itself nor the one before:
  no lookahead), shrunk toward a climatological prior when few days are known.
- **Prior ``p_forecast``**: P(settled high in the bracket | forecast, running max, local hour). The final high
  is max(true max so far, the rest of the day's maximum); the true max so far is the observed one give or take
  ``OBSERVED_MAX_SD_F`` (never below the lock rule's bound); the rest of the day is normal around the
  bias-corrected consensus, and after the usual peak (``PEAK_START_HOUR``..``PEAK_END_HOUR`` local standard
  time) moves to the current temperature and narrows. A bracket the lock rule decides gets exactly its outcome,
  and the ladder's probabilities sum to 1 (its brackets tile the line).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

FORECAST_COLUMNS = ("city", "climate_date", "model", "member", "run_ts", "available_ts", "lead_days", "high_f",
                    "ensemble")
SCALE_COLUMNS = ("city", "climate_date", "horizon", "bias_f", "sd_f", "n_days")
# The error scale is kept per horizon: the 6-hour slice of time, relative to the climate day's start, a row
# falls in (-16 = three days before, 0 = the day's first six hours); a row compares to past days' consensus
# as it stood at the same point before them, i.e. with the same runs public.
HORIZON_HOURS = 6
MIN_HORIZON = -16

# The error scale of day D reads settled days in [D - ERROR_LOOKBACK_DAYS, D - ERROR_SETTLED_AFTER_DAYS]: the
# climate report of D - 2 is out by the morning of D - 1, before D's markets open.
ERROR_LOOKBACK_DAYS = 90
ERROR_SETTLED_AFTER_DAYS = 2
# Pseudo-days of the climatological prior: with ten settled days the data and the prior weigh alike.
ERROR_PRIOR_DAYS = 10
# Typical error sd of a day's high by the hours to its peak (~15:00 local standard time).
_PEAK_HOUR, _PRIOR_SD_AT_PEAK_F, _PRIOR_SD_DAY_AHEAD_F = 15.0, 1.5, 1.5
# After the usual peak the rest of the day cannot rise much above the current temperature.
PEAK_START_HOUR, PEAK_END_HOUR = 13.0, 17.0
MIN_SD_F = 0.6  # the settled high is never known to better than this before the report (rounding, sensor)
# How far the day's true maximum (what the report rounds) may sit from the observed running maximum: 5-minute
# samples miss the peak minute (the demo: +0.1 ± 0.3 °F beyond rounding), and °C-rounded reports converted to
# °F can read above the report's (the lock margin). Integrated over a normal of this sd, never below the lock's
# bound (5-point Gauss-Hermite nodes and weights of a standard normal).
OBSERVED_MAX_SD_F = 0.35
_HERMITE_NODES = np.array([-2.856970, -1.355626, 0.0, 1.355626, 2.856970])
_HERMITE_WEIGHTS = np.array([0.011257, 0.222076, 0.533333, 0.222076, 0.011257])
_HERMITE_WEIGHTS = _HERMITE_WEIGHTS / _HERMITE_WEIGHTS.sum()  # exactly 1: a ladder's prior sums to one
_NO_SHIFT, _ALL_WEIGHT = np.zeros(1), np.ones(1)  # ``censored_mass`` at the running max itself
# The logit feature's clip: the prior's hard zeros and ones become ±6.9 instead of ±∞.
_LOGIT_CLIP = 1e-3
# Whole-°F values with a few tenths on either side and a state number fit one float64 key exactly.
_KEY_WIDTH, _KEY_OFFSET = 4096.0, 1000.0

# A forecast older than this (its newest publication) is stale: training imputes it, the live loop skips.
DEFAULT_MAX_FORECAST_AGE_HOURS = 30.0

FORECAST_FEATURES = ("fc_high", "fc_sd", "fc_lead_days", "fc_age_hours", "fc_source_spread", "fc_ens_mean",
                     "fc_ens_sd", "fc_ens_in_bracket", "fc_to_floor", "fc_to_cap", "p_forecast", "forecast_logit",
                     "forecast_logit_ahead", "forecast_logit_morning", "forecast_logit_late")


@dataclass(frozen=True)
class ForecastData:
    """The forecasts a batch or a tick may read (``FORECAST_COLUMNS``, none published after its time) and
    the error scales of their days (``SCALE_COLUMNS``, from ``error_scales``).

    Its states and scale table are computed once per set of city codes and kept: a live source hands the
    same object to every tick until a new run is published, and states cost far more than the tick's rows.
    """

    forecasts: pd.DataFrame
    scales: pd.DataFrame
    _prepared: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def prepared(self, city_codes: dict[str, int]) -> tuple[ForecastStates, ScaleTable]:
        key = tuple(sorted(city_codes.items()))
        if key not in self._prepared:
            self._prepared[key] = (forecast_states(self.forecasts, city_codes), ScaleTable(self.scales, city_codes))
        return self._prepared[key]


def prior_error_sd(horizon) -> np.ndarray:
    """The climatological error sd (°F) of the consensus forecast of a day's high, read in ``horizon``: about
    1.5 °F on the day, 3 °F a day ahead, growing by ~0.5 °F a day beyond."""
    hours_to_peak = np.clip(_PEAK_HOUR - (np.asarray(horizon, dtype=float) + 0.5) * HORIZON_HOURS, 0, None)
    return _PRIOR_SD_AT_PEAK_F + _PRIOR_SD_DAY_AHEAD_F * (hours_to_peak / 28) ** 0.8


def _day_numbers(values) -> np.ndarray:
    return pd.to_datetime(pd.Series(values)).to_numpy().astype("datetime64[D]").astype(np.int64)


def group_keys(city_codes: np.ndarray, day_numbers: np.ndarray) -> np.ndarray:
    """One int64 per (city code, climate day number): the states' and the rows' join key."""
    return (np.asarray(city_codes, dtype=np.int64) << 20) | np.asarray(day_numbers, dtype=np.int64)


@dataclass(frozen=True)
class ForecastStates:
    """What the published forecasts said for each (city, climate day) after each publication time.

    ``key`` is sorted: (group << 32) | state time, so a row's state is one ``searchsorted`` away.
    """

    key: np.ndarray
    group: np.ndarray
    time: np.ndarray  # the state's newest availability (Unix s)
    consensus: np.ndarray  # mean of the deterministic models' newest runs (the ensembles' mean without any)
    spread: np.ndarray  # max - min of the deterministic models' newest runs
    lead: np.ndarray  # the freshest lead among the runs the consensus uses
    ens_n: np.ndarray
    ens_mean: np.ndarray
    ens_sd: np.ndarray
    members: np.ndarray  # (state, member high) as sorted float keys: state * _KEY_WIDTH + high + _KEY_OFFSET

    def lookup(self, row_group: np.ndarray, row_ts: np.ndarray) -> np.ndarray:
        """Each row's state (-1 where its city/day had nothing public at its time)."""
        if not len(self.key):
            return np.full(len(row_ts), -1, dtype=np.int64)
        probe = (np.asarray(row_group, dtype=np.int64) << 32) | np.asarray(row_ts, dtype=np.int64)
        at = np.searchsorted(self.key, probe, side="right") - 1
        found = (at >= 0) & (self.group[np.maximum(at, 0)] == row_group)
        return np.where(found, at, -1)

    def members_below(self, state: np.ndarray, value: np.ndarray) -> np.ndarray:
        """How many ensemble members of ``state`` forecast a high below ``value`` (per row)."""
        base = state * _KEY_WIDTH
        high = np.clip(value, -_KEY_OFFSET + 1, _KEY_WIDTH - _KEY_OFFSET - 1)
        return (np.searchsorted(self.members, base + high + _KEY_OFFSET, side="left")
                - np.searchsorted(self.members, base, side="left"))


def _reduce(state: np.ndarray, values: np.ndarray, n: int, ufunc: np.ufunc) -> np.ndarray:
    """``ufunc`` over the values of each state (NaN for a state with none); ``state`` sorted."""
    out = np.full(n, np.nan)
    if len(state):
        starts = np.flatnonzero(np.r_[True, state[1:] != state[:-1]])
        out[state[starts]] = ufunc.reduceat(values, starts)
    return out


def forecast_states(forecasts: pd.DataFrame, city_codes: dict[str, int]) -> ForecastStates:
    """Every (city, climate day) state after each publication, from rows of ``FORECAST_COLUMNS``.

    Each (model, member) series contributes its newest run as of each state time; a later run published at
    the same moment replaces an earlier one. Cities not in ``city_codes`` are ignored.
    """
    frame = forecasts[forecasts["city"].isin(list(city_codes))]
    city_of, cities = pd.factorize(frame["city"])
    city = np.array([city_codes[c] for c in cities], dtype=np.int64)[city_of]
    group = group_keys(city, _day_numbers(frame["climate_date"]))
    available = frame["available_ts"].to_numpy(dtype=np.int64)
    # a (city/day, model, member) series as one integer, numbered by first appearance as the rows come
    model, models = pd.factorize(frame["model"])
    member, members = pd.factorize(frame["member"])
    series, _ = pd.factorize((group * len(models) + model) * len(members) + member)
    order = np.lexsort((frame["run_ts"].to_numpy(dtype=np.int64), available, series))
    group, available, series = group[order], available[order], series[order]
    high = frame["high_f"].to_numpy(dtype=float)[order]
    lead = frame["lead_days"].to_numpy(dtype=float)[order]
    ensemble = frame["ensemble"].to_numpy(dtype=bool)[order]

    key = np.unique((group << 32) | available)
    state_of_row = np.searchsorted(key, (group << 32) | available)
    state_group = key >> 32
    # A row speaks for its series from its own state up to the next row of the series (or its group's end).
    group_end = np.searchsorted(state_group, group, side="right")
    next_same = np.r_[series[1:] == series[:-1], False]
    end = np.where(next_same, np.r_[state_of_row[1:], 0], group_end)
    span = np.maximum(end - state_of_row, 0)
    row = np.repeat(np.arange(len(order)), span)
    state = state_of_row[row] + (np.arange(len(row)) - np.repeat(np.cumsum(span) - span, span))
    by_state = np.lexsort((high[row], state))
    state, row = state[by_state], row[by_state]

    n = len(key)
    det = ~ensemble[row]
    det_n = np.bincount(state[det], minlength=n).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        det_mean = np.bincount(state[det], high[row][det], minlength=n) / det_n
        ens_n = np.bincount(state[~det], minlength=n).astype(float)
        ens_mean = np.bincount(state[~det], high[row][~det], minlength=n) / ens_n
        ens_sq = np.bincount(state[~det], high[row][~det] ** 2, minlength=n)
        ens_sd = np.sqrt(np.maximum(ens_sq / ens_n - ens_mean**2, 0) * ens_n / np.maximum(ens_n - 1, 1))
    ens_sd[ens_n < 2] = np.nan
    spread = _reduce(state[det], high[row][det], n, np.fmax) - _reduce(state[det], high[row][det], n, np.fmin)
    det_lead = _reduce(state[det], lead[row][det], n, np.fmin)
    ens_lead = _reduce(state[~det], lead[row][~det], n, np.fmin)
    has_det = det_n > 0
    members = state[~det] * _KEY_WIDTH + high[row][~det] + _KEY_OFFSET  # sorted: rows are by (state, high)
    return ForecastStates(
        key=key, group=state_group, time=key & ((1 << 32) - 1),
        consensus=np.where(has_det, det_mean, ens_mean), spread=np.where(det_n > 1, spread, np.nan),
        lead=np.where(has_det, det_lead, ens_lead), ens_n=ens_n, ens_mean=ens_mean, ens_sd=ens_sd,
        members=members,
    )


def horizon_of(ts, day_start_ts) -> np.ndarray:
    """Which ``HORIZON_HOURS`` slice of time before (negative) or in its climate day a moment falls in."""
    return np.floor_divide(np.asarray(ts, dtype=np.int64) - np.asarray(day_start_ts, dtype=np.int64),
                           HORIZON_HOURS * 3600)


def consensus_history(forecasts: pd.DataFrame, standard_offsets: dict[str, int]) -> pd.DataFrame:
    """Per (city, climate_date, horizon): the consensus as it stood at the start of that horizon, for every
    horizon from ``MIN_HORIZON`` to the day's last: the history the error scale is read from.

    Deterministic runs only where a day has them (``forecast_states``' consensus); ``standard_offsets`` maps a
    city to its standard UTC offset in seconds (the climate day's start).
    """
    codes = {city: i for i, city in enumerate(sorted(set(forecasts["city"]) & set(standard_offsets)))}
    states = forecast_states(forecasts, codes)
    days = forecasts.drop_duplicates(["city", "climate_date"])[["city", "climate_date"]]
    city_code = days["city"].map(codes).to_numpy(dtype=np.int64)
    day_number = _day_numbers(days["climate_date"])
    day_start = day_number * 86_400 - days["city"].map(standard_offsets).to_numpy(dtype=np.int64)
    horizons = np.arange(MIN_HORIZON, 24 // HORIZON_HOURS)
    probe_group = np.repeat(group_keys(city_code, day_number), len(horizons))
    probe_ts = np.repeat(day_start, len(horizons)) + np.tile(horizons, len(days)) * HORIZON_HOURS * 3600
    state = states.lookup(probe_group, probe_ts)
    found = state >= 0
    return pd.DataFrame({
        "city": np.repeat(days["city"].to_numpy(dtype=object), len(horizons))[found],
        "climate_date": np.repeat(days["climate_date"].to_numpy(dtype=object), len(horizons))[found],
        "horizon": np.tile(horizons, len(days))[found],
        "consensus_f": states.consensus[state[found]],
    })


def error_scales(history: pd.DataFrame, settled: pd.DataFrame, days: list) -> pd.DataFrame:
    """Bias and error sd of the consensus by horizon, for each target day, from settled days before it.

    history: ``consensus_history`` rows. settled: city, climate_date, tmax_f. days: the target climate days.
    For day D and horizon h: the errors (settled − consensus) at h of the days in
    [D − ERROR_LOOKBACK_DAYS, D − ERROR_SETTLED_AFTER_DAYS]; bias = Σe / (n + k) and
    sd² = (Σ(e − ē)² + k·prior²) / (n − 1 + k), k = ERROR_PRIOR_DAYS: shrunk toward no bias and the
    climatological sd. Returns ``SCALE_COLUMNS`` for every (city, day, horizon) the history has.
    """
    target_days = np.unique(_day_numbers(days)) if len(days) else np.zeros(0, np.int64)
    out = []
    for city in sorted(set(history["city"])):
        c = history[history["city"] == city]
        s = settled[settled["city"] == city]
        tmax = pd.Series(s["tmax_f"].to_numpy(dtype=float), index=_day_numbers(s["climate_date"]))
        c_day = _day_numbers(c["climate_date"])
        error = pd.Series(c_day).map(tmax).to_numpy(dtype=float) - c["consensus_f"].to_numpy(dtype=float)
        known = ~np.isnan(error)
        lo_day = int(min(target_days.min(initial=c_day.min(initial=0)), c_day.min(initial=0))) - ERROR_LOOKBACK_DAYS
        width = int(max(target_days.max(initial=0), c_day.max(initial=0))) - lo_day + 2
        horizon = c["horizon"].to_numpy(dtype=np.int64)
        for h in np.unique(horizon):
            pick = known & (horizon == h)
            slot = c_day[pick] - lo_day
            n, total, squares = (
                np.concatenate([[0.0], np.cumsum(np.bincount(slot, weights, minlength=width))])
                for weights in (np.ones(int(pick.sum())), error[pick], error[pick] ** 2))
            last = target_days - ERROR_SETTLED_AFTER_DAYS - lo_day + 1  # exclusive end in the cumulative sums
            first = target_days - ERROR_LOOKBACK_DAYS - lo_day
            count, sum_e, sum_sq = (x[last] - x[first] for x in (n, total, squares))
            prior = float(prior_error_sd(h))
            mean = sum_e / np.maximum(count, 1)
            scatter = np.maximum(sum_sq - count * mean**2, 0)
            out.append(pd.DataFrame({
                "city": city, "climate_date": target_days.astype("datetime64[D]").astype(object), "horizon": h,
                "bias_f": sum_e / (count + ERROR_PRIOR_DAYS),
                "sd_f": np.sqrt((scatter + ERROR_PRIOR_DAYS * prior**2)
                                / (np.maximum(count - 1, 0) + ERROR_PRIOR_DAYS)),
                "n_days": count.astype(int),
            }))
    if not out:
        return pd.DataFrame(columns=list(SCALE_COLUMNS))
    return pd.concat(out, ignore_index=True)[list(SCALE_COLUMNS)]


def remaining_day(mu: np.ndarray, sd: np.ndarray, hour_local: np.ndarray, temp_now: np.ndarray,
                  started: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd of the rest of the climate day's maximum: the forecast until the usual peak, then the
    current temperature (plus the half degree a late reading still rises), narrowing to ``MIN_SD_F``."""
    late = np.clip((np.asarray(hour_local, float) - PEAK_START_HOUR) / (PEAK_END_HOUR - PEAK_START_HOUR), 0, 1)
    late = np.where(started & ~np.isnan(temp_now), late, 0.0)
    mean = mu + late * (np.nan_to_num(temp_now, nan=0.0) + 0.5 - mu)
    return mean, np.sqrt((sd * (1 - late)) ** 2 + MIN_SD_F**2)


def censored_mass(below_hi: np.ndarray, below_lo: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  running_max: np.ndarray, shifts: np.ndarray = _NO_SHIFT,
                  weights: np.ndarray = _ALL_WEIGHT) -> np.ndarray:
    """P(max(running max + S, X) ∈ [lo, hi)) from X's mass below hi and below lo (a CDF, or member counts: none
    below -inf), where the offset S takes the ascending ``shifts`` with ``weights`` (by default exactly 0).

    ``running_max`` NaN means the climate day has not begun (nothing bounds the high yet). Mass below the bound
    piles onto it: the high cannot fall. The CDFs do not depend on the bound, so they are computed once; and per
    row only how many shifts keep the bound below lo and below hi matters, so the sum over shifts is two lookups
    in the cumulative weights instead of a pass over every row per shift.
    """
    cumulative = np.r_[0.0, np.cumsum(weights)]
    begun = ~np.isnan(running_max)
    seen = np.where(begun, running_max, 0.0)
    # weight of the shifts whose bound stays below lo (the whole bracket counts) and below hi (all below hi does)
    under_lo = np.where(begun, cumulative[np.searchsorted(shifts, lo - seen, side="left")], cumulative[-1])
    under_hi = np.where(begun, cumulative[np.searchsorted(shifts, hi - seen, side="left")], cumulative[-1])
    return under_lo * np.clip(below_hi - below_lo, 0.0, None) + (under_hi - under_lo) * np.clip(below_hi, 0.0, None)


def forecast_features(states: ForecastStates, scales: ScaleTable, *,
                      row_city: np.ndarray, row_day: np.ndarray, row_day_start: np.ndarray, row_ts: np.ndarray,
                      lo: np.ndarray, hi: np.ndarray,
                      floor: np.ndarray, cap: np.ndarray, running_max: np.ndarray, hour_local: np.ndarray,
                      temp_now: np.ndarray, max_age_hours: float, lock_margin_f: float) -> dict[str, np.ndarray]:
    """``FORECAST_FEATURES`` for feature rows (city code, climate day number, Unix s, bracket bounds, weather).

    A row without a public forecast of its day, or whose newest is older than ``max_age_hours``, gets NaN
    everywhere (training imputes; the live loop skips it as a stale forecast). The running max bounds the
    settled high only give or take ``OBSERVED_MAX_SD_F`` (sampling misses the peak minute; a reading can sit
    above the report), never lower than the lock rule's ``lock_margin_f``: the prior is not exactly 0 or 1 on a
    bracket the report may still settle in (a wrong 0 costs ~7 nats a row), and no lock is contradicted.
    The prior's log-odds also come split by phase, each 0 outside its own: ``forecast_logit_ahead`` before the
    climate day begins, ``forecast_logit_morning`` on the day before ``PEAK_START_HOUR``, ``forecast_logit_late``
    after it; a linear model can then trust the forecast differently before the day, while the morning's
    observations say little, and once the afternoon's say more than any forecast.
    """
    row_group = group_keys(row_city, row_day)
    state = states.lookup(row_group, row_ts)
    age_hours = (row_ts - states.time[np.maximum(state, 0)]) / 3600
    state = np.where((state >= 0) & (age_hours <= max_age_hours), state, -1)
    have = state >= 0
    s = np.maximum(state, 0)

    def take(values: np.ndarray) -> np.ndarray:
        return np.where(have, values[s] if len(values) else np.nan, np.nan)

    lead = take(states.lead)
    bias, sd = scales.lookup(row_group, horizon_of(row_ts, row_day_start))
    fc_high = take(states.consensus) + bias
    ens_n = take(states.ens_n)
    started = ~np.isnan(running_max)  # NaN: the climate day has not begun
    below_hi, below_lo = _member_counts(states, s, lo, hi)
    rest_mean, rest_sd = remaining_day(fc_high, sd, hour_local, temp_now, started)
    # The true maximum so far is the observed one give or take OBSERVED_MAX_SD_F, never below the lock's bound:
    # no bracket next to the running max is exactly 0 or 1 unless the lock rule decides it.
    from scipy.special import ndtr  # here: scipy takes ~0.5 s to import and the CLI imports this module

    cdf_hi, cdf_lo = ndtr((hi - rest_mean) / rest_sd), ndtr((lo - rest_mean) / rest_sd)
    shifts = np.maximum(_HERMITE_NODES * OBSERVED_MAX_SD_F, -lock_margin_f)
    ens_votes = censored_mass(below_hi, below_lo, lo, hi, running_max, shifts, _HERMITE_WEIGHTS)
    p = np.minimum(censored_mass(cdf_hi, cdf_lo, lo, hi, running_max, shifts, _HERMITE_WEIGHTS), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ens_in_bracket = np.where(ens_n > 0, ens_votes / ens_n, np.nan)
    p = np.where(have, p, np.nan)
    clipped = np.clip(p, _LOGIT_CLIP, 1 - _LOGIT_CLIP)
    logit = np.log(clipped / (1 - clipped))
    phase = np.where(row_ts <= row_day_start, 0, np.where(np.asarray(hour_local, float) < PEAK_START_HOUR, 1, 2))
    outside = np.where(have, 0.0, np.nan)  # a phase column outside its phase: 0, or NaN without a forecast
    return {
        "fc_high": fc_high, "fc_sd": np.where(have, sd, np.nan), "fc_lead_days": lead,
        "fc_age_hours": np.where(have, age_hours, np.nan), "fc_source_spread": take(states.spread),
        "fc_ens_mean": take(states.ens_mean), "fc_ens_sd": take(states.ens_sd), "fc_ens_in_bracket": ens_in_bracket,
        "fc_to_floor": fc_high - floor, "fc_to_cap": cap - fc_high,
        "p_forecast": p, "forecast_logit": logit,
        **{name: np.where(phase == k, logit, outside)
           for k, name in enumerate(("forecast_logit_ahead", "forecast_logit_morning", "forecast_logit_late"))},
    }


def _member_counts(states: ForecastStates, state: np.ndarray, lo: np.ndarray,
                   hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble members below each row's hi and lo. A market's rows come in time order and its state changes a
    few times a day, so the counts are computed once per run of equal (state, lo, hi) and spread to the run."""
    if not len(states.members) or not len(state):
        return np.zeros(len(state)), np.zeros(len(state))
    new_run = np.r_[True, (state[1:] != state[:-1]) | (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])]
    first = np.flatnonzero(new_run)
    run = np.cumsum(new_run) - 1
    return (states.members_below(state[first], hi[first])[run].astype(float),
            states.members_below(state[first], lo[first])[run].astype(float))


class ScaleTable:
    """The error scales as a sorted integer key per (city, day, horizon), for lookups by feature rows."""

    def __init__(self, scales: pd.DataFrame, city_codes: dict[str, int]):
        known = scales[scales["city"].isin(list(city_codes))]
        table = self._key(group_keys(known["city"].map(city_codes).to_numpy(dtype=np.int64),
                                     _day_numbers(known["climate_date"])), known["horizon"].to_numpy(dtype=np.int64))
        order = np.argsort(table, kind="stable")
        self.key = table[order]
        self.bias = known["bias_f"].to_numpy(dtype=float)[order]
        self.sd = known["sd_f"].to_numpy(dtype=float)[order]

    @staticmethod
    def _key(group: np.ndarray, horizon: np.ndarray) -> np.ndarray:
        return (group << 8) | (np.clip(horizon, -128, 127).astype(np.int64) + 128)

    def lookup(self, row_group: np.ndarray, horizon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bias, sd) of each row's (city, day, horizon); no bias and the prior sd where the table has none.

        A market's rows come in time order and cross a horizon every six hours, so each run of equal keys is
        looked up once and spread to its rows.
        """
        if not len(row_group):
            return np.zeros(0), np.zeros(0)
        probe = self._key(row_group, horizon)
        first = np.flatnonzero(np.r_[True, probe[1:] != probe[:-1]])
        lengths = np.diff(np.r_[first, len(probe)])
        bias, sd = np.zeros(len(first)), np.empty(len(first))
        hit = np.zeros(len(first), dtype=bool)
        if len(self.key):
            at = np.minimum(np.searchsorted(self.key, probe[first]), len(self.key) - 1)
            hit = self.key[at] == probe[first]
            bias[hit], sd[hit] = self.bias[at[hit]], self.sd[at[hit]]
        sd[~hit] = prior_error_sd(horizon[first][~hit])
        return np.repeat(bias, lengths), np.repeat(sd, lengths)
