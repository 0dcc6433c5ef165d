"""Realistic demo data: weather, settlement highs, Kalshi-style ladders and 1-minute candles.

The embedded default dataset for `kwx demo` (docs/getting-started.md) and for tests. It is built to look like the real
thing to a model, not like noise:

- daily highs follow a per-city seasonal climatology plus persistent (AR(1)) anomalies; minute
  temperatures follow a diurnal cycle (low near 06:30, high near 15:00 local standard time) between
  consecutive daily extremes, with small minute-scale noise; dew point, humidity and wind agree;
- the settlement high is the whole-°F maximum over the climate day (local standard time);
- each day has a ladder (less tail, four 2 °F between brackets around the forecast high, greater
  tail) opening at 10:00 the day before and closing at the end of the climate day;
- weather-model forecasts of each day's high are published as real ones are (``DEMO_MODELS``): runs at fixed
  UTC cycles, public hours later, leads 0-3 days; errors shrink with the time left to the peak (same-day
  sd ≈ 1.7-2 °F, day-ahead ≈ 3 °F), share a common part between models, carry a per-city seasonal bias per
  model, are correlated from run to run and day to day, and the ensemble is under-dispersive;
- quotes come from a market whose skill is a parameter (``market_skill``, 0..1): at 1 it prices from what the
  public forecast said when it quoted (the newest GFS run, read raw with some crowd noise: the market reads
  the forecast, as a real one does, but does not combine models or correct their bias), narrowing to the
  observations as the day goes; at 0 its estimate is biased per day and noisy and its uncertainty inflated;
  in between, bias, noise and inflation shrink linearly. Either way it sharpens as the day's peak approaches.
  The skill changes only the quotes: the same seed gives the same weather, forecasts, ladders, settlements,
  trades and volumes at every skill. Demo P&L therefore measures a model against a market of chosen skill,
  never against a real one, and a model earns its edge only by reading the same forecasts better;
- a bracket the day's public observations have decided (``locked_outcomes``) quotes the decided book a few
  minutes later (``reprice_minutes``): YES bid 1 / ask 2 once it has lost, 98 / 99 once it has won
  (``decided_quote_cents``), and trades print there, as on Kalshi; until then its quotes lag, so a lock
  sniper's only edge is those minutes.

Everything is vectorised numpy; a seed makes it deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from kwx.cities import CITIES, City, get_city
from kwx.domain.fees import GENERAL
from kwx.domain.markets import (
    LadderSpec,
    bracket_bounds,
    climate_day_bounds,
    locked_outcomes,
    settlement_outcomes,
)

MINUTES_PER_DAY = 1440
WEATHER_STEP_MINUTES = 5  # ASOS-like 5-minute observations
LOW_MINUTE = 6 * 60 + 30
HIGH_MINUTE = 15 * 60
PEAK_INFO_MINUTE = 16 * 60  # by late afternoon the day's high is essentially known
# Before the morning's warming the observations say little about the afternoon's high beyond the forecast;
# from here to PEAK_INFO_MINUTE they reveal it.
OBS_INFO_START_MINUTE = 8 * 60
OPEN_MINUTE_PREVIOUS_DAY = 10 * 60
N_BETWEEN = 4
# The ladder is set when its markets open, ~30 h before the afternoon peak, from a forecast that misses
# the high by ~3 °F (day-2 maximum-temperature errors): its tails win now and then even where the weather
# is steady (Miami), as real ladders' tails do, so every city × bracket has both outcomes to learn from.
LADDER_FORECAST_ERROR_F = 3.0
SOURCE = "demo"
# 0 = a market that lags the weather, 1 = one as informed as the forecaster; see ``check_market_skill``.
# 0.9: the demo's chicago models then beat the market's Brier by a few percent on between brackets (measured
# with bench/calibration.py), as on a liquid real market, instead of the ~12 % an uninformed market gives away.
DEFAULT_MARKET_SKILL = 0.9
# The station observations the demo publishes are rounded to OBS_DECIMALS, which can lift a reading above the
# temperature it reports by half a step: the market trusts the running maximum only this far below its reading,
# so no outcome it calls decided is wrong (with 0, a reading of 70.5 would settle a high that reports 70).
OBS_DECIMALS = 1
OBS_ROUNDING_MARGIN_F = 0.5 * 10.0**-OBS_DECIMALS
# Kalshi's books reprice a bracket the observations have decided within minutes: 3 leaves a sniper the few
# minutes a real one has, not the rest of the day (on the default demo, sniping earns about as much at 0 as at 5:
# its edge is the book of the minute the observation appears).
DEFAULT_REPRICE_MINUTES = 3
# ... to the tick: a lost bracket's YES quotes 1 / 2, a won one's 98 / 99, so buying the decided outcome costs
# 99¢ and earns the cent a one-contract taker fee takes.
DEFAULT_DECIDED_QUOTE_CENTS = 1


@dataclass(frozen=True)
class DemoModel:
    """A weather model the demo publishes: its run cycles, how late runs become public, its bias."""

    name: str
    cycles_utc: tuple[int, ...]
    delay_hours: float
    bias_f: float  # mean error of the day's high (°F) ...
    seasonal_bias_f: float  # ... plus this much more at the summer peak (the cosine season term)
    members: int = 0  # 0: deterministic; else an ensemble of this many members (0 = control)


DEMO_MODELS = (
    DemoModel("gfs_seamless", (0, 6, 12, 18), 5.0, 0.6, 0.8),
    DemoModel("ecmwf_ifs025", (0, 12), 7.0, -0.3, -0.4),
    DemoModel("gfs_ensemble", (0, 12), 6.0, 0.6, 0.8, members=31),
)
MAX_LEAD_DAYS = 3
# Error sd of a run's high: FORECAST_SD_NOW_F at the peak, FORECAST_SD_DAY_AHEAD_F from a run public 28 h before.
FORECAST_SD_NOW_F, FORECAST_SD_DAY_AHEAD_F = 1.3, 3.0
COMMON_ERROR_SHARE = 0.7  # of the error variance shared by every model (the weather was hard to forecast)
RUN_TO_RUN_CORRELATION, DAY_TO_DAY_CORRELATION = 0.8, 0.5
ENSEMBLE_SPREAD_RATIO = 0.65  # members' spread over the mean's true error: under-dispersive, as real ensembles
CROWD_NOISE_F = 1.0  # what the crowd adds to the newest GFS run when it quotes (sd, per day)
CROWD_MODEL = "gfs_seamless"


@dataclass(frozen=True)
class Climatology:
    mean_high_f: float
    amplitude_f: float
    diurnal_range_f: float
    anomaly_sd_f: float
    dew_depression_f: float
    wind_mean_mph: float
    peak_day_of_year: int = 200


CLIMATOLOGY: dict[str, Climatology] = {
    "chicago": Climatology(59, 24, 17, 6.0, 14, 10),
    "nyc": Climatology(62, 21, 14, 5.0, 15, 9),
    "miami": Climatology(84, 7, 11, 2.0, 9, 9),
    "austin": Climatology(81, 17, 20, 4.5, 18, 8),
    "denver": Climatology(65, 23, 28, 7.0, 30, 9),
    "la": Climatology(72, 6, 12, 3.5, 16, 7),
    "philadelphia": Climatology(64, 22, 17, 5.0, 15, 9),
}


@dataclass
class DemoData:
    markets: pd.DataFrame
    candles: pd.DataFrame
    weather_minutes: pd.DataFrame
    climate_daily: pd.DataFrame
    forecasts: pd.DataFrame
    series_fees: pd.DataFrame

    def frames(self) -> dict[str, pd.DataFrame]:
        """Tables in foreign-key order, ready for ``store.upsert_frames``."""
        return {
            "markets": self.markets,
            "candles": self.candles,
            "weather_minutes": self.weather_minutes,
            "climate_daily": self.climate_daily,
            "forecasts": self.forecasts,
            "series_fees": self.series_fees,
        }


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) with marginal standard deviation ``sd``."""
    # Imported here: scipy takes ~0.5 s to load, and the CLI imports this module for its defaults.
    from scipy.signal import lfilter

    shocks = rng.standard_normal(n) * sd * np.sqrt(1 - phi**2)
    shocks[0] = rng.standard_normal() * sd  # start in the stationary distribution
    return lfilter([1.0], [1.0, -phi], shocks)


