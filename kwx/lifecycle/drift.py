"""Realized quality of models on settled days, and the drift alarm over it: pure, no IO.

``kwx.lifecycle.monitor`` gathers the rows (the days a Production family traded, scored as training scores a
test week) and logs the numbers; the rules that turn them into alarms and verdicts live here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from kwx.config import AcceptanceGates, DriftThresholds
from kwx.domain.metrics import brier, brier_skill, prefixed_scores
from kwx.registry.promotion import Check, metric_gate, window_ece_gate

QUALITY_KEYS = ("rolling_ece", "rolling_brier", "rolling_market_brier", "rolling_market_ece", "rolling_brier_skill",
                "rolling_rows", "rolling_unlocked_rows", "rolling_comparable_rows", "rolling_days")


def rolling_quality(y, p_model, p_market, locked, event_date) -> dict[str, float]:
    """Pooled quality of the model over settled rows, row-aligned arrays (``score_test_rows`` predictions).

    ``rolling_ece`` / ``rolling_brier``: the model on unlocked rows (locked ones are exact by rule and would
    flatter it); ``rolling_market_*`` and ``rolling_brier_skill`` (1 − Brier_model / Brier_market): unlocked rows
    the market quotes, where the two compete. Counts: all rows, unlocked, comparable, and distinct
    ``event_date`` days. Empty row sets give NaN scores and zero counts, never an error.
    """
    y = np.asarray(y, dtype=float)
    p_model = np.asarray(p_model, dtype=float)
    p_market = np.asarray(p_market, dtype=float)
    unlocked = ~np.asarray(locked, dtype=bool)
    comparable = unlocked & ~np.isnan(p_market)
    model = prefixed_scores("model", y[unlocked], p_model[unlocked], ("ece", "brier"))
    market = prefixed_scores("market", y[comparable], p_market[comparable], ("ece", "brier"))
    days = np.asarray(event_date)
    return {
        "rolling_ece": model["model_ece"],
        "rolling_brier": model["model_brier"],
        "rolling_market_brier": market["market_brier"],
        "rolling_market_ece": market["market_ece"],
        "rolling_brier_skill": brier_skill(y[comparable], p_model[comparable], p_market[comparable]),
        "rolling_rows": float(len(y)),
        "rolling_unlocked_rows": float(unlocked.sum()),
        "rolling_comparable_rows": float(comparable.sum()),
        "rolling_days": float(len(np.unique(days))) if len(days) else 0.0,
    }


def loop_quality(p_model, p_market, edge_cents, size_fraction, label) -> dict[str, float]:
    """What the live loop did with a version over its week, from its rt_signals rows (row-aligned arrays, NaN
    where missing; ``label`` the settled outcome of each row's market).

    ``loop_signals``: rows with a model probability; ``loop_sized_signals``: rows it sized (``size_fraction``
    > 0), whose mean ``edge_cents`` is ``loop_mean_edge_cents``; ``loop_traded_brier_model`` / ``_market``: the
    realized Brier of ``p_model`` and ``p_market`` on the sized rows with a label and both probabilities.
    No rows give zero counts and NaN for the rest.
    """
    p_model = np.asarray(p_model, dtype=float)
    p_market = np.asarray(p_market, dtype=float)
    edge = np.asarray(edge_cents, dtype=float)
    label = np.asarray(label, dtype=float)
    sized = np.nan_to_num(np.asarray(size_fraction, dtype=float), nan=0.0) > 0
    traded = sized & ~np.isnan(label) & ~np.isnan(p_model) & ~np.isnan(p_market)
    sized_edges = edge[sized & ~np.isnan(edge)]
    return {
        "loop_signals": float((~np.isnan(p_model)).sum()),
        "loop_sized_signals": float(sized.sum()),
        "loop_mean_edge_cents": float(sized_edges.mean()) if len(sized_edges) else float("nan"),
        "loop_traded_brier_model": brier(label[traded], p_model[traded]) if traded.any() else float("nan"),
        "loop_traded_brier_market": brier(label[traded], p_market[traded]) if traded.any() else float("nan"),
    }


@dataclass(frozen=True)
class DriftVerdict:
    """``breaches``: one alarm line per breached threshold; ``notes``: why a number could not be held to its
    threshold (too few days, NaN)."""

    breaches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# (quality key, label in a line, threshold field, the quality must be at most the threshold)
_DRIFT_RULES = (
    ("rolling_ece", "rolling ECE", "max_ece", True),
    ("rolling_brier", "rolling Brier", "max_brier", True),
    ("rolling_brier_skill", "rolling Brier skill", "min_brier_skill", False),
)


def drift_breaches(quality: dict[str, float], thresholds: DriftThresholds, *, name: str,
                   span: tuple[date, date] | None) -> DriftVerdict:
    """Hold ``rolling_quality`` of family ``name`` over ``span`` (first..last settled day) to ``thresholds``.

    Fewer than ``min_days`` settled days raise no alarm (a day or two of a few markets is noise) and say so
    in a note; a NaN metric (no rows to compute it on) never breaches and is noted too.
    """
    days = int(quality.get("rolling_days", 0) or 0)
    where = f"over {days} settled days" + (f" ({span[0]}..{span[1]})" if span else "")
    if days < thresholds.min_days:
        return DriftVerdict([], [f"{name}: {days} settled days in the span, fewer than drift.min_days "
                                 f"{thresholds.min_days}: no drift alarm"])
    breaches, notes = [], []
    for key, label, bound, at_most in _DRIFT_RULES:
        value = quality.get(key, float("nan"))
        limit = getattr(thresholds, bound)
        if value is None or math.isnan(value):
            notes.append(f"{name}: {label} is NaN {where} (no rows to compute it on): not checked")
        elif value > limit if at_most else value < limit:
            breaches.append(f"{name}: {label} {value:.3f} {'>' if at_most else '<'} drift.{bound} {limit:g} {where}")
    return DriftVerdict(breaches, notes)


def realized_checks(metrics: dict[str, float], acceptance: AcceptanceGates) -> list[Check]:
    """The acceptance gates held to ONE window's realized test-week metrics (``window_scores`` keys), by the
    acceptance rule: its ECE only when the week holds ``min_window_ece_days`` climate days of unlocked rows; its
    Brier skill as a vote (a week's day-block interval is too wide to be evidence: ``family_health`` counts the
    weeks that beat the market, as acceptance counts ``min_windows_beating_market``).

    A missing or NaN metric is a failing check saying why; this never raises.
    """
    missing = "is not logged: the week has not been scored"
    days = metrics.get("test_unlocked_days")
    enough_days = None if days is None else int(days >= acceptance.min_window_ece_days)
    return [
        window_ece_gate("realized unlocked test ECE <= max_ece (weeks with enough days)",
                        metrics.get("test_unlocked_ece"), enough_days, 1, acceptance),
        metric_gate("realized unlocked test Brier <= max_brier", metrics, "test_unlocked_brier", acceptance.max_brier,
                    at_most=True, missing=missing),
        metric_gate("realized Brier skill >= min_brier_skill", metrics, "test_brier_skill", acceptance.min_brier_skill,
                    at_most=False, missing=missing),
    ]
