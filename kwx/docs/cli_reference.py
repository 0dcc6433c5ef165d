"""docs/reference/cli.md: every command of the ``kwx`` Typer app with its usage, help and parameters, as ``--help``
shows them (flags and type, help with default and range)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import typer.main

from kwx.docs.markdown import anchor, code, paragraphs, text


@dataclass(frozen=True)
class Parameter:
    command: str  # the command's full path: kwx data ingest kalshi
    kind: str  # option or argument
    name: str  # the first long flag (--db-url) or the argument's name
    flags: str  # as --help shows them, with the value's type: -c, --config <path>
    help: str  # the parameter's own help text
    details: str  # what --help prints after it: help, default, range, required

    @property
    def anchor(self) -> str:
        return f"{command_anchor(self.command)}--{self.name.lstrip('-').lower()}"


@dataclass(frozen=True)
class Command:
    path: str
    usage: str
    help: str
    parameters: list[Parameter]
    depth: int  # 0 for kwx itself

    @property
    def anchor(self) -> str:
        return command_anchor(self.path)


def command_anchor(path: str) -> str:
    """``kwx-data-ingest-kalshi`` for `kwx data ingest kalshi`."""
    return path.replace(" ", "-").lower()


def _parameter(ctx: Any, path: str, param: Any) -> Parameter | None:
    record = param.get_help_record(ctx)
    if record is None or param.name == "help":  # hidden, or --help itself
        return None
    long_flags = [o for o in param.opts if o.startswith("--")]
    name = long_flags[0] if param.param_type_name == "option" and long_flags else param.name
    return Parameter(path, param.param_type_name, name, record[0], param.help or "", record[1])


def commands(app: typer.Typer | None = None) -> Iterator[Command]:
    """Every visible command of the app, depth first in the order ``--help`` lists them."""
    if app is None:
        from kwx.cli import app
    root = typer.main.get_command(app)

    def walk(command: Any, path: str, parent: Any, depth: int) -> Iterator[Command]:
        ctx = command.context_class(command, info_name=path.rsplit(maxsplit=1)[-1], parent=parent)
        usage = " ".join([path, *command.collect_usage_pieces(ctx)])
        parameters = [p for p in (_parameter(ctx, path, param) for param in command.get_params(ctx)) if p]
        yield Command(path, usage, command.help or "", parameters, depth)
        for name in command.list_commands(ctx) if hasattr(command, "list_commands") else []:
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, f"{path} {name}", ctx, depth + 1)

    yield from walk(root, "kwx", None, 0)


def render() -> str:
    lines = ["# CLI reference", "",
             "Generated from the Typer app (`kwx.cli.app`) by `make docs`; do not edit. `kwx COMMAND --help` "
             "prints the same.", ""]
    for command in commands():
        level = "#" * min(2 + max(command.depth - 1, 0), 5)
        lines += [f"{level} {command.path} {{#{command.anchor}}}", "", f"    {command.usage}", "",
                  paragraphs(command.help), ""]
        if command.parameters:
            lines += ["| Parameter | Description |", "|---|---|"]
            lines += [f"| {anchor(p.anchor)}{code(p.flags)} | {text(p.details)} |" for p in command.parameters]
            lines.append("")
    return "\n".join(lines)
