"""Config validation: every bad field is named with its rule; shipped configs are valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kwx.cities import CITIES
from kwx.config import Calibration, ConfigError, TrainConfig, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("elasticnet_*.yaml"))
MINIMAL = {"city": "chicago", "bracket": "between", "start": "2025-05-01", "end": "2025-09-23"}


def _problems(**changes) -> list[str]:
    data = {**MINIMAL, **changes}
    with pytest.raises(ConfigError) as info:
        parse_config(data, TrainConfig)
    return info.value.problems


def test_defaults_match_the_documented_values():
    cfg = parse_config(MINIMAL, TrainConfig)
    assert (cfg.train_days, cfg.test_days, cfg.step_days, cfg.trials, cfg.cv_splits) == (90, 7, 7, 40, 4)
    assert cfg.blend_weight == 0.7 and cfg.calibration.isotonic_min_rows == 1000
    risk = cfg.risk
    assert (risk.kelly_alpha, risk.max_spread_cents, risk.tau_open_cents, risk.tau_close_cents) == (0.25, 3, 1.0, 0.5)
    assert (risk.slip_per_leg_cents, risk.max_bankroll_pct_city_day_side) == (1, 0.10)


def test_ships_one_valid_config_per_city_and_bracket():
    assert (REPO / "configs" / "elasticnet_chi_between.yaml") in CONFIGS
    pairs = {(c.city, c.bracket) for c in (load_config(p) for p in CONFIGS)}
    assert pairs == {(city, b) for city in CITIES for b in ("between", "greater", "less")}


def test_issue_example_names_all_three_problems(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "blend_weight": 1.5, "colour": "blue", "city": "gotham"}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = "\n".join(info.value.problems)
    assert "blend_weight: Input should be less than or equal to 1 (got 1.5)" in text
    assert "colour: unknown key" in text
    assert "city: unknown city 'gotham'" in text
    assert len(info.value.problems) == 3


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"end": "2025-04-01"}, "start (2025-05-01) must be before end (2025-04-01)"),
        ({"end": "2025-06-01"}, "no walk-forward window fits"),
        ({"bracket": "above"}, "bracket: Input should be 'between', 'greater' or 'less'"),
        ({"penalties": []}, "penalties: List should have at least 1 item"),
        ({"penalties": ["l1", "l1"]}, "penalties must not repeat values"),
        ({"penalties": ["lasso"]}, "penalties.0: Input should be 'l1', 'l2' or 'elasticnet'"),
        ({"trials": "many"}, "trials: Input should be a valid integer"),
        ({"cv_splits": 1}, "cv_splits: Input should be greater than or equal to 2"),
        ({"feature_set": "everything"}, "feature_set: unknown feature set 'everything'; known: baseline"),
        ({"risk": {"kelly_alpha": 0}}, "risk.kelly_alpha: Input should be greater than 0"),
        ({"risk": {"kelly_alpha": 1.2}}, "risk.kelly_alpha: Input should be less than or equal to 1"),
        ({"risk": {"tau_open_cents": 0.2}}, "tau_close_cents (0.5) must be <= tau_open_cents (0.2)"),
        ({"risk": {"max_bankroll_pct_city_day_side": 0}}, "risk.max_bankroll_pct_city_day_side"),
        ({"search": {"C_min": 0}}, "search.C_min: Input should be greater than 0"),
        ({"search": {"C_min": 5, "C_max": 1}}, "C_min (5.0) must be <= C_max (1.0)"),
        ({"search": {"l1_ratio_max": 1.5}}, "search.l1_ratio_max: Input should be less than or equal to 1"),
        ({"search": {"class_weight": ["heavy"]}}, "search.class_weight.0: Input should be 'none' or 'balanced'"),
        ({"calibration": {"method": "beta"}}, "calibration.method"),
        ({"acceptance": {"min_windows": 0}}, "acceptance.min_windows"),
        ({"vc_features": {"nyc": {"minute_features": True}}}, "nyc is in EXCLUDED_VC_CITIES"),
        ({"vc_features": {"gotham": {}}}, "unknown city 'gotham'"),
        ({"pilot": {"directory": "x", "windows": ["w1"]}}, "not of the form win_YYYYMMDD_YYYYMMDD"),
        ({"search": {"colour": 1}}, "search.colour: unknown key"),
    ],
)
def test_each_rule_names_field_and_rule(changes, expected):
    assert any(expected in p for p in _problems(**changes)), _problems(**changes)


def test_yaml_errors_name_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("city: chicago\nbracket: [between\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_config(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "absent.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


def test_overrides_apply_dotted_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    cfg = load_config(path, overrides={"trials": 5, "risk.kelly_alpha": 0.5})
    assert cfg.trials == 5 and cfg.risk.kelly_alpha == 0.5
    with pytest.raises(ConfigError, match="trials"):
        load_config(path, overrides={"trials": 0})


def test_fingerprint_is_stable_and_sensitive():
    a = parse_config(MINIMAL, TrainConfig)
    assert a.fingerprint() == parse_config(dict(MINIMAL), TrainConfig).fingerprint()
    assert a.fingerprint() != parse_config({**MINIMAL, "trials": 41}, TrainConfig).fingerprint()


@pytest.mark.parametrize(("method", "rows", "events", "expected"), [
    ("auto", 999, 50, "sigmoid"), ("auto", 1000, 50, "isotonic"), ("auto", 10**6, 7, "sigmoid"),
    ("auto", 1000, 8, "isotonic"), ("sigmoid", 10**6, 50, "sigmoid"), ("isotonic", 5, 1, "isotonic"),
])
def test_calibration_method_switches_at_threshold(method, rows, events, expected):
    assert Calibration(method=method).method_for(rows, events) == expected


def test_vc_defaults_follow_the_exclusion():
    cfg = parse_config(MINIMAL, TrainConfig)
    assert cfg.vc_for("chicago").minute_features is True
    assert cfg.vc_for("nyc").minute_features is False
