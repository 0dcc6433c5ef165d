"""Bad input: one clear error line naming the option or field and its rule, exit 2, no traceback, nothing written.

Each case runs through the CLI as a user would, in a temporary directory with its own SQLite database and
MLflow store (the autouse fixture chdirs there), so no case touches a user's mlruns or kwx.db.
"""

from __future__ import annotations

import errno
import sqlite3
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy.exc
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from kwx.cli import app
from kwx.config import ConfigError, TrainConfig, parse_config
from kwx.data.db import make_engine
from kwx.training import runner
from tests.conftest import demo_database

cli = CliRunner()

TRAIN = ("city: chicago\nbracket: between\nstart: 2025-07-01\nend: 2025-07-24\ntrain_days: 12\ntest_days: 4\n"
         "step_days: 4\ntrials: 2\ncv_splits: 3\n")
RT = "markets:\n  - {city: chicago, bracket: between}\n"
REPLAY = ("serve-rt", "-c", "rt.yaml", "--replay", "2025-07-01")
TRAIN_PLAN = ("train", "-c", "train.yaml", "--plan")
BACKTEST = ("backtest", "-c", "rt.yaml", "--start", "2025-07-01", "--end", "2025-07-02")
SIMULATE = ("simulate", "-c", "train.yaml", "--start", "2025-07-01", "--end", "2025-07-02")
UNREACHABLE_PG = "postgresql+psycopg2://kwx@127.0.0.1:1/kwx"
DASHBOARD = ("dashboard", "-c", "rt.yaml", "--port", "0")


def _train(**replace: str) -> str:
    """The small train config with whole lines replaced, by key."""
    return "".join(replace.get(line.split(":")[0], line) + "\n" for line in TRAIN.splitlines())


