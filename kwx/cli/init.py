"""`kwx init`: write the sample configs into a directory of the user's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from kwx.cli.common import app, console, fail
from kwx.config import sample_configs_dir


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Directory to write configs/ into.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite sample configs already there.")] = False,
) -> None:
    """Write the sample configs (one per city × bracket, matrix.yaml, rt.yaml) into DIR/configs, where
    `serve-rt`, `backtest` and `train --all` look by default; nothing is overwritten without --force."""
    samples = sorted(sample_configs_dir().glob("*.yaml"))
    target = directory / "configs"
    existing = [path.name for path in samples if (target / path.name).exists()]
    if existing and not force:
        raise fail(f"{target} already holds {len(existing)} of the sample configs ({', '.join(existing[:3])}"
                   f"{', ...' if len(existing) > 3 else ''}); --force overwrites them")
    try:
        target.mkdir(parents=True, exist_ok=True)
        for path in samples:
            shutil.copyfile(path, target / path.name)
    except OSError as exc:
        raise fail(f"cannot write the sample configs to {target}: {exc.strerror or exc}") from None
    console.print(f"wrote {len(samples)} sample configs to {target}", highlight=False)
