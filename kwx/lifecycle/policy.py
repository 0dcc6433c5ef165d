"""The promotion policy for forward windows (pure): gates on the window's cross-validated scores, and the
health of its model family, read from how its most recent evaluated windows did on their realized weeks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from kwx.config import AcceptanceGates, ForwardGates, Lifecycle
from kwx.lifecycle.drift import realized_checks
from kwx.registry.promotion import Check, metric_gate


def forward_gates(window_metrics: dict[str, float], gates: ForwardGates) -> list[Check]:
    """The window's out-of-fold scores held to ``lifecycle.gates``."""
    return [
        metric_gate("cv log loss <= lifecycle.gates.max_cv_log_loss", window_metrics, "cv_calibrated_log_loss",
                 gates.max_cv_log_loss, at_most=True),
        metric_gate("cv ECE <= lifecycle.gates.max_cv_ece", window_metrics, "cv_calibrated_ece", gates.max_cv_ece,
                 at_most=True),
        metric_gate("cv Brier <= lifecycle.gates.max_cv_brier", window_metrics, "cv_calibrated_brier",
                 gates.max_cv_brier, at_most=True),
        metric_gate("cv Brier skill >= lifecycle.gates.min_cv_brier_skill", window_metrics, "cv_brier_skill",
                 gates.min_cv_brier_skill, at_most=False),
    ]


@dataclass(frozen=True)
class EvaluatedWindow:
    """A version of the family whose trading (test) week has been scored, with its realized test metrics."""

    version: str
    window: str
    test_end: date
    metrics: dict[str, float]


def family_health(evaluated: list[EvaluatedWindow], lifecycle: Lifecycle, acceptance: AcceptanceGates) -> Check:
    """Of the ``lifecycle.recent_windows`` most recent evaluated windows, at least ``min_healthy_windows``
    passed the acceptance gates on their realized weeks; a family with fewer evaluated windows than that
    needs every one of them to have passed (a new family, with none, starts healthy)."""
    recent = sorted(evaluated, key=lambda w: (w.test_end, int(w.version)), reverse=True)[:lifecycle.recent_windows]
    verdicts = {w.window: [c for c in realized_checks(w.metrics, acceptance) if not c.passed] for w in recent}
    passed = sum(not failing for failing in verdicts.values())
    needed = min(lifecycle.min_healthy_windows, len(recent))
    name = "family health: recent evaluated windows passing acceptance >= lifecycle.min_healthy_windows"
    if not recent:
        return Check(name, True, "0 of 0", needed, "no evaluated window yet (a new family)")
    detail = "; ".join(f"{window} failed {', '.join(c.name for c in failing)}"
                       for window, failing in verdicts.items() if failing)
    return Check(name, passed >= needed, f"{passed} of {len(recent)}", needed, detail)
