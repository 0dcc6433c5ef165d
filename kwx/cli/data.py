"""`kwx data` and `kwx ingest`: demo data, coverage summary, and real data from Kalshi and Visual Crossing."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import pandas as pd
import typer

from kwx.cli.common import (
    CitiesAliasOption,
    CitiesOption,
    CityOption,
    DbUrlOption,
    KwxTyper,
    _check_range,
    _cities,
    console,
    err_console,
    fail,
    http_url_option,
    open_engine,
    progress,
)
from kwx.data import migrations
from kwx.data.db import database_url
from kwx.data.demo import DEFAULT_DECIDED_QUOTE_CENTS, DEFAULT_MARKET_SKILL, DEFAULT_REPRICE_MINUTES, MINUTES_PER_DAY
from kwx.secrets import configure_logging, mask_url, redact

data_app = KwxTyper(help="Demo data, coverage summary.")
ingest_app = KwxTyper(help="Fetch real data: Kalshi markets/candles/settlements, Visual Crossing weather, Open-Meteo "
                      "forecasts.")

KalshiUrlOption = Annotated[str | None, typer.Option(
    help="API base URL (default: production).", callback=http_url_option)]
DEMO_START = "2025-05-01"
DEMO_END = "2025-11-15"
MarketSkillOption = Annotated[float, typer.Option(
    "--market-skill", help="How informed the demo market is, 0..1: 0 = it lags the weather (day bias, slow noise, "
    "inflated uncertainty), 1 = it prices with exactly what a well-informed forecaster knows. Only the quotes change.")]
RepriceMinutesOption = Annotated[int, typer.Option(
    "--reprice-minutes", help="Minutes after the public observation that decides a bracket (the running max passes "
    "it) until its book quotes the decided outcome, as a real book does within minutes; until then its quotes lag. "
    "0..1440 (1440: never). Only the quotes change.")]
DecidedQuoteCentsOption = Annotated[int, typer.Option(
    "--decided-quote-cents", help="A decided bracket's book, 1..49: YES bid q / ask q+1 once it has lost, 99-q / "
    "100-q once it has won (1: 1/2 and 98/99, Kalshi's book on a settled-by-the-weather bracket).")]


@data_app.command("demo")
def data_demo(
    city: CitiesOption = None,
    cities: CitiesAliasOption = None,
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="First event day.")] = DEMO_START,
    end: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Last event day.")] = DEMO_END,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data.", min=0, max=2**32 - 1)] = 42,
    market_skill: MarketSkillOption = DEFAULT_MARKET_SKILL,
    reprice_minutes: RepriceMinutesOption = DEFAULT_REPRICE_MINUTES,
    decided_quote_cents: DecidedQuoteCentsOption = DEFAULT_DECIDED_QUOTE_CENTS,
    db_url: DbUrlOption = None,
) -> None:
    """Generate realistic demo markets, candles, weather and settlements for --city (default chicago), and upsert
    them (idempotent)."""
    from kwx.data.db import make_engine
    from kwx.data.demo import check_decided_quote_cents, check_market_skill, check_reprice_minutes, load_demo

    city_list = _cities(city, cities) or ["chicago"]
    _check_range(start, end)
    try:
        check_market_skill(market_skill, "--market-skill")
        check_reprice_minutes(reprice_minutes, "--reprice-minutes")
        check_decided_quote_cents(decided_quote_cents, "--decided-quote-cents")
    except ValueError as exc:
        raise fail(str(exc)) from None
    migrations.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with progress() as bar:
            task = bar.add_task("demo data", total=len(city_list))

            def done(city: str, written: dict[str, int]) -> None:
                bar.update(task, advance=1, description=f"{city}: {written['candles']:,} candles")

            totals = load_demo(engine, city_list, start.date(), end.date(), seed, market_skill=market_skill,
                               reprice_minutes=reprice_minutes, decided_quote_cents=decided_quote_cents,
                               on_city_done=done)
    finally:
        engine.dispose()
    decided = (f"decided brackets at {decided_quote_cents}¢ from the edge {reprice_minutes} min after the "
               "deciding observation" if reprice_minutes < MINUTES_PER_DAY else "decided brackets never repriced")
    console.print(
        f"demo data for {', '.join(city_list)} {start:%Y-%m-%d}..{end:%Y-%m-%d} (seed {seed}, "
        f"market skill {market_skill:g}, {decided}): "
        + ", ".join(f"{n:,} {table}" for table, n in totals.items())
    )


@data_app.command("summary")
def data_summary(db_url: DbUrlOption = None) -> None:
    """Per-city counts and date coverage of markets, candles, weather, settlements and forecasts."""
    from rich.table import Table

    from kwx.data.store import coverage_summary

    engine = open_engine(db_url)
    try:
        summary = coverage_summary(engine)
    finally:
        engine.dispose()
    if summary.empty:
        raise fail(f"no data in {mask_url(database_url(db_url))}: run `kwx data demo` or `kwx ingest ...`")
    table = Table(title=f"kwx data in {mask_url(database_url(db_url))}")
    for column in ("city", "markets", "candles", "event days", "settled", "weather obs", "weather (UTC)", "forecasts"):
        table.add_column(column, justify="left" if column in ("city", "event days", "weather (UTC)") else "right")

    def span(first, last) -> str:
        return "" if pd.isna(first) else f"{pd.Timestamp(first):%Y-%m-%d}..{pd.Timestamp(last):%Y-%m-%d}"

    for row in summary.itertuples(index=False):
        table.add_row(row.city, f"{row.markets:,}", f"{row.candles:,}", span(row.first_event, row.last_event),
                      f"{row.settled_days:,}", f"{row.weather_obs:,}", span(row.weather_from, row.weather_to),
                      f"{row.forecasts:,}")
    console.print(table)


def _report_ingest(summary, what: str) -> None:
    fees = f", {summary.fee_records:,} new fee records" if summary.fee_records else ""
    console.print(f"{what}: {summary.markets:,} markets, {summary.candles:,} candles, "
                  f"{summary.weather:,} weather rows, {summary.settled_days:,} settled days{fees}")
    if summary.failures:
        for failure in summary.failures:
            err_console.print(f"[red]failed:[/] {redact(failure)}", highlight=False)
        raise typer.Exit(1)


@ingest_app.command("kalshi")
def ingest_kalshi_command(
    series: Annotated[str, typer.Option(help="Kalshi series ticker, e.g. KXHIGHCHI.")],
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="First event day.")],
    end: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Last event day.")],
    base_url: KalshiUrlOption = None,
    demo_env: Annotated[bool, typer.Option("--demo-env", help="Use Kalshi's demo environment.")] = False,
    db_url: DbUrlOption = None,
) -> None:
    """Markets, 1-minute candles and settlements of a series; re-running the same range changes nothing."""
    from kwx.cities import city_for_series
    from kwx.clock import SystemClock
    from kwx.data.clients.http import FetchError, PayloadError
    from kwx.data.clients.kalshi import DEMO_URL, PRODUCTION_URL, KalshiClient
    from kwx.data.ingestion import ingest_kalshi

    try:
        city_for_series(series)
    except ValueError as exc:
        raise fail(str(exc)) from None
    _check_range(start, end)
    configure_logging()
    client = KalshiClient(base_url or (DEMO_URL if demo_env else PRODUCTION_URL))
    engine = open_engine(db_url)
    try:
        with progress() as bar:
            task = bar.add_task(f"{series} markets", total=None)

            def step(ticker: str, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, description=ticker)

            summary = ingest_kalshi(engine, client, series, start.date(), end.date(), now=SystemClock().now(),
                                    progress=step)
    except (FetchError, PayloadError) as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
        client.http.close()
    _report_ingest(summary, f"{series} {start:%Y-%m-%d}..{end:%Y-%m-%d}")


@ingest_app.command("fees")
def ingest_fees_command(
    city: CitiesOption = None,
    base_url: KalshiUrlOption = None,
    demo_env: Annotated[bool, typer.Option("--demo-env", help="Use Kalshi's demo environment.")] = False,
    db_url: DbUrlOption = None,
) -> None:
    """Each city's Kalshi series fee type and multiplier, and the fee changes Kalshi announced (past and scheduled),
    which backtests, paper and live trading price fees from (--city: default every city). `kwx ingest kalshi` reads
    them too; re-running stores only what changed."""
    from kwx.cities import CITIES, get_city
    from kwx.clock import SystemClock
    from kwx.data.clients.http import AuthError
    from kwx.data.clients.kalshi import DEMO_URL, PRODUCTION_URL, KalshiClient
    from kwx.data.ingestion import ingest_fees

    series = [get_city(key).series for key in city or list(CITIES)]
    configure_logging()
    client = KalshiClient(base_url or (DEMO_URL if demo_env else PRODUCTION_URL))
    engine = open_engine(db_url)
    try:
        summary = ingest_fees(engine, client, series, SystemClock().now())
        _print_fees(engine, series)
    except AuthError as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
        client.http.close()
    console.print(f"{len(series)} series: {summary.fee_records:,} new fee records", highlight=False)
    if summary.failures:
        for failure in summary.failures:
            err_console.print(f"[red]failed:[/] {redact(failure)}", highlight=False)
        raise typer.Exit(1)


@data_app.command("fees")
def data_fees(city: CitiesOption = None, db_url: DbUrlOption = None) -> None:
    """The stored Kalshi fee timeline of each city's series (--city: default every city): the fee type and
    multiplier from each time on, and the rates kwx prices with."""
    from kwx.cities import CITIES, get_city

    engine = open_engine(db_url)
    try:
        _print_fees(engine, [get_city(key).series for key in city or list(CITIES)])
    finally:
        engine.dispose()


def _print_fees(engine, series: list[str]) -> None:
    from rich.table import Table

    from kwx.data.fees import stored_fee_changes
    from kwx.domain.fees import GENERAL, UnpricedFeeError

    table = Table(title="Kalshi fees by series (rates of the quadratic formula ⌈rate·C·P·(1−P)⌉)")
    for column in ("series", "from (UTC)", "fee type", "multiplier", "taker rate", "maker rate"):
        table.add_column(column, justify="right" if "rate" in column or column == "multiplier" else "left")
    changes = stored_fee_changes(engine, series)
    for name in series:
        timeline = [c for c in changes if c.series == name]
        if not timeline:
            taker, maker = GENERAL.rates()
            table.add_row(name, "(no fee data)", f"{GENERAL.fee_type} (Kalshi's general schedule)",
                          f"{GENERAL.multiplier:g}", f"{taker:g}", f"{maker:g}")
        for change in timeline:
            try:
                taker, maker = (f"{rate:g}" for rate in change.fee.rates())
            except UnpricedFeeError:
                taker = maker = "not modelled: set fees rates"
            table.add_row(name, f"{pd.Timestamp(change.effective_ts, unit='s'):%Y-%m-%d %H:%M}", change.fee.fee_type,
                          f"{change.fee.multiplier:g}", taker, maker)
    console.print(table)


@ingest_app.command("vc")
def ingest_vc_command(
    city: CityOption,
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="First climate day.")],
    end: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Last climate day.")],
    base_url: Annotated[str | None, typer.Option(help="Timeline API base URL.", callback=http_url_option)] = None,
    db_url: DbUrlOption = None,
) -> None:
    """Station-locked minute weather from Visual Crossing (key from VC_API_KEY)."""
    from kwx.data.clients.http import FetchError, PayloadError
    from kwx.data.clients.visual_crossing import BASE_URL, MissingApiKeyError, VisualCrossingClient, api_key_from_env
    from kwx.data.ingestion import ingest_vc

    try:
        client = VisualCrossingClient(api_key_from_env(), base_url or BASE_URL)
    except MissingApiKeyError as exc:
        raise fail(str(exc)) from None
    _check_range(start, end)
    configure_logging()
    engine = open_engine(db_url)
    try:
        with progress() as bar:
            task = bar.add_task(f"{city} weather", total=None)
            summary = ingest_vc(engine, client, city, start.date(), end.date(),
                                progress=lambda _s, done, total: bar.update(task, completed=done, total=total))
    except (FetchError, PayloadError) as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
        client.http.close()
    _report_ingest(summary, f"{city} weather {start:%Y-%m-%d}..{end:%Y-%m-%d}")


@ingest_app.command("forecasts")
def ingest_forecasts_command(
    city: CitiesOption = None,
    start: Annotated[datetime | None, typer.Option(
        formats=["%Y-%m-%d"], help="First climate day; required without --live (with --live: keep only days from "
        "it).", show_default=False)] = None,
    end: Annotated[datetime | None, typer.Option(
        formats=["%Y-%m-%d"], help="Last climate day; required without --live (with --live: keep only days up to "
        "it).", show_default=False)] = None,
    models: Annotated[str, typer.Option(
        help="Deterministic Open-Meteo models, comma-separated (known: ecmwf_ifs025, gfs_global, gfs_seamless).")
    ] = "gfs_seamless,ecmwf_ifs025",
    ensemble_models: Annotated[str, typer.Option(
        help="With --live: Ensemble API models, comma-separated, every member stored (gfs025 = ncep_gefs025, "
        "ecmwf_ifs025 = ecmwf_ifs025_ensemble, the names stored); '' for none.")] = "gfs025,ecmwf_ifs025",
    live: Annotated[bool, typer.Option(
        "--live", help="The current forecast (Forecast API) and ensemble members (Ensemble API) instead of history "
        "(Previous Runs API, leads of 1-7 days).")] = False,
    base_url: Annotated[str | None, typer.Option(
        help="Forecast API base URL, also read for model run metadata (default https://api.open-meteo.com).",
        show_default=False, callback=http_url_option)] = None,
    ensemble_base_url: Annotated[str | None, typer.Option(
        help="Ensemble API base URL (default https://ensemble-api.open-meteo.com).", show_default=False,
        callback=http_url_option)] = None,
    previous_runs_base_url: Annotated[str | None, typer.Option(
        help="Previous Runs API base URL (default https://previous-runs-api.open-meteo.com).",
        show_default=False, callback=http_url_option)] = None,
    chunk_days: Annotated[int, typer.Option(help="Climate days per history request.", min=1, max=92)] = 31,
    db_url: DbUrlOption = None,
) -> None:
    """Weather-model forecasts of each climate day's high from Open-Meteo, stamped with when they became public
    (--city: default every city). Re-running the same range changes nothing."""
    from kwx.cities import CITIES
    from kwx.clock import SystemClock
    from kwx.data.clients.http import AuthError
    from kwx.data.clients.open_meteo import (
        ENSEMBLE_URL,
        FORECAST_URL,
        PREVIOUS_RUNS_URL,
        OpenMeteoClient,
        UnknownModelError,
        model_spec,
    )
    from kwx.data.ingestion import ingest_forecasts

    city_list = city or list(CITIES)
    model_list = [m.strip() for m in models.split(",") if m.strip()]
    ensemble_list = [m.strip() for m in ensemble_models.split(",") if m.strip()] if live else []
    for option, names, ensemble in (("--models", model_list, False), ("--ensemble-models", ensemble_list, True)):
        try:
            for name in names:
                model_spec(name, ensemble=ensemble)
        except UnknownModelError as exc:
            raise fail(f"{option}: {exc}") from None
    if not model_list and not ensemble_list:
        raise fail("--models: give at least one model")
    if not live and (start is None or end is None):
        raise fail("--start and --end are required without --live (the climate days of history to fetch)")
    if start is not None and end is not None:
        _check_range(start, end)
    configure_logging()
    engine = open_engine(db_url)
    client = OpenMeteoClient(base_url or FORECAST_URL, ensemble_base_url or ENSEMBLE_URL,
                             previous_runs_base_url or PREVIOUS_RUNS_URL, chunk_days=chunk_days)
    rows, failures = 0, []
    try:
        with progress() as bar:
            task = bar.add_task("forecasts", total=None)
            for key in city_list:
                def step(label: str, done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total, description=label)

                try:
                    summary = ingest_forecasts(
                        engine, client, key, start.date() if start else None, end.date() if end else None,
                        models=model_list, now=SystemClock().now(), progress=step, live=live,
                        ensemble_models=ensemble_list)
                except AuthError as exc:
                    raise fail(str(exc)) from None
                rows += summary.forecasts
                failures += summary.failures
    finally:
        engine.dispose()
        client.close()
    span = "live" if live else f"{start:%Y-%m-%d}..{end:%Y-%m-%d}"
    console.print(f"forecasts {span} for {', '.join(city_list)}: {rows:,} rows")
    if failures:
        for failure in failures:
            err_console.print(f"[red]failed:[/] {redact(failure)}", highlight=False)
        raise typer.Exit(1)