def _mlflow_runs(root: Path) -> list:
    store = root / "mlflow.db"
    if not store.exists():
        return []
    client = MlflowClient(f"sqlite:///{store}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def assert_one_error_line(result, *fragments: str, code: int = 2) -> str:
    """Exit ``code``, no escaped exception, and exactly one error line holding every fragment: kwx's ``error:``
    line, or click's usage error for an option's own bounds (``Invalid value for '--seed': ...``)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code == code, result.output
    errors = [line for line in result.output.splitlines()
              if line.startswith("error:") or "Invalid value for '--" in line]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A migrated, empty kwx.db plus a valid train and rt config in the working directory."""
    assert cli.invoke(app, ["db", "upgrade"]).exit_code == 0
    (tmp_path / "train.yaml").write_text(TRAIN)
    (tmp_path / "rt.yaml").write_text(RT)
    return tmp_path


# (arguments, fragments the error line must hold, files to write first)
CASES = {
    # Tracebacks today
    "report unknown run id": (("report", "--run-id", "deadbeef"), ["--run-id", "'deadbeef'"], {}),
    "promote unknown run id": (("promote", "--run-id", "deadbeef"), ["--run-id", "'deadbeef'"], {}),
    "backtest unknown run id": ((*BACKTEST, "--city", "chicago", "--bracket", "between", "--run-id", "deadbeef"),
                                ["--run-id", "'deadbeef'"], {}),
    "audit features unknown run id": (("audit", "features", "--run-id", "deadbeef"), ["--run-id", "'deadbeef'"], {}),
    "report quoted city": (("report", "--city", "chi'cago", "--bracket", "between"),
                           ["--city", "unknown city", "chi'cago", "known cities: austin"], {}),
    "promote quoted bracket": (("promote", "--city", "chicago", "--bracket", "betw'een"),
                               ["--bracket", "unknown bracket", "between, greater, less"], {}),
    "models list quoted city": (("models", "list", "--city", "x' or '1'='1", "--bracket", "less"),
                                ["--city", "unknown city"], {}),
    "models resolve unknown city": (("models", "resolve", "--city", "gotham", "--bracket", "less", "--date",
                                     "2025-07-01"), ["--city", "unknown city 'gotham'"], {}),
    "backtest quoted city": ((*BACKTEST, "--city", "a'b", "--bracket", "between"), ["--city", "unknown city"], {}),
    "audit features quoted city": (("audit", "features", "--city", "a'b", "--bracket", "between"),
                                   ["--city", "unknown city"], {}),
    "replay speed negative": ((*REPLAY, "--speed", "-5"), ["--speed", "positive, finite", "'-5'"], {}),
    "replay speed nan": ((*REPLAY, "--speed", "nan"), ["--speed", "'nan'"], {}),
    "replay speed inf": ((*REPLAY, "--speed", "inf"), ["--speed", "'inf'"], {}),
    "blend grid nan": ((*BACKTEST, "--blend-grid", "0.5:0.8:nan"), ["--blend-grid", "finite"], {}),
    "blend grid inf": ((*BACKTEST, "--blend-grid", "0.5:inf:0.1"), ["--blend-grid", "finite"], {}),
    "blend grid too fine": ((*BACKTEST, "--blend-grid", "0:1:1e-9"), ["--blend-grid", "more than 101"], {}),
    "blend grid two parts": ((*BACKTEST, "--blend-grid", "0.5:0.8"), ["--blend-grid", "START:STOP:STEP"], {}),
    "demo seed negative": (("data", "demo", "--seed", "-1"), ["--seed"], {}),
    "set unclosed list": ((*TRAIN_PLAN, "--set", "trials=[1,"), ["--set", "trials", "not valid YAML"], {}),
    "set impossible date": ((*TRAIN_PLAN, "--set", "start=2025-02-30"), ["start", "2025-02-30"], {}),
    "search-worker bad storage": (("search-worker", "-c", "train.yaml", "--optuna-storage", "bogus://x"),
                                  ["Optuna storage 'bogus://x'"], {}),
    "db upgrade unknown revision": (("db", "upgrade", "bogusrev"), ["'bogusrev'", "known revisions: head"], {}),
    "db downgrade unknown revision": (("db", "downgrade", "bogusrev"), ["'bogusrev'", "known revisions"], {}),
    "db url not a url": (("db", "upgrade", "--db-url", "/x"), ["--db-url", "'/x' is not a database URL"], {}),
    "db url port not a number": (("db", "current", "--db-url", "postgresql://u:pa/ss@h:notaport/x"),
                                 ["--db-url", "'postgresql://u:***@h:notaport/x' is not a database URL"], {}),
    "db url unsupported dialect": (("db", "upgrade", "--db-url", "mysql+nosuchdriver://"),
                                   ["--db-url", "unsupported database 'mysql+nosuchdriver'"], {}),
    "db url missing driver": (("data", "summary", "--db-url", "postgresql://127.0.0.1:1/x"),
                              ["--db-url", "no driver for 'postgresql'"], {}),
    "database unreachable": (("data", "summary", "--db-url", UNREACHABLE_PG), ["cannot reach database",
                                                                              "127.0.0.1:1"], {}),
    "config not utf-8": (TRAIN_PLAN, ["train.yaml", "not UTF-8"], {"train.yaml": TRAIN.encode() + b"# caf\xe9\n"}),
    "config impossible date": (TRAIN_PLAN, ["start: Input should be a valid date", "2025-02-30"],
                               {"train.yaml": _train(start="start: 2025-02-30")}),
    # Accepted silently today
    "duplicate key": (TRAIN_PLAN, ["duplicate key 'trials'", "first on line 8", "line 10"],
                      {"train.yaml": TRAIN + "trials: 5\n"}),
    "trials true": (TRAIN_PLAN, ["trials: Input should be a valid integer", "True"],
                    {"train.yaml": _train(trials="trials: true")}),
    "trials 1e12": (TRAIN_PLAN, ["trials: Input should be less than or equal to 10000"],
                    {"train.yaml": _train(trials="trials: 1000000000000")}),
    "C_max infinite": (TRAIN_PLAN, ["search.C_max: Input should be a finite number"],
                       {"train.yaml": TRAIN + "search: {C_max: .inf}\n"}),
    "seed 2**32": (TRAIN_PLAN, ["seed: Input should be less than or equal to 4294967295"],
                   {"train.yaml": TRAIN + "seed: 4294967296\n"}),
    "step_days overflows dates": (TRAIN_PLAN, ["step_days: Input should be less than or equal to 3650"],
                                  {"train.yaml": _train(step_days="step_days: 1000000000000")}),
    "tick_seconds tiny": (REPLAY, ["tick_seconds: Input should be greater than or equal to 0.5"],
                          {"rt.yaml": RT + "tick_seconds: 1.0e-9\n"}),
    "tau_open_cents infinite": (REPLAY, ["risk.tau_open_cents: Input should be a finite number"],
                                {"rt.yaml": RT + "risk: {tau_open_cents: .inf}\n"}),
    "bankroll infinite": (REPLAY, ["execution.bankroll_dollars: Input should be a finite number"],
                          {"rt.yaml": RT + "execution: {bankroll_dollars: .inf}\n"}),
    "model refresh infinite": (REPLAY, ["model_refresh_seconds: Input should be a finite number"],
                               {"rt.yaml": RT + "model_refresh_seconds: .inf\n"}),
    "contracts 1e29": (REPLAY, ["fees.contracts: Input should be less than or equal to 1000000"],
                       {"rt.yaml": RT + f"fees: {{contracts: {10**29}}}\n"}),
    "kalshi url not a url": (REPLAY, ["kalshi_base_url: must be an http(s) URL", "'not a url'"],
                             {"rt.yaml": RT + "kalshi_base_url: not a url\n"}),
    "vc url not http": (REPLAY, ["vc_base_url: must be an http(s) URL", "'ftp://example.com'"],
                        {"rt.yaml": RT + "vc_base_url: ftp://example.com\n"}),
    "replay speed zero": ((*REPLAY, "--speed", "0"), ["--speed", "'0'"], {}),
    "models resolve stage None": (("models", "resolve", "--city", "chicago", "--bracket", "less", "--date",
                                   "2025-07-01", "--stage", "None"), ["--stage", "'None'", "Staging, Production"], {}),
    "backtest unknown stage": ((*BACKTEST, "--stage", "Prod"), ["--stage", "'Prod'"], {}),
    "audit lock-margin unknown city": (("audit", "lock-margin", "--city", "gotham"),
                                       ["--city", "unknown city 'gotham'"], {}),
    "audit lock-margin inverted range": (("audit", "lock-margin", "--start", "2025-07-08", "--end", "2025-07-01"),
                                         ["--end (2025-07-01) is before --start (2025-07-08)"], {}),
    "audit lock-margin no data": (("audit", "lock-margin"), ["no city to audit", "the database has no markets"], {}),
    "audit lock-margin step zero": (("audit", "lock-margin", "--margin-step", "0"), ["--margin-step"], {}),
    "audit lock-margin margin nan": (("audit", "lock-margin", "--margin", "nan"), ["--margin"], {}),
    "audit lock-margin config margin too large": (("audit", "lock-margin", "-c", "rt.yaml"),
                                                  ["rt.yaml", "lock_margin_f: Input should be less than or equal to 5"],
                                                  {"rt.yaml": RT + "lock_margin_f: 9\n"}),
    "simulate workdir is a file": ((*SIMULATE, "--workdir", "train.yaml"), ["--workdir", "not a directory"],
                                   {"train.yaml": TRAIN}),
    "simulate workspace database unsupported": ((*SIMULATE, "--workspace-db-url", "mysql://x@127.0.0.1/y"),
                                                ["--workspace-db-url", "unsupported database 'mysql'"],
                                                {"train.yaml": TRAIN}),
    "dashboard ui url javascript": ((*DASHBOARD, "--mlflow-ui-url", "javascript:alert(1)"),
                                    ["--mlflow-ui-url", "http(s) URL", "'javascript:alert(1)'"], {}),
    "dashboard ui url without host": ((*DASHBOARD, "--mlflow-ui-url", "http://:5000/"),
                                      ["--mlflow-ui-url", "http(s) URL", "'http://:5000/'"], {}),
    "bankroll quoted": (REPLAY, ["execution.bankroll_dollars: Input should be a valid number", "'10000'"],
                        {"rt.yaml": RT + 'execution: {bankroll_dollars: "10000"}\n'}),
    "bankroll 1e300": (REPLAY, ["execution.bankroll_dollars: Input should be less than or equal to 1000000000"],
                       {"rt.yaml": RT + "execution: {bankroll_dollars: 1e300}\n"}),
    "daily loss quoted": (REPLAY, ["execution.max_daily_loss_dollars: Input should be a valid number", "'500'"],
                          {"rt.yaml": RT + "execution: {max_daily_loss_dollars: '500'}\n"}),
    "position contracts 1e21": (REPLAY, ["execution.max_position_contracts: Input should be less than or equal to "
                                         "1000000"],
                                {"rt.yaml": RT + f"execution: {{max_position_contracts: {10**21}}}\n"}),
    "open orders 1e12": (REPLAY, ["execution.max_open_orders: Input should be less than or equal to 10000"],
                         {"rt.yaml": RT + f"execution: {{max_open_orders: {10**12}}}\n"}),
    "halt file root": (REPLAY, ["execution.halt_file: must be a file path", "'/'"],
                       {"rt.yaml": RT + "execution: {halt_file: /}\n"}),
    "tau_open_cents quoted": (REPLAY, ["risk.tau_open_cents: Input should be a valid number", "'1'"],
                              {"rt.yaml": RT + "risk: {tau_open_cents: '1'}\n"}),
    "taker rate quoted": (REPLAY, ["fees.taker_rate: Input should be a valid number", "'0.07'"],
                          {"rt.yaml": RT + "fees: {taker_rate: '0.07'}\n"}),
}


@pytest.mark.parametrize(("args", "fragments", "files"), list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_error_line(workspace, args, fragments, files):
    for name, content in files.items():
        path = workspace / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    assert_one_error_line(cli.invoke(app, list(args)), *fragments)
    assert _mlflow_runs(workspace) == []


def test_unknown_revision_creates_no_database(tmp_path):
    fresh = tmp_path / "fresh.db"
    assert_one_error_line(cli.invoke(app, ["db", "upgrade", "bogusrev", "--db-url", f"sqlite:///{fresh}"]),
                          "'bogusrev'")
    assert not fresh.exists()


def test_bad_database_url_in_the_environment_is_named(monkeypatch):
    monkeypatch.setenv("KWX_DATABASE_URL", "mysql+nosuchdriver://")
    assert_one_error_line(cli.invoke(app, ["data", "summary"]), "$KWX_DATABASE_URL", "unsupported database")


def test_bad_mlflow_ui_url_in_the_environment_is_named(workspace, monkeypatch):
    monkeypatch.setenv("KWX_MLFLOW_UI_URL", "javascript:alert(document.cookie)")
    assert_one_error_line(cli.invoke(app, list(DASHBOARD)), "$KWX_MLFLOW_UI_URL", "http(s) URL", "'javascript:")


def test_read_only_database(workspace):
    url = f"sqlite:///file:{workspace / 'kwx.db'}?mode=ro&uri=true"
    result = cli.invoke(app, ["data", "demo", "--start", "2025-07-01", "--end", "2025-07-01", "--db-url", url])
    assert_one_error_line(result, "is read-only", "readonly database")


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device", "kwx.db"),
    sqlalchemy.exc.OperationalError("INSERT INTO candles ...", {},
                                    sqlite3.OperationalError("database or disk is full")),
], ids=["ENOSPC", "sqlite full"])
def test_full_disk(workspace, monkeypatch, failure):
    def full(*_args, **_kwargs):
        raise failure

    monkeypatch.setattr("kwx.data.store.upsert_frames", full)
    result = cli.invoke(app, ["data", "demo", "--start", "2025-07-01", "--end", "2025-07-01"])
    assert_one_error_line(result, "disk full")


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> str:
    """Chicago demo data 2025-07-01..24 (as tests/conftest.py's small training run)."""
    return demo_database(tmp_path_factory.mktemp("bad-input"), ["chicago"], date(2025, 7, 1), date(2025, 7, 24), seed=2)