def _cosine_interpolate(anchor_t: np.ndarray, anchor_v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Smooth diurnal curve through alternating lows and highs."""
    seg = np.clip(np.searchsorted(anchor_t, t, side="right") - 1, 0, len(anchor_t) - 2)
    t0, t1 = anchor_t[seg], anchor_t[seg + 1]
    frac = np.clip((t - t0) / (t1 - t0), 0.0, 1.0)
    return anchor_v[seg] + (anchor_v[seg + 1] - anchor_v[seg]) * (1 - np.cos(np.pi * frac)) / 2


def _relative_humidity(temp_f: np.ndarray, dew_f: np.ndarray) -> np.ndarray:
    t, td = (temp_f - 32) / 1.8, (dew_f - 32) / 1.8
    return 100 * np.exp(17.625 * td / (243.04 + td) - 17.625 * t / (243.04 + t))


def _rules(city: City, day: date, bracket: str, floor: float, cap: float) -> str:
    where = {"between": f"between {floor:g}-{cap:g}°", "greater": f"greater than {floor:g}°",
             "less": f"less than {cap:g}°"}[bracket]
    return (f"If the highest temperature recorded at {city.station} for {day:%B %-d, %Y} as reported by the "
            f"National Weather Service's Climatological Report (Daily) is {where}, then the market resolves to Yes.")


def check_market_skill(market_skill: float, name: str = "market_skill") -> None:
    """A ValueError naming ``name`` and the rule unless ``market_skill`` is a number in [0, 1]."""
    if not 0.0 <= market_skill <= 1.0:  # also rejects NaN, which compares false with everything
        raise ValueError(f"{name} must be a number in [0, 1] (0 = a market that lags the weather, 1 = one as "
                         f"informed as the forecaster), got {market_skill!r}")


def _check_whole_number(value, low: int, high: int, rule: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
        raise ValueError(f"{rule}, got {value!r}")


def check_reprice_minutes(reprice_minutes: int, name: str = "reprice_minutes") -> None:
    """A ValueError naming ``name`` and the rule unless ``reprice_minutes`` is a whole number in [0, 1440]."""
    _check_whole_number(reprice_minutes, 0, MINUTES_PER_DAY,
                        f"{name} must be a whole number of minutes in [0, {MINUTES_PER_DAY}] (how long a decided "
                        f"bracket's book lags the observation that decides it; {MINUTES_PER_DAY}: it never reprices)")


def check_decided_quote_cents(decided_quote_cents: int, name: str = "decided_quote_cents") -> None:
    """A ValueError naming ``name`` and the rule unless ``decided_quote_cents`` is a whole number in [1, 49]."""
    _check_whole_number(decided_quote_cents, 1, 49,
                        f"{name} must be a whole number of cents in [1, 49] (a decided bracket's book is YES bid "
                        f"q / ask q+1 once it has lost, 99-q / 100-q once it has won)")


def generate_city(city_key: str, start: date, end: date, seed: int, *,
                  market_skill: float = DEFAULT_MARKET_SKILL, reprice_minutes: int = DEFAULT_REPRICE_MINUTES,
                  decided_quote_cents: int = DEFAULT_DECIDED_QUOTE_CENTS) -> DemoData:
    """Demo data for event days ``start``..``end`` (inclusive) of one city, quoted by a market of ``market_skill``.

    ``reprice_minutes`` after the public observation that decides a bracket, its book quotes the decided
    outcome at ``decided_quote_cents`` from the edge (see ``_decided_book``).
    """
    check_market_skill(market_skill)
    check_reprice_minutes(reprice_minutes)
    check_decided_quote_cents(decided_quote_cents)
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start})")
    city = get_city(city_key)
    clim = CLIMATOLOGY[city.key]
    rng = np.random.default_rng([seed, sorted(CITIES).index(city.key)])

    # Climate days simulated: the day before `start` (markets open then) through `end`, plus one
    # padding day each side so the diurnal curve has anchors at both ends.
    first_day = start - timedelta(days=1)
    n_days = (end - first_day).days + 1
    ext_days = pd.date_range(first_day - timedelta(days=1), periods=n_days + 2, freq="D")
    doy = ext_days.day_of_year.to_numpy()
    season = np.cos(2 * np.pi * (doy - clim.peak_day_of_year) / 365.25)
    normal_high = clim.mean_high_f + clim.amplitude_f * season
    anomaly_sd = clim.anomaly_sd_f * (1 - 0.25 * season)  # winter weather is more variable
    anomaly = _ar1(rng, len(ext_days), 0.7, 1.0) * anomaly_sd
    high = normal_high + anomaly
    low = high - clim.diurnal_range_f * np.clip(1 + 0.2 * rng.standard_normal(len(ext_days)), 0.4, 1.6)

    # True temperature every minute of the simulated climate days (minute 0 = first_day 00:00 LST).
    minute = np.arange(n_days * MINUTES_PER_DAY, dtype=float)
    day_offsets = (np.arange(len(ext_days)) - 1) * MINUTES_PER_DAY
    anchor_t = np.ravel(np.column_stack([day_offsets + LOW_MINUTE, day_offsets + HIGH_MINUTE]))
    anchor_v = np.ravel(np.column_stack([low, high]))
    temp = _cosine_interpolate(anchor_t, anchor_v, minute) + _ar1(rng, len(minute), 0.98, 0.5)

    by_day = temp.reshape(n_days, MINUTES_PER_DAY)
    tmax = np.floor(by_day.max(axis=1) + 0.5).astype(int)  # NWS whole-degree report
    running_max = np.maximum.accumulate(by_day, axis=1).ravel()
    sim_days = ext_days[1:-1]

    period_start, _ = climate_day_bounds(first_day, city)
    epoch0 = int(period_start.timestamp())

    weather = _weather(rng, city, clim, temp, epoch0)
    climate = pd.DataFrame({
        "station": city.station, "climate_date": sim_days.date, "tmax_f": tmax, "source": SOURCE,
    })
    # The day-ahead forecast the ladder is set from: persistence of yesterday's anomaly, calibrated to the
    # settlement (the maximum of noisy observations sits above the smooth daily high by a steady offset).
    forecast = normal_high[1:-1] + 0.7 * anomaly[:-2] + float(np.mean(tmax - high[1:-1]))
    # A spawned stream: publishing forecasts leaves every other draw of ``rng`` as it was.
    published, crowd = _forecasts(rng.spawn(1)[0], city, sim_days, by_day.max(axis=1), season[1:-1], epoch0)
    markets, candles = _markets_and_candles(
        rng, city, sim_days, forecast, anomaly_sd[1:-1], tmax, running_max, epoch0,
        start, market_skill, crowd, _public_observations(weather, epoch0), reprice_minutes, decided_quote_cents,
    )
    published = published[published["climate_date"] >= start].reset_index(drop=True)
    # the exchange's fee data for the series, as `kwx data ingest fees` stores it: Kalshi's general schedule
    # (what weather series pay) from before the first market opens
    fees = pd.DataFrame({"series_ticker": [city.series], "effective_ts": [epoch0], "fee_type": [GENERAL.fee_type],
                         "fee_multiplier": [GENERAL.multiplier], "source": [SOURCE], "fetched_ts": [epoch0]})
    return DemoData(markets, candles, weather, climate, published, fees)


def forecast_error_sd(hours_before_peak) -> np.ndarray:
    """The demo's error sd (°F) of a run's high, by the hours from its publication to the day's peak."""
    hours = np.clip(np.asarray(hours_before_peak, dtype=float), 0, None)
    return FORECAST_SD_NOW_F + (FORECAST_SD_DAY_AHEAD_F - FORECAST_SD_NOW_F) * (hours / 28) ** 0.8


@dataclass(frozen=True)
class CrowdForecast:
    """What the market's crowd reads: per event day, the newest run of CROWD_MODEL as it was published."""

    available_minute: np.ndarray  # per run of a day: minutes after the day's start (same for every day)
    error_f: np.ndarray  # (day, run): that run's error plus the crowd's own noise
    sd_f: np.ndarray  # per run: the crowd's sense of its error (the model's sd with its own noise)

    def as_of(self, day: np.ndarray, minute_of_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(error, sd) of the newest run public at each minute (minutes from the day's start; day is the
        simulated-day index); before the first run, the earliest one's sd and no error (the climatology)."""
        run = np.searchsorted(self.available_minute, minute_of_day, side="right") - 1
        none = run < 0
        run = np.maximum(run, 0)
        return np.where(none, 0.0, self.error_f[day, run]), np.where(none, self.sd_f[0] * 1.3, self.sd_f[run])


def _error_paths(rng, sd: np.ndarray, n_days: int, day_correlation: float = 0.0) -> np.ndarray:
    """(day, step) errors whose step k has sd ``sd[k]`` and correlation RUN_TO_RUN_CORRELATION with step k - 1
    (rho · sd_k / sd_k-1 of the last error plus fresh noise); the fresh noise of consecutive days is correlated
    by ``day_correlation`` (a spell that fools the models lasts)."""
    fresh = np.column_stack([_ar1(rng, n_days, day_correlation, 1.0) for _ in sd])
    paths = np.empty((n_days, len(sd)))
    paths[:, 0] = sd[0] * fresh[:, 0]
    for k in range(1, len(sd)):
        paths[:, k] = (RUN_TO_RUN_CORRELATION * sd[k] / sd[k - 1] * paths[:, k - 1]
                       + np.sqrt(1 - RUN_TO_RUN_CORRELATION**2) * sd[k] * fresh[:, k])
    return paths


def _runs(model: DemoModel, city: City, day_start_ts: int) -> tuple[np.ndarray, np.ndarray]:
    """(init Unix s, lead days) of every run of ``model`` with lead 0..MAX_LEAD_DAYS that is public before
    the end of the climate day starting at ``day_start_ts``, oldest first."""
    offset = int(city.standard_offset.total_seconds())
    day_number = (day_start_ts + offset) // 86_400
    first_utc_day = (day_start_ts - (MAX_LEAD_DAYS + 1) * 86_400) // 86_400
    inits = np.array([(first_utc_day + d) * 86_400 + hour * 3600
                      for d in range(MAX_LEAD_DAYS + 3) for hour in model.cycles_utc], dtype=np.int64)
    lead = day_number - (inits + offset) // 86_400
    public = inits + int(model.delay_hours * 3600)
    keep = (lead >= 0) & (lead <= MAX_LEAD_DAYS) & (public < day_start_ts + 86_400)
    return inits[keep], lead[keep]


def _forecasts(rng, city: City, sim_days, true_high: np.ndarray, season: np.ndarray,
               epoch0: int) -> tuple[pd.DataFrame, CrowdForecast]:
    """Every demo model's runs for every simulated day, and what the market's crowd reads of them."""
    n_days = len(sim_days)
    peak_offset = HIGH_MINUTE * 60
    # The weather's own forecastability, shared by every model: one path per day through six-hour slots
    # from MAX_LEAD_DAYS + 1 days before to the day's end, correlated from day to day and slot to slot.
    slot_ts = epoch0 + np.arange(-4 * (MAX_LEAD_DAYS + 1), 4) * 6 * 3600
    slot_sd = forecast_error_sd((epoch0 + peak_offset - slot_ts) / 3600)
    shared = _error_paths(rng, slot_sd, n_days, DAY_TO_DAY_CORRELATION)
    frames, crowd = [], None
    for model in DEMO_MODELS:
        inits, lead = _runs(model, city, epoch0)
        public = inits + int(model.delay_hours * 3600)
        sd = forecast_error_sd((epoch0 + peak_offset - public) / 3600)
        slot = np.clip(np.searchsorted(slot_ts, public, side="right") - 1, 0, len(slot_ts) - 1)
        common = shared[:, slot] * (sd / slot_sd[slot])  # the slot's shared error at this run's own sd
        own = _error_paths(rng, sd, n_days)
        n_runs = len(inits)
        bias = model.bias_f + model.seasonal_bias_f * season
        error = (np.sqrt(COMMON_ERROR_SHARE) * common + np.sqrt(1 - COMMON_ERROR_SHARE) * own
                 + bias[:, None])
        mean = true_high[:, None] + error
        day_shift = np.arange(n_days, dtype=np.int64)[:, None] * 86_400
        members = max(model.members, 1)
        spread = (ENSEMBLE_SPREAD_RATIO * sd * rng.standard_normal((members, n_days, n_runs))
                  if model.members else np.zeros((1, n_days, n_runs)))
        high = mean[None] + spread
        shape = high.shape
        frames.append(pd.DataFrame({
            "city": city.key,
            "climate_date": np.broadcast_to(np.asarray(sim_days.date, dtype=object)[None, :, None], shape).ravel(),
            "model": model.name,
            "member": np.broadcast_to(np.arange(members, dtype=np.int64)[:, None, None], shape).ravel(),
            "run_ts": np.broadcast_to((inits[None, :] + day_shift)[None], shape).ravel(),
            "available_ts": np.broadcast_to((public[None, :] + day_shift)[None], shape).ravel(),
            "lead_days": np.broadcast_to(lead[None, None, :], shape).ravel(),
            "high_f": np.round(high, 1).ravel(),
            "ensemble": bool(model.members),
            "source": SOURCE,
        }))
        if model.name == CROWD_MODEL:
            noise = rng.standard_normal(n_days)[:, None] * CROWD_NOISE_F
            crowd = CrowdForecast(((public - epoch0) // 60).astype(np.int64), error + noise,
                                  np.sqrt(sd**2 + CROWD_NOISE_F**2))
    return pd.concat(frames, ignore_index=True), crowd


def _weather(rng, city: City, clim: Climatology, temp: np.ndarray, epoch0: int) -> pd.DataFrame:
    obs_minutes = np.arange(0, len(temp), WEATHER_STEP_MINUTES)
    keep = rng.random(len(obs_minutes)) > 0.015  # dropped reports
    # A few multi-hour outages, as real station feeds have.
    for gap_start in rng.choice(len(obs_minutes), size=max(1, len(obs_minutes) // 6000), replace=False):
        keep[gap_start: gap_start + rng.integers(12, 30)] = False
    obs_minutes = obs_minutes[keep]
    t = temp[obs_minutes]
    hour = (obs_minutes % MINUTES_PER_DAY) / 60
    afternoon = np.clip(np.sin(np.pi * (hour - 6) / 14), 0, None)
    depression = np.clip(clim.dew_depression_f * (0.6 + 0.8 * afternoon) + _ar1(rng, len(t), 0.995, 3.0), 0.5, None)
    dew = t - depression
    wind = np.clip(clim.wind_mean_mph * (0.7 + 0.6 * afternoon) * rng.gamma(6.0, 1 / 6.0, len(t)), 0, None)
    return pd.DataFrame({
        "station": city.station,
        "ts_utc": pd.to_datetime(epoch0 + obs_minutes * 60, unit="s", utc=True),
        "temp_f": np.round(t, OBS_DECIMALS),
        "dew_f": np.round(dew, OBS_DECIMALS),
        "humidity_pct": np.round(np.clip(_relative_humidity(t, dew), 1, 100), OBS_DECIMALS),
        "wind_mph": np.round(wind, OBS_DECIMALS),
        "source": SOURCE,
    })


def _public_observations(weather: pd.DataFrame, epoch0: int) -> tuple[np.ndarray, np.ndarray]:
    """(minute since ``epoch0``, temperature) of every stored station observation."""
    minute = (weather["ts_utc"] - pd.Timestamp(epoch0, unit="s", tz="UTC")) // pd.Timedelta(minutes=1)
    return minute.to_numpy(dtype=np.int64), weather["temp_f"].to_numpy(dtype=float)


def decision_minutes(bracket, floor, cap, day_start, obs_minute, obs_temp_f) -> tuple[np.ndarray, np.ndarray]:
    """Per contract, (minute, outcome) of the first observation of its climate day that decides it: inf and NaN
    where none does.

    A contract's climate day starts at minute ``day_start`` (minutes count from the day the observations'
    minute 0 starts); the running maximum restarts with each day. The market reads the stored public
    observations, as kwx's lock does, not the generator's minute-by-minute truth: most true minutes fall
    between the 5-minute reports or in an outage, and pricing from them would move the book before anything
    public showed the decision.
    """
    obs_minute = np.asarray(obs_minute, dtype=np.int64)
    obs_day = obs_minute // MINUTES_PER_DAY
    seen_max = pd.Series(np.asarray(obs_temp_f, dtype=float)).groupby(obs_day).cummax().to_numpy()
    n = len(bracket)
    pairs = pd.DataFrame({"contract": np.arange(n), "day": np.asarray(day_start) // MINUTES_PER_DAY}).merge(
        pd.DataFrame({"day": obs_day, "minute": obs_minute, "seen_max": seen_max}), on="day")
    c = pairs["contract"].to_numpy()
    locked = locked_outcomes(np.asarray(bracket, dtype=object)[c], np.asarray(floor, dtype=float)[c],
                             np.asarray(cap, dtype=float)[c], pairs["seen_max"].to_numpy(), OBS_ROUNDING_MARGIN_F)
    first = pairs.assign(outcome=locked)[~np.isnan(locked)].sort_values("minute").groupby("contract").first()
    minute, outcome = np.full(n, np.inf), np.full(n, np.nan)
    minute[first.index] = first["minute"].to_numpy(dtype=float)
    outcome[first.index] = first["outcome"].to_numpy()
    return minute, outcome


def _decided_book(bid, ask, minute, decided_minute, outcome, reprice_minutes: int, quote_cents: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(bid, ask) of the 1-minute candles starting at ``minute``, their bracket's decided book from the candle
    ``reprice_minutes`` after the deciding observation's minute (``decided_minute``, inf if none) on: a lost YES
    quotes q / q+1, a won one 99-q / 100-q. Earlier candles keep their quotes, so the first decided close is a
    minute after the observation at the soonest, and a whole day's lag never reprices (the market closes at the
    end of the climate day whose observations decide it)."""
    repriced = np.asarray(minute) >= np.asarray(decided_minute) + reprice_minutes
    won = np.asarray(outcome) == 1.0
    return (np.where(repriced, np.where(won, 99 - quote_cents, quote_cents), bid),
            np.where(repriced, np.where(won, 100 - quote_cents, quote_cents + 1), ask))


def _markets_and_candles(rng, city, sim_days, forecast_high, anomaly_sd, tmax, running_max, epoch0, start,
                         market_skill, crowd: CrowdForecast, observations: tuple[np.ndarray, np.ndarray],
                         reprice_minutes: int, decided_quote_cents: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    event_idx = np.arange(1, len(sim_days))  # day 0 only hosts the first markets' opening hours
    n_events = len(event_idx)
    # A spawned stream: the ladder's forecast error leaves every other draw of ``rng`` as it was.
    ladder_error = rng.spawn(1)[0].standard_normal(n_events) * LADDER_FORECAST_ERROR_F
    forecast = forecast_high[event_idx] + ladder_error
    # The 2·N_BETWEEN degrees of between brackets are centred on the forecast (midpoint within ½ °F), so
    # both tails start about N_BETWEEN + ½ °F away from it.
    lowest_cap = np.floor(forecast - N_BETWEEN + 1).astype(int)

    contracts = [
        (i, c) for i, d in zip(range(n_events), sim_days[event_idx].date, strict=True)
        for c in LadderSpec(city.series, d, int(lowest_cap[i]), N_BETWEEN).contracts()
    ]
    ev = np.array([i for i, _ in contracts])
    bracket = np.array([c.bracket for _, c in contracts], dtype=object)
    floor = np.array([np.nan if c.floor is None else c.floor for _, c in contracts])
    cap = np.array([np.nan if c.cap is None else c.cap for _, c in contracts])
    day_start = event_idx[ev] * MINUTES_PER_DAY  # minute index of the event's climate-day start
    open_minute = day_start - MINUTES_PER_DAY + OPEN_MINUTE_PREVIOUS_DAY
    close_minute = day_start + MINUTES_PER_DAY
    outcome = settlement_outcomes(bracket, floor, cap, tmax[event_idx[ev]])

    def to_utc(minutes):
        return pd.to_datetime(epoch0 + np.asarray(minutes) * 60, unit="s", utc=True)

    markets = pd.DataFrame({
        "ticker": [c.ticker for _, c in contracts],
        "event_ticker": [c.ticker.rsplit("-", 1)[0] for _, c in contracts],
        "series_ticker": city.series,
        "city": city.key,
        "event_date": [c.event_date for _, c in contracts],
        "strike_type": bracket,
        "floor_strike": floor,
        "cap_strike": cap,
        "open_time": to_utc(open_minute),
        "close_time": to_utc(close_minute),
        "expiration_time": to_utc(close_minute + 9 * 60),
        "status": "finalized",
        "result": np.where(outcome == 1.0, "yes", "no"),
        "expiration_value": tmax[event_idx[ev]].astype(float),
        "settlement_value": outcome * 100,
        "rules_primary": [_rules(city, c.event_date, c.bracket, c.floor or 0, c.cap or 0) for _, c in contracts],
    })

    # Candle grid: every market, every minute it is open, thinned to minutes with activity.
    span = MINUTES_PER_DAY + MINUTES_PER_DAY - OPEN_MINUTE_PREVIOUS_DAY
    offset = np.tile(np.arange(span), len(contracts))
    market = np.repeat(np.arange(len(contracts)), span)
    minute = open_minute[market] + offset  # candle covers [minute, minute + 1)
    clock = minute % MINUTES_PER_DAY
    on_event_day = minute >= day_start[market]
    activity = np.where(~on_event_day, 0.35, np.where(clock < 360, 0.25, 0.9))
    keep = rng.random(len(minute)) < activity
    market, minute, on_event_day = market[keep], minute[keep], on_event_day[keep]
    e = ev[market]

    # What the crowd believes about the high, per event and minute: the newest public GFS run as it was
    # then, narrowing to the observed truth as the day goes; the uninformed market is a worse version of it
    # (day bias, slow noise, inflated uncertainty).
    info_left = np.clip((day_start[market] + PEAK_INFO_MINUTE - minute) / (PEAK_INFO_MINUTE - OBS_INFO_START_MINUTE),
                        0, 1)
    crowd_error, crowd_sd = crowd.as_of(event_idx[e], minute - day_start[market])
    sigma_true = 0.4 + 0.6 * anomaly_sd[event_idx][e] * info_left**0.7
    mu_true = tmax[event_idx][e] + crowd_error * info_left**0.8
    day_bias = rng.standard_normal(n_events) * 1.2
    slow_noise = _ar1(rng, len(minute), 0.995, 0.9)
    # Once the peak has passed the uninformed market converges too, as real ones do; before, it lags the weather.
    mu_uninformed = mu_true + (day_bias[e] + slow_noise) * (0.2 + 0.8 * info_left)
    sigma_uninformed = 1.3 * sigma_true + 0.6 * info_left + 0.1
    # The fully skilled market states its forecast's error sd (not the wider sigma_true the uninformed market
    # inflates further), so it is calibrated but for the bias it does not correct: what is left to beat is
    # reading the forecasts better. The floor keeps the settled-by-the-afternoon high from looking certain to a
    # tenth of a degree.
    sigma_informed = np.maximum(crowd_sd * info_left**0.8, 0.25)
    # Bias, noise and inflation shrink linearly with skill; this form makes both ends exact (0: uninformed).
    mu_market = market_skill * mu_true + (1 - market_skill) * mu_uninformed
    sigma_market = market_skill * sigma_informed + (1 - market_skill) * sigma_uninformed
    seen_max = np.where(on_event_day, running_max[np.minimum(minute, len(running_max) - 1)], -np.inf)
    p_market = _bracket_probability(bracket[market], mu_market, sigma_market, floor[market], cap[market], seen_max)
    # Spread widths follow the uninformed price: numpy's Poisson sampler consumes a rate-dependent number
    # of random draws, so a skill-dependent rate would change every later draw (trades, volumes).
    p_uninformed = _bracket_probability(bracket[market], mu_uninformed, sigma_uninformed, floor[market],
                                        cap[market], seen_max)

    mid = np.clip(100 * p_market, 1.5, 98.5)
    overnight = ~on_event_day | (minute % MINUTES_PER_DAY < 360)
    spread = 1 + rng.poisson(0.6 + 1.5 * overnight + 3 * p_uninformed * (1 - p_uninformed), len(mid))
    bid_close = np.clip(np.round(mid - spread / 2), 1, 98)
    ask_close = np.clip(bid_close + spread, bid_close + 1, 99)
    # Prices only: no draw reads them, so trades, volumes and everything else stay as drawn.
    decided_minute, decided_outcome = decision_minutes(bracket, floor, cap, day_start, *observations)
    bid_close, ask_close = _decided_book(bid_close, ask_close, minute, decided_minute[market],
                                         decided_outcome[market], reprice_minutes, decided_quote_cents)
    ticker = markets["ticker"].to_numpy()[market]
    first_of_market = np.r_[True, market[1:] != market[:-1]]
    bid_open = np.where(first_of_market, bid_close, np.roll(bid_close, 1))
    ask_open = np.where(first_of_market, ask_close, np.roll(ask_close, 1))
    traded = rng.random(len(mid)) < 0.3
    at_ask = rng.random(len(mid)) < 0.5
    trade_px = np.where(at_ask, ask_close, bid_close)
    volume = np.where(traded, 1 + rng.poisson(25, len(mid)), 0).astype(float)
    open_interest = pd.Series(volume).groupby(market).cumsum().to_numpy() * 0.6

    def nullable(x):
        return np.where(traded, x, np.nan)

    candles = pd.DataFrame({
        "market_ticker": ticker,
        "end_period_ts": epoch0 + (minute + 1) * 60,
        "yes_bid_open": bid_open,
        "yes_bid_high": np.maximum(bid_open, bid_close),
        "yes_bid_low": np.minimum(bid_open, bid_close),
        "yes_bid_close": bid_close,
        "yes_ask_open": ask_open,
        "yes_ask_high": np.maximum(ask_open, ask_close),
        "yes_ask_low": np.minimum(ask_open, ask_close),
        "yes_ask_close": ask_close,
        "price_open": nullable(trade_px),
        "price_high": nullable(trade_px),
        "price_low": nullable(trade_px),
        "price_close": nullable(trade_px),
        "price_mean": nullable(trade_px),
        "volume": volume,
        "open_interest": np.round(open_interest),
    })
    markets = markets[markets["event_date"] >= start].reset_index(drop=True)
    return markets, candles[candles["market_ticker"].isin(set(markets["ticker"]))].reset_index(drop=True)


def _bracket_probability(bracket, mu, sigma, floor, cap, seen_max) -> np.ndarray:
    """P(final high lands in the bracket | high ~ N(mu, sigma), high >= the max already seen).

    Whole-degree settlement: the bracket pays on the continuous [lo, hi) of ``bracket_bounds``.
    """
    from scipy.special import ndtr  # here, like lfilter: the CLI imports this module at start-up

    lo, hi = bracket_bounds(bracket, floor, cap)
    observed_floor = seen_max - 0.5
    lo_eff = np.maximum(lo, observed_floor)
    mass_above_seen = 1 - ndtr((observed_floor - mu) / sigma)
    in_bracket = np.clip(ndtr((hi - mu) / sigma) - ndtr((lo_eff - mu) / sigma), 0, None)
    return np.clip(in_bracket / np.maximum(mass_above_seen, 1e-12), 0, 1)


def generate(cities: list[str], start: date, end: date, seed: int, *,
             market_skill: float = DEFAULT_MARKET_SKILL, reprice_minutes: int = DEFAULT_REPRICE_MINUTES,
             decided_quote_cents: int = DEFAULT_DECIDED_QUOTE_CENTS) -> DemoData:
    parts = [generate_city(c, start, end, seed, market_skill=market_skill, reprice_minutes=reprice_minutes,
                           decided_quote_cents=decided_quote_cents) for c in cities]
    return DemoData(*(pd.concat([getattr(p, f) for p in parts], ignore_index=True)
                      for f in ("markets", "candles", "weather_minutes", "climate_daily", "forecasts",
                                "series_fees")))



def load_demo(engine, cities: list[str], start: date, end: date, seed: int, *,
              market_skill: float = DEFAULT_MARKET_SKILL, reprice_minutes: int = DEFAULT_REPRICE_MINUTES,
              decided_quote_cents: int = DEFAULT_DECIDED_QUOTE_CENTS, on_city_done=None) -> dict[str, int]:
    """Generate and upsert each city's demo data in its own transaction; returns rows per table."""
    from kwx.data.store import upsert_frames

    totals: dict[str, int] = {}
    for city in cities:
        data = generate_city(city, start, end, seed, market_skill=market_skill, reprice_minutes=reprice_minutes,
                             decided_quote_cents=decided_quote_cents)
        written = upsert_frames(engine, data.frames())
        for name, rows in written.items():
            totals[name] = totals.get(name, 0) + rows
        if on_city_done is not None:
            on_city_done(city, written)
    return totals
