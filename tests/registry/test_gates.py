"""Acceptance gates on a training run's parent metrics, without MLflow: each gate at its threshold."""

from __future__ import annotations

import pytest

from kwx.config import TrainConfig
from kwx.registry.promotion import metric_gates

ACCEPTANCE = {"max_ece": 0.05, "max_brier": 0.2, "min_windows": 4, "min_brier_skill": 0.02,
              "min_windows_beating_market": 0.5}
# Every gate exactly at its threshold: all pass (bounds are inclusive).
AT_THRESHOLD = {"mean_test_unlocked_ece": 0.05, "pooled_test_unlocked_ece": 0.05, "mean_test_unlocked_brier": 0.2,
                "pooled_test_unlocked_brier": 0.2,
                "mean_test_brier_skill": 0.02, "pooled_brier_skill": 0.02, "mean_test_beats_market": 0.5,
                "n_windows": 4.0}
# parent metric -> (check name, a value just past the threshold, the acceptance field it is held to)
GATES = {
    "mean_test_unlocked_ece": ("mean unlocked test ECE <= max_ece", 0.0501, "max_ece"),
    "pooled_test_unlocked_ece": ("pooled unlocked test ECE <= max_ece", 0.0501, "max_ece"),
    "mean_test_unlocked_brier": ("mean unlocked test Brier <= max_brier", 0.2001, "max_brier"),
    "pooled_test_unlocked_brier": ("pooled unlocked test Brier <= max_brier", 0.2001, "max_brier"),
    "mean_test_brier_skill": ("mean Brier skill >= min_brier_skill", 0.0199, "min_brier_skill"),
    "pooled_brier_skill": ("pooled Brier skill >= min_brier_skill", -0.3, "min_brier_skill"),
    "mean_test_beats_market": ("share of windows beating the market >= min_windows_beating_market", 0.25,
                               "min_windows_beating_market"),
    "n_windows": ("windows >= min_windows", 3.0, "min_windows"),
}
CONFIG = TrainConfig.model_validate({"city": "chicago", "bracket": "between", "start": "2025-07-01",
                                     "end": "2025-07-24", "train_days": 12, "test_days": 4,
                                     "acceptance": ACCEPTANCE})


def _checks(metrics: dict[str, float]) -> dict[str, object]:
    return {c.name: c for c in metric_gates(metrics, CONFIG)}


def test_one_check_per_gate_all_passing_at_their_thresholds():
    checks = _checks(AT_THRESHOLD)
    assert list(checks) == [name for name, _, _ in GATES.values()]
    assert all(c.passed for c in checks.values()), [c.line() for c in checks.values() if not c.passed]
    assert checks["pooled Brier skill >= min_brier_skill"].threshold == 0.02
    assert checks["windows >= min_windows"].value == 4


@pytest.mark.parametrize("key", GATES)
def test_each_gate_fails_just_past_its_threshold(key):
    name, failing_value, field = GATES[key]
    checks = _checks({**AT_THRESHOLD, key: failing_value})
    assert [c.name for c in checks.values() if not c.passed] == [name]
    check = checks[name]
    assert (check.value, check.threshold, check.detail) == (pytest.approx(failing_value), ACCEPTANCE[field], "")


@pytest.mark.parametrize("key", GATES)
def test_a_metric_the_run_never_logged_fails_saying_so(key):
    checks = _checks({k: v for k, v in AT_THRESHOLD.items() if k != key})
    check = checks[GATES[key][0]]
    assert not check.passed and check.value is None
    assert check.detail == f"{key} was not logged by this run: retrain it"
    assert sum(not c.passed for c in checks.values()) == 1


def test_nan_skill_fails_with_a_reason_instead_of_raising():
    checks = _checks({**AT_THRESHOLD, "pooled_brier_skill": float("nan"), "mean_test_brier_skill": float("nan")})
    for name in ("pooled Brier skill >= min_brier_skill", "mean Brier skill >= min_brier_skill"):
        assert not checks[name].passed and checks[name].value is None
        assert "is NaN" in checks[name].detail and "no unlocked rows the market quotes" in checks[name].detail
    assert "NaN" in checks["pooled Brier skill >= min_brier_skill"].line()


@pytest.mark.parametrize(("field", "value"), [("min_brier_skill", -1.5), ("min_brier_skill", float("nan")),
                                              ("min_brier_skill", float("inf")),
                                              ("min_windows_beating_market", 1.2),
                                              ("min_windows_beating_market", -0.1),
                                              ("min_windows_beating_market", float("nan"))])
def test_new_gate_bounds_are_validated(field, value):
    with pytest.raises(ValueError, match=f"acceptance.{field}"):
        TrainConfig.model_validate({**CONFIG.model_dump(), "acceptance": {field: value}})
