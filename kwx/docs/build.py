"""Write the generated reference pages into a directory (docs/reference for `make docs`)."""

from __future__ import annotations

from pathlib import Path

from kwx.docs import benchmark_reference, cli_reference, config_reference, mlflow_reference, schema_reference

PAGES = {"cli.md": cli_reference.render, "config.md": config_reference.render,
         "schema.md": schema_reference.render, "mlflow.md": mlflow_reference.render,
         "benchmarks.md": benchmark_reference.render}


def write_reference(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, render in PAGES.items():
        path = directory / name
        path.write_text(render() + "\n", encoding="utf-8")
        written.append(path)
    return written
