"""`kwx demo`: the main job end to end, each step the command a user would run."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from kwx.cli.backtest import backtest
from kwx.cli.common import RT_CONFIG, DbUrlOption, TrackingUriOption, app, console
from kwx.cli.data import DEMO_END, DEMO_START, MarketSkillOption, data_demo
from kwx.cli.lifecycle import simulate
from kwx.cli.registry import models_list, models_resolve, promote, report
from kwx.cli.rt import rt_pnl, serve_rt
from kwx.cli.train import train
from kwx.config import sample_configs_dir
from kwx.data import migrations
from kwx.data.db import database_url
from kwx.data.demo import DEFAULT_MARKET_SKILL
from kwx.secrets import redact

# Two weeks after the walk-forward windows' last test day, in a workspace of its own: coarse ticks and few
# trials (fewer still when --trials asks for fewer) keep `make demo` within its five minutes (docs/guides/season.md,
# docs/getting-started.md).
SEASON_START = "2025-09-24"
REPLAY_DAY = "2025-09-15"
SEASON_TICK_SECONDS, SEASON_TRIALS = 300.0, 2
SEASON_WORKDIR = Path("simulations") / "demo"
TRAIN_CONFIG_NAME, RT_CONFIG_NAME = "elasticnet_chi_between.yaml", "rt.yaml"
USER_CONFIGS = RT_CONFIG.parent  # ./configs, where `kwx init` writes the samples for the user to edit


def demo_config(name: str) -> Path:
    """A config the demo runs with: the user's in ./configs when it is there (relative to the working directory),
    else the sample kwx ships."""
    users = USER_CONFIGS / name
    return users if users.is_file() else sample_configs_dir() / name


@app.command()
def demo(
    db_url: DbUrlOption = None,
    tracking_uri: TrackingUriOption = None,
    seed: Annotated[int, typer.Option(help="Demo data seed.", min=0, max=2**32 - 1)] = 42,
    trials: Annotated[int, typer.Option(
        help="Optuna trials per window, each sweeping C along a regularization path (the config says 12).",
        min=1)] = 6,
    workers: Annotated[int | None, typer.Option(help="Parallel window workers (default: CPU cores).", min=1)] = None,
    market_skill: MarketSkillOption = DEFAULT_MARKET_SKILL,
    season_weeks: Annotated[int, typer.Option(
        help="Weeks of the season simulated after the walk-forward windows (0: none).", min=0, max=6)] = 2,
) -> None:
    """Run the main job end to end on the embedded default: data, training, report, promotion, resolution,
    backtest, a replayed trading day and two simulated weeks of the season after it (weekly retrain, daily
    monitor). It reads ./configs/elasticnet_chi_between.yaml and ./configs/rt.yaml where `kwx init` wrote them,
    else the sample configs kwx ships.

    Exit 1 when the trained run fails its acceptance report: promotion, resolution and the replay are then
    skipped (the backtest still runs).
    """
    url = database_url(db_url)
    train_config, rt_config = demo_config(TRAIN_CONFIG_NAME), demo_config(RT_CONFIG_NAME)
    console.rule("[bold]kwx demo")
    console.print(f"configs: {_shown_config(train_config)}, {_shown_config(rt_config)}", highlight=False)
    console.print(f"1. database {redact(url)}")
    migrations.upgrade(url)
    console.print(f"   migrated to {migrations.head_revision()}")
    console.rule("2. demo data")
    data_demo(city=["chicago"], start=datetime.fromisoformat(DEMO_START), end=datetime.fromisoformat(DEMO_END),
              seed=seed, market_skill=market_skill, db_url=url)
    console.rule(f"3. walk-forward training ({train_config.name}, {trials} trials per window)")
    train(config=train_config, plan_only=False, workers=workers, trials=trials, set_=None, optuna_storage=None,
          experiment=None, db_url=url)
    console.rule("4. acceptance report")
    try:
        report(run_id=None, city="chicago", bracket="between", db_url=url)
        accepted = True
    except typer.Exit as exc:
        if exc.exit_code != 1:
            raise
        accepted = False  # a FAIL verdict: the run must not be promoted, but the backtest still says why
    if accepted:
        console.rule("5. promotion to Production")
        promote(run_id=None, city="chicago", bracket="between", stage="Production", dry_run=False,
                keep_existing=False, reason="kwx demo: gates passed", db_url=url)
        models_list(city="chicago", bracket="between")
        console.rule("6. which model trades which day")
        for day in ("2025-09-15", "2025-10-20", "2025-07-01"):
            try:
                models_resolve(city="chicago", bracket="between", date_=datetime.fromisoformat(day),
                               stage="Production")
            except typer.Exit:
                console.print("   (expected: no promoted window covers a day before the first test week)")
    else:
        console.print("[yellow]5-6 skipped:[/] the run failed its acceptance gates (above), so it is not promoted "
                      "and there is no new Production model to resolve.", highlight=False)
    console.rule("7. backtest of the test weeks 2025-07-30..2025-09-23, blend grid 0.5:0.8:0.1 (maker-first)")
    backtest(start=datetime.fromisoformat("2025-07-30"), end=datetime.fromisoformat("2025-09-23"), city="chicago",
             bracket="between", config=rt_config, run_id=None, stage=None, blend_grid="0.5:0.8:0.1",
             metric="daily_sharpe", write_rt_config=False, db_url=url)
    if not accepted:
        # The replay trades the Production stage, which this run never reached.
        console.print("[yellow]8 skipped:[/] the replay trades Production models; the demo ends with exit 1 "
                      "because its run failed acceptance.", highlight=False)
        raise typer.Exit(1)
    # minute ticks, as the backtest decides: the paper fills are then exactly the backtest's for the day
    console.rule(f"8. replayed trading day in paper mode (serve-rt --replay {REPLAY_DAY} --set execution.mode=paper "
                 "--set tick_seconds=60)")
    serve_rt(config=rt_config, replay=datetime.fromisoformat(REPLAY_DAY), speed="max", max_ticks=None, top=10,
             env="demo", confirm_production=False, real_money=False,
             set_=["execution.mode=paper", "tick_seconds=60"], db_url=url)
    _print_paper_day(rt_config, url=url)
    if season_weeks:
        _simulate_season(train_config, rt_config, url, trials=trials, season_weeks=season_weeks)
    _print_dashboard_command(rt_config, url, tracking_uri, season_weeks=season_weeks)


def _simulate_season(train_config: Path, rt_config: Path, url: str, *, trials: int, season_weeks: int) -> None:
    """Step 9: ``season_weeks`` weeks after the walk-forward windows, in a workspace of their own."""
    season_end = (datetime.fromisoformat(SEASON_START) + timedelta(days=7 * season_weeks - 1)).date()
    console.rule(f"9. the season goes on: simulate {SEASON_START}..{season_end} (weekly retrain, daily monitor, "
                 "each day traded)")
    simulate(config=train_config, start=datetime.fromisoformat(SEASON_START),
             end=datetime.combine(season_end, datetime.min.time()), speed="max", rt_config=rt_config,
             tick_seconds=SEASON_TICK_SECONDS, trials=min(trials, SEASON_TRIALS), set_=None, workdir=SEASON_WORKDIR,
             overwrite=True, workspace_db_url=None, db_url=url, tracking_uri=None)


def _print_dashboard_command(rt_config: Path, url: str, tracking_uri: str | None, *, season_weeks: int) -> None:
    """The command that opens the operator's page on what the demo wrote (and on the season's workspace)."""
    import shlex

    config, first = _users_path(rt_config), ""
    if config is None and not USER_CONFIGS.exists():
        # the sample inside the installed package: `kwx init` puts the same file where the user can edit it
        config = USER_CONFIGS / RT_CONFIG_NAME
        first = f"  kwx init  # writes the sample configs into ./{USER_CONFIGS}\n"
    elif config is None:
        config = rt_config  # `kwx init` would refuse to write into the user's ./configs: the sample, wherever it is
    tracking = f" --tracking-uri {shlex.quote(tracking_uri)}" if tracking_uri else ""
    console.rule("the operator's page")
    console.print(f"open the dashboard on the demo's database (then http://127.0.0.1:8050/):\n{first}"
                  f"  kwx dashboard --config {shlex.quote(str(config))} --db-url {shlex.quote(redact(url))}"
                  f"{tracking}", highlight=False, soft_wrap=True)
    if season_weeks:
        workspace = SEASON_WORKDIR
        console.print(f"and on the simulated season's workspace (realized calibration from `kwx monitor`):\n"
                      f"  kwx dashboard --config {shlex.quote(str(config))} --port 8051 "
                      f"--db-url sqlite:///{workspace / 'kwx.db'} --tracking-uri sqlite:///{workspace / 'mlflow.db'}",
                      highlight=False, soft_wrap=True)
    console.print("the replayed day is long past, so its red banner says the newest tick is old: no loop is running",
                  highlight=False)


def _users_path(path: Path) -> Path | None:
    """``path`` relative to the working directory, or None when it lies outside it (a sample in the package)."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return None