def test_bad_optuna_storage_fails_before_any_run(workspace, demo_db):
    result = cli.invoke(app, ["train", "-c", "train.yaml", "--optuna-storage", "bogus://x", "--db-url", demo_db])
    assert_one_error_line(result, "Optuna storage 'bogus://x' cannot be opened")
    assert _mlflow_runs(workspace) == []


@pytest.mark.parametrize(("start", "end", "fragments"), [
    ("1900-01-01", "2025-07-24", ["1900-01-01..2025-07-24", "beyond the data", "2025-07-01..2025-07-24"]),
    ("2025-07-01", "2030-01-01", ["2025-07-01..2030-01-01", "beyond the data"]),
    ("2024-01-01", "2024-03-01", ["no chicago/between markets with event dates 2024-01-01..2024-03-01",
                                  "2025-07-01..2025-07-24"]),
])
def test_train_refuses_a_range_without_data_before_planning(workspace, demo_db, start, end, fragments):
    (workspace / "train.yaml").write_text(_train(start=f"start: {start}", end=f"end: {end}"))
    assert_one_error_line(cli.invoke(app, [*TRAIN_PLAN, "--db-url", demo_db]), *fragments)


# Item 12: validation is the single gate. Boundary values either side of every limit; whatever validates must
# prepare (load and plan) or fail with one of the documented errors, never anything else.
BOUNDARIES = {
    "train_days": [1, 12, 23, 3650, 3651, 10**9],
    "test_days": [1, 4, 24, 3650, 10**9],
    "step_days": [1, 4, 3650, 10**12],
    "cv_splits": [2, 3, 24, 100, 101],
    "sample_every_minutes": [1, 7, 60],
    "start": [date(2025, 7, 1), date(2025, 7, 20), date(2025, 6, 15), date(1900, 1, 1), date(1, 1, 1)],
    "end": [date(2025, 7, 24), date(2025, 7, 5), date(2025, 8, 10), date(9999, 12, 31)],
}


@settings(max_examples=30)
@given(values=st.fixed_dictionaries({key: st.sampled_from(options) for key, options in BOUNDARIES.items()}))
@example(values={"train_days": 12, "test_days": 4, "step_days": 10**12, "cv_splits": 3, "sample_every_minutes": 7,
                 "start": date(2025, 7, 1), "end": date(2025, 7, 24)})  # stepping past date.max
def test_a_config_that_validates_prepares_or_fails_with_a_documented_error(demo_db, values):
    try:
        config = parse_config({"city": "chicago", "bracket": "between", "trials": 2, **values}, TrainConfig)
    except ConfigError:
        return
    engine = make_engine(demo_db)
    try:
        runner.prepare(config, engine)
    except runner.PREPARE_ERRORS:
        pass
    finally:
        engine.dispose()
