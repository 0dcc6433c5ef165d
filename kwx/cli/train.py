"""`kwx train`, `kwx search-worker` and `kwx runs`: walk-forward training and the MLflow runs it leaves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from kwx.cli.common import (
    DbUrlOption,
    KwxTyper,
    TrackingUriOption,
    _tracking_or_fail,
    app,
    console,
    err_console,
    fail,
    load_or_fail,
    open_engine,
    progress,
)
from kwx.config import ConfigError, TrainConfig, load_yaml

runs_app = KwxTyper(help="MLflow runs kwx started: end those whose process died.")


def _parse_overrides(values: list[str]) -> dict[str, object]:
    """key=value pairs (repeatable or comma-separated); values are YAML, so numbers stay numbers."""
    import yaml

    overrides = {}
    for item in (part for value in values for part in value.split(",") if part.strip()):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"override {item!r} is not key=value")
        try:
            overrides[key.strip()] = load_yaml(raw)
        except yaml.YAMLError as exc:
            raise fail(f"--set {item!r}: the value is not valid YAML ({getattr(exc, 'problem', None) or exc})"
                       ) from None
    return overrides


@app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Model config YAML (configs/...).")] = None,
    matrix: Annotated[Path | None, typer.Option(
        help="Matrix YAML (configs/matrix.yaml): train each of its configs, one registered model each.")] = None,
    all_configs: Annotated[bool, typer.Option(
        "--all", help="Train every elasticnet_*.yaml in ./configs (each city × bracket).")] = False,
    skip_missing: Annotated[bool, typer.Option(
        "--skip-missing", help="With --matrix/--all: train the configs that can, report those that cannot.")] = False,
    plan_only: Annotated[bool, typer.Option("--plan", help="Print the windows and row counts; train nothing.")] = False,
    workers: Annotated[int | None, typer.Option(help="Parallel window workers (default: CPU cores).", min=1)] = None,
    trials: Annotated[int | None, typer.Option(help="Override the config's Optuna trials.", min=1)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override key=value (dotted keys).")] = None,
    optuna_storage: Annotated[str | None, typer.Option(
        help="Optuna storage: in-memory by default, journal:PATH, or an RDB URL (postgresql://...) shared by "
        "workers on several hosts.")] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default kwx-{city}-{bracket}).")] = None,
    db_url: DbUrlOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Walk-forward training: one MLflow run per window, one registered model version per window
    (--matrix/--all: each config in turn, one parent run and registered model each)."""
    from kwx.training import runner

    overrides = _parse_overrides(set_ or [])
    if trials is not None:
        overrides["trials"] = trials
    if [config is not None, matrix is not None, all_configs].count(True) != 1:
        raise fail("give exactly one of --config, --matrix or --all")
    if config is None:
        _train_matrix(matrix, overrides, plan_only=plan_only, workers=workers, skip_missing=skip_missing,
                      optuna_storage=optuna_storage, experiment=experiment, db_url=db_url)
        return
    if skip_missing:
        raise fail("--skip-missing applies to --matrix and --all")
    cfg = load_or_fail(config, TrainConfig, overrides)
    engine = open_engine(db_url)
    try:
        prepared = runner.prepare(cfg, engine)
        if plan_only:
            _print_plan(cfg, *prepared[::2])
            return
        n_workers = workers or runner.default_workers()
        with progress() as bar:
            task = bar.add_task(f"training {cfg.city}/{cfg.bracket}", total=sum(p.usable for p in prepared[2]))

            def done(window: str, result) -> None:
                loss = result.metrics["test_log_loss"]
                bar.update(task, advance=1, description=f"{window}: test log loss {loss:.4f}")

            summary = runner.train(cfg, engine, workers=n_workers, optuna_storage_spec=optuna_storage,
                                   experiment=experiment, config_text=config.read_text(), on_window_done=done,
                                   prepared=prepared)
    except _training_errors() as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    _print_training(summary)