def _shown_config(path: Path) -> str:
    users = _users_path(path)
    return str(users) if users is not None else f"the sample {path.name} kwx ships"


def _print_paper_day(rt_config: Path, url: str) -> None:
    """The replayed day's paper orders and fills in a line, fills split by source, then its P&L (`kwx rt pnl
    --day`, whose total is split the same way)."""
    from kwx.cli.common import open_engine
    from kwx.domain.positions import SOURCE_LABELS, SOURCES
    from kwx.execution import records

    engine = open_engine(url)
    try:
        orders, fills = records.orders(engine, "paper"), records.fills(engine, "paper", with_source=True)
    finally:
        engine.dispose()
    statuses = ", ".join(f"{n} {status}" for status, n in orders["status"].value_counts().items()) or "none"
    # the same shape as the totals: "<fills>, <contracts> contracts" per source
    split = "; ".join(f"{SOURCE_LABELS[source]}: {int((fills['source'] == source).sum()):,}, "
                      f"{int(fills.loc[fills['source'] == source, 'count'].sum()):,} contracts" for source in SOURCES)
    console.print(f"paper orders: {len(orders):,} ({statuses}); fills: {len(fills):,}, "
                  f"{int(fills['count'].sum()) if len(fills) else 0:,} contracts ({split}); `kwx rt orders` lists them",
                  highlight=False)
    rt_pnl(day=datetime.fromisoformat(REPLAY_DAY), mode="paper", config=rt_config, db_url=url)
