"""`kwx config`: validate model, matrix and real-time configs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kwx.cli.common import KwxTyper, console, err_console, fail
from kwx.config import CONFIG_KINDS, ConfigError, MatrixConfig, load_config

config_app = KwxTyper(help="Validate model and real-time configs.")


@config_app.command("validate")
def config_validate(
    path: Annotated[Path, typer.Argument(help="YAML config file.")],
    kind: Annotated[str, typer.Option(help=f"Config kind: {', '.join(CONFIG_KINDS)}.")] = "train",
) -> None:
    """Validate a config: one OK line, or every failing field with the rule it broke."""
    if kind not in CONFIG_KINDS:
        raise fail(f"unknown config kind {kind!r}; expected one of {', '.join(CONFIG_KINDS)}")
    try:
        cfg = load_config(path, CONFIG_KINDS[kind])
        if isinstance(cfg, MatrixConfig):  # its member configs are files of their own: validate them too
            cfg.load_members()
    except ConfigError as exc:
        err_console.print(f"[bold red]invalid config[/] {exc.source}:", highlight=False)
        for problem in exc.problems:
            err_console.print(f"  - {problem}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"[green]OK[/] {path}: {cfg.summary()}", highlight=False)