def _training_errors() -> tuple[type[Exception], ...]:
    """Bad input to training, a search worker or a matrix (prepare's errors), an unreachable tracking store, a
    shared study whose other workers never finished: each is one error line and exit 2."""
    from kwx.tracking import TrackingUnavailableError
    from kwx.training.runner import PREPARE_ERRORS
    from kwx.training.search import SearchTimeoutError

    return (*PREPARE_ERRORS, TrackingUnavailableError, SearchTimeoutError)


def _train_matrix(matrix_path: Path | None, overrides: dict, *, plan_only: bool, workers: int | None,
                  skip_missing: bool, optuna_storage: str | None, experiment: str | None,
                  db_url: str | None) -> None:
    """`kwx train --matrix/--all`: prepare every config (one line per failing one), then train them in turn."""
    from kwx.training import matrix, runner

    try:
        members = matrix.load_all(overrides) if matrix_path is None else matrix.load_matrix(matrix_path, overrides)
    except ConfigError as exc:
        err_console.print(f"[bold red]invalid matrix[/] {exc.source}:", highlight=False)
        for problem in exc.problems:
            err_console.print(f"  - {problem}", highlight=False)
        raise typer.Exit(2) from None
    engine = open_engine(db_url)
    try:
        with progress(transient=True) as bar:
            task = bar.add_task("preparing", total=len(members))
            entries, failures = matrix.prepare_all(
                members, engine, on_prepared=lambda path: bar.update(task, advance=1, description=path.name))
        for path, reason in failures.items():
            err_console.print(f"[red]cannot train[/] {path.name}: {reason}", highlight=False)
        if failures and not skip_missing:
            raise fail(f"{len(failures)} of {len(members)} configs cannot train, nothing was trained "
                       "(--skip-missing trains the others)")
        if not entries:
            raise fail("no config of the matrix can train")
        if plan_only:
            for entry in entries:
                _print_plan(entry.config, *entry.prepared[::2])
            return
        with progress() as bar:
            configs_task = bar.add_task("configs", total=len(entries))
            windows_task = bar.add_task("windows", total=sum(e.usable_windows for e in entries))

            def start(entry) -> None:
                # The previous config is finished (a line of its own in a log) before this one is named.
                bar.update(configs_task, completed=entries.index(entry))
                bar.update(configs_task, description=f"training {entry.config.city}/{entry.config.bracket}")

            def done(entry, window: str, result) -> None:
                bar.update(windows_task, advance=1,
                           description=f"{window}: test log loss {result.metrics['test_log_loss']:.4f}")

            results = matrix.train_matrix(entries, engine, workers=workers or runner.default_workers(),
                                          optuna_storage_spec=optuna_storage, experiment=experiment,
                                          on_config_start=start, on_window_done=done)
            bar.update(configs_task, completed=len(entries))
            bar.update(configs_task, description="configs")
    except _training_errors() as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    _print_matrix(results, failures)


def _print_matrix(results, skipped: dict) -> None:
    from rich.table import Table

    table = Table(title=f"trained {len(results)} configs")
    for column in ("config", "model", "windows", "log loss", "market log loss", "ece", "seconds"):
        table.add_column(column)
    for r in (result.row() for result in results):
        table.add_row(r["config"], r["model"], str(r["windows"]), f"{r['test_log_loss']:.4f}",
                      f"{r['market_log_loss']:.4f}", f"{r['test_ece']:.4f}", f"{r['seconds']:.1f}")
    console.print(table)
    for path, reason in skipped.items():
        console.print(f"[yellow]skipped[/] {path.name}: {reason}", highlight=False)
    windows = sum(len(r.summary.versions) for r in results)
    console.print(f"{len(results)} configs, {windows} windows in {sum(r.seconds for r in results):.1f} s")


