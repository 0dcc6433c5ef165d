"""The lock margin a dataset needs: the stored observations' climate-day maximum against the settled high.

A lock (``markets.locked_outcomes``) trusts the running maximum less ``margin_f``, rounded half up as the
climate report rounds. The running maximum only rises, so the day's final observed maximum is the worst
case. With T the settled whole-°F high, a lock misjudges an outcome exactly when that bound passes T: the
*greater than T* market locks YES and loses, and every other wrong lock needs the same bound. That is when
the observed maximum reaches T + 0.5 + margin. A lock comes late when the bound never reaches T before the
close (the *greater than T − 1* market, which settles YES, stays open): the observations read low, or the
margin holds them back.

Pure: frames in, frames and dicts out; ``kwx.audit.lock_margin`` loads the data and reports.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kwx.cities import City
from kwx.domain.features import epoch_seconds
from kwx.domain.markets import climate_days_from_epoch, locked_outcomes

# The configs bound lock_margin_f to [0, 5] °F: the recommendation searches that range.
MAX_LOCK_MARGIN_F = 5.0
# Fewer settled days than about a season leave the largest overshoot, and the recommendation, a thin estimate.
THIN_SAMPLE_DAYS = 90
# How many of the worst days a study lists (its counts are always complete).
LISTED_DAYS = 5
GAP_QUANTILES = {"min": 0.0, "p1": 0.01, "p50": 0.5, "p99": 0.99, "max": 1.0}


def climate_day_gaps(weather: pd.DataFrame, settlements: pd.Series, city: City) -> pd.DataFrame:
    """Per settled climate day (LST) with observations, in date order: the observations' maximum
    (``observed_max_f``), the settled whole-°F high (``settled_f``) and ``gap_f`` = observed − settled."""
    observed = weather[weather["temp_f"].notna()]
    day = climate_days_from_epoch(epoch_seconds(observed["ts_utc"]), city)
    maxima = pd.Series(observed["temp_f"].to_numpy(dtype=float)).groupby(day).max()
    maxima.index = maxima.index.to_numpy().astype("datetime64[D]").astype(object)
    frame = pd.DataFrame({"observed_max_f": maxima, "settled_f": pd.Series(settlements, dtype=float)}).dropna()
    frame["gap_f"] = frame["observed_max_f"] - frame["settled_f"]
    return frame.sort_index().rename_axis("date")


def _greater_locks_yes(days: pd.DataFrame, floors: np.ndarray, margin_f: float) -> np.ndarray:
    """Whether a *greater than floor* market locks YES on the day's observed maximum: the lock rule itself."""
    n = len(days)
    outcome = locked_outcomes(np.full(n, "greater", dtype=object), floors, np.full(n, np.nan),
                              days["observed_max_f"].to_numpy(dtype=float), margin_f)
    return outcome == 1.0


def misjudged(days: pd.DataFrame, margin_f: float) -> np.ndarray:
    """The days (of ``climate_day_gaps``) on which a lock at ``margin_f`` decided an outcome the settlement
    contradicted."""
    return _greater_locks_yes(days, days["settled_f"].to_numpy(dtype=float), margin_f)


def late(days: pd.DataFrame, margin_f: float) -> np.ndarray:
    """The days on which a lock at ``margin_f`` never reached the settled high before the close."""
    return ~_greater_locks_yes(days, days["settled_f"].to_numpy(dtype=float) - 1, margin_f)


def margin_grid(step_f: float) -> np.ndarray:
    """The margins a recommendation is chosen from: 0, step, 2·step, … up to ``MAX_LOCK_MARGIN_F`` °F."""
    if not (np.isfinite(step_f) and 0 < step_f <= MAX_LOCK_MARGIN_F):
        raise ValueError(f"margin step must be in (0, {MAX_LOCK_MARGIN_F:g}] °F, got {step_f!r}")
    steps = int(np.floor(MAX_LOCK_MARGIN_F / step_f + 1e-9))
    # Rounded so that 3 × 0.1 is the 0.3 a config would hold.
    return np.round(np.arange(steps + 1) * step_f, 6)


def smallest_safe_margin(days: pd.DataFrame, step_f: float) -> float | None:
    """The smallest margin of ``margin_grid(step_f)`` that misjudges none of ``days``; None when none does.

    It is the smallest grid point above (largest gap − 0.5 °F), at least 0; searched with the lock rule
    rather than computed, so it agrees with what trading would have done to the last floating-point bit.
    """
    return next((float(m) for m in margin_grid(step_f) if not misjudged(days, m).any()), None)


def lock_margin_study(days: pd.DataFrame, margin_f: float, step_f: float) -> dict:
    """Both directions of the gap between observed maximum and settled high, what ``margin_f`` did with it,
    and the recommended margin (``smallest_safe_margin``).

    The rounded comparison is the lock rule at margin 0: *above* days are those a margin of 0 misjudges,
    *below* days (the observations read low) those whose lock comes late even at 0. ``worst_misjudged``
    and ``reading_low`` are frames of the worst few such days (largest, lowest gap first).
    """
    if days.empty:
        raise ValueError("no settled day with observations to study")
    gap = days["gap_f"]
    above, below = misjudged(days, 0.0), late(days, 0.0)
    wrong = misjudged(days, margin_f)
    recommended = smallest_safe_margin(days, step_f)
    return {
        "days": len(days),
        "gap_f": {**{name: round(float(gap.quantile(q)), 3) for name, q in GAP_QUANTILES.items()},
                  "mean": round(float(gap.mean()), 3)},
        "rounded": {"above": float(above.mean()), "equal": float((~above & ~below).mean()),
                    "below": float(below.mean())},
        "margin_f": margin_f,
        "misjudged_days": int(wrong.sum()),
        "late_days": int(late(days, margin_f).sum()),
        "worst_misjudged": days[wrong].sort_values("gap_f", ascending=False, kind="stable").head(LISTED_DAYS),
        "reading_low_days": int(below.sum()),
        "reading_low": days[below].sort_values("gap_f", kind="stable").head(LISTED_DAYS),
        "recommended_margin_f": recommended,
        "recommended_late_days": None if recommended is None else int(late(days, recommended).sum()),
        "step_f": step_f,
        "thin_sample": len(days) < THIN_SAMPLE_DAYS,
        "passed": not wrong.any(),
    }
