"""Config validation: every bad field is named with its rule; shipped configs are valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kwx.cities import CITIES
from kwx.config import Calibration, ConfigError, MatrixConfig, RtConfig, TrainConfig, load_config, parse_config

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


RT_MINIMAL = {"markets": [{"city": "chicago", "bracket": "between"}]}
# Every money field of the rt config: never read from text. Counts are StrictInt already (``trials: true`` above).
MONEY = ["execution.bankroll_dollars", "execution.max_daily_loss_dollars", "execution.taker_fallback_cents",
         "risk.kelly_alpha", "risk.max_spread_cents", "risk.tau_open_cents", "risk.slip_per_leg_cents",
         "risk.max_bankroll_pct_city_day_side", "fees.taker_rate", "fees.maker_rate"]


def _rt(path: str, value) -> dict:
    section, name = path.split(".")
    # the fee rates override the exchange's fees together: the other one set to a valid number
    partner = {"taker_rate": {"maker_rate": 0.0}, "maker_rate": {"taker_rate": 0.07}}.get(name, {}) \
        if section == "fees" else {}
    return {**RT_MINIMAL, section: {**partner, name: value}}


def _rt_problems(path: str, value) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(_rt(path, value), RtConfig)
    return info.value.problems


def test_the_shipped_rt_and_matrix_configs_validate():
    rt = load_config(REPO / "configs" / "rt.yaml", RtConfig)
    assert (rt.execution.bankroll_dollars, rt.execution.max_open_orders, rt.fees.contracts) == (10_000.0, 20, 10)
    assert load_config(REPO / "configs" / "matrix.yaml", MatrixConfig).paths()


@pytest.mark.parametrize("path", MONEY)
def test_money_is_never_read_from_text(path):
    value = 5 if path.endswith("_cents") else 1  # an integer valid in the field
    assert _rt_problems(path, str(value)) == [f"{path}: Input should be a valid number (got '{value}')"]
    assert any(f"{path}: Input should be a valid number (got True)" in p for p in _rt_problems(path, True))
    section, name = path.split(".")
    read = getattr(getattr(parse_config(_rt(path, value), RtConfig), section), name)
    assert read == value and isinstance(read, float)  # a YAML integer is a number of dollars or cents


def test_yaml_exponents_are_numbers_and_their_bounds_judge_them(tmp_path):
    config = tmp_path / "rt.yaml"
    config.write_text("markets: [{city: chicago, bracket: between}]\nexecution: {bankroll_dollars: 1e4}\n")
    assert load_config(config, RtConfig).execution.bankroll_dollars == 10_000.0
    config.write_text("markets: [{city: chicago, bracket: between}]\nexecution: {bankroll_dollars: 1e300}\n")
    with pytest.raises(ConfigError, match=r"bankroll_dollars: Input should be less than or equal to 1000000000 "
                                          r"\(got 1e\+300\)"):
        load_config(config, RtConfig)


@pytest.mark.parametrize(("path", "largest"), [
    ("execution.bankroll_dollars", 10**9), ("execution.max_daily_loss_dollars", 10**9),
    ("execution.max_position_contracts", 10**6), ("execution.max_open_orders", 10**4), ("fees.contracts", 10**6),
])
def test_money_and_counts_have_an_upper_bound(path, largest):
    section, name = path.split(".")
    assert getattr(getattr(parse_config(_rt(path, largest), RtConfig), section), name) == largest
    assert _rt_problems(path, largest + 1) == [f"{path}: Input should be less than or equal to {largest} "
                                               f"(got {largest + 1})"]


@pytest.mark.parametrize("path", ["execution.max_position_contracts", "execution.max_open_orders"])
def test_counts_are_whole_numbers(path):
    assert _rt_problems(path, "20") == [f"{path}: Input should be a valid integer (got '20')"]
    assert _rt_problems(path, 20.0) == [f"{path}: Input should be a valid integer (got 20.0)"]


@pytest.mark.parametrize(("changes", "expected"), [
    ({"calibration": {"isotonic_min_rows": "1000"}}, "calibration.isotonic_min_rows: Input should be a valid integer"),
    ({"calibration": {"isotonic_min_rows": 10**12}}, "calibration.isotonic_min_rows: Input should be less than or "
                                                     "equal to 1000000000"),
    ({"calibration": {"isotonic_min_events": 8.0}}, "calibration.isotonic_min_events: Input should be a valid integer"),
    ({"acceptance": {"min_windows": "4"}}, "acceptance.min_windows: Input should be a valid integer"),
    ({"acceptance": {"min_windows": 10**6}}, "acceptance.min_windows: Input should be less than or equal to 3650"),
    ({"pilot": {"directory": "x", "test_rows": 10**12}}, "pilot.test_rows: Input should be less than or equal to"),
    ({"risk": {"kelly_alpha": "0.5"}}, "risk.kelly_alpha: Input should be a valid number"),
])
def test_train_config_counts_and_risk_are_strict_and_bounded(changes, expected):
    assert any(expected in p for p in _problems(**changes)), _problems(**changes)


@pytest.mark.parametrize("halt_file", ["/", "", ".", "..", "halts/..", "/data/", "HALT\0", "{tmp}"])
def test_the_halt_file_must_be_a_file_path(halt_file, tmp_path):
    (problem,) = _rt_problems("execution.halt_file", halt_file.format(tmp=tmp_path))
    assert problem.startswith("execution.halt_file: must be a file path such as /data/HALT, not ")


@pytest.mark.parametrize("halt_file", ["HALT", "{tmp}/HALT", "{tmp}/not-yet-mounted/HALT", "/data/HALT"])
def test_a_halt_file_may_not_exist_yet_nor_its_directory(halt_file, tmp_path):
    path = halt_file.format(tmp=tmp_path)
    assert parse_config(_rt("execution.halt_file", path), RtConfig).execution.halt_file == path


@pytest.mark.parametrize("url", ["javascript:alert(1)", "http://:5000/", "https://user@/x", "http://[::1", "//host/x"])
def test_base_urls_are_http_with_a_host(url):
    with pytest.raises(ConfigError) as info:
        parse_config({**RT_MINIMAL, "kalshi_base_url": url}, RtConfig)
    assert info.value.problems == [f"kalshi_base_url: must be an http(s) URL with a host, such as https://host/path "
                                   f"(got {url!r})"]


def test_fee_rates_override_the_exchange_together_or_not_at_all():
    assert RtConfig.model_validate(RT_MINIMAL).fees.override is None  # the exchange's fee data
    both = RtConfig.model_validate({**RT_MINIMAL, "fees": {"taker_rate": 0.07, "maker_rate": 0.0175}})
    assert both.fees.override == (0.07, 0.0175)
    for alone in ({"taker_rate": 0.07}, {"maker_rate": 0.0}):
        with pytest.raises(ConfigError, match="set both taker_rate and maker_rate"):
            parse_config({**RT_MINIMAL, "fees": alone}, RtConfig)