@app.command("search-worker")
def search_worker(
    config: Annotated[Path, typer.Option("--config", "-c", help="The coordinator's model config YAML.")],
    optuna_storage: Annotated[str, typer.Option(
        help="The coordinator's shared Optuna storage: an RDB URL (postgresql+psycopg2://...) or journal:PATH.")],
    workers: Annotated[int, typer.Option(help="Windows searched in parallel on this host.", min=1)] = 1,
    trials: Annotated[int | None, typer.Option(help="The coordinator's --trials, if it gave one.", min=1)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="The coordinator's overrides key=value.")] = None,
    db_url: DbUrlOption = None,
) -> None:
    """Extra Optuna trials for a `kwx train --optuna-storage URL` run, from this host; logs nothing to MLflow.

    With the coordinator's config, overrides and storage it joins the same per-window studies until each is full.
    """
    from kwx.training.search_worker import run_worker

    overrides = _parse_overrides(set_ or [])
    if trials is not None:
        overrides["trials"] = trials
    cfg = load_or_fail(config, TrainConfig, overrides)
    engine = open_engine(db_url)
    try:
        summary = run_worker(cfg, engine, optuna_storage, workers=workers, on_window_done=lambda window, count:
                             console.print(f"{window}: {count} trial(s) run here", highlight=False))
    except _training_errors() as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    console.print(f"studies {summary.study_prefix}-*: {sum(summary.trials.values())} trial(s) over "
                  f"{len(summary.trials)} window(s) in {summary.seconds:.1f} s", highlight=False)


def _print_plan(cfg, frame, plans) -> None:
    from rich.table import Table

    table = Table(title=f"{cfg.city}/{cfg.bracket} walk-forward plan ({len(frame):,} sampled rows)")
    for column in ("window", "train", "test", "train rows", "test rows", "status"):
        table.add_column(column)
    for p in plans:
        w = p.window
        table.add_row(w.name, f"{w.train_start}..{w.train_end} ({p.train_days}d)",
                      f"{w.test_start}..{w.test_end} ({p.test_days}d)", f"{p.n_train:,}", f"{p.n_test:,}",
                      "ok" if p.usable else f"skip: {p.skip_reason}")
    console.print(table)


def _print_training(summary) -> None:
    from rich.table import Table

    table = Table(title=f"{summary.model_name}: parent run {summary.parent_run_id}")
    for column in ("window", "version", "log loss", "market log loss", "brier", "ece", "auc"):
        table.add_column(column)
    for window, m in summary.window_metrics.items():
        table.add_row(window, summary.versions[window], f"{m['test_log_loss']:.4f}", f"{m['market_log_loss']:.4f}",
                      f"{m['test_brier']:.4f}", f"{m['test_ece']:.4f}", f"{m['test_auc']:.3f}")
    console.print(table)
    for window, reason in summary.skipped.items():
        console.print(f"[yellow]skipped[/] {window}: {reason}")
    t = summary.timings
    console.print(f"{len(summary.versions)} windows in {t['wall_seconds']:.1f} s "
                  f"({t['seconds_per_path']:.2f} s per C path, MLflow {100 * t['mlflow_fraction']:.1f} %)")


@runs_app.command("clean")
def runs_clean(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be failed; change nothing.")] = False,
    other_hosts_hours: Annotated[float, typer.Option(
        help="Also fail RUNNING runs of other hosts (or of no recorded host) started more than this many hours "
        "ago: their process cannot be checked from here.", min=0.0)] = 48.0,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """End as FAILED every RUNNING kwx run whose process is gone: on this host, its recorded pid no longer
    names the process that started it (a killed `kwx train`); on other hosts, it is older than
    --other-hosts-hours. One line per run; exit 0."""
    from kwx import runs

    if not math.isfinite(other_hosts_hours):
        raise fail(f"--other-hosts-hours: must be a finite number of hours, not {other_hosts_hours}")
    verdicts = runs.clean(_tracking_or_fail(), other_hosts_hours=other_hosts_hours, dry_run=dry_run)
    for verdict in verdicts:
        console.print(verdict.line(dry_run), style="red" if verdict.dead else "dim", markup=False, highlight=False)
    if not any(v.dead for v in verdicts):
        console.print("no RUNNING kwx run is dead", highlight=False)
