"""The ``kwx`` command line: thin commands that parse, load config and call one function each.

One module per command group; ``common`` holds the app, the consoles, ``fail``, progress and the option types
every group shares.
"""

# ruff: noqa: I001 (importing a module registers its top-level commands: `kwx --help` lists them in this order)
from __future__ import annotations

from kwx.cli import train, registry, rt, backtest, demo, init
from kwx.cli import lifecycle
from kwx.cli import audit, config, data, db
from kwx.cli import monitor
from kwx.cli import schedule, dashboard
from kwx.cli.common import _parse_cities, app

for _group, _name in ((config.config_app, "config"), (db.db_app, "db"), (data.ingest_app, "ingest"),
                      (rt.rt_app, "rt"), (data.data_app, "data"), (registry.models_app, "models"),
                      (audit.audit_app, "audit"), (train.runs_app, "runs")):
    app.add_typer(_group, name=_name)

__all__ = ["_parse_cities", "app", "audit", "backtest", "config", "dashboard", "data", "db", "demo", "init",
           "lifecycle", "monitor", "registry", "rt", "schedule", "train"]
