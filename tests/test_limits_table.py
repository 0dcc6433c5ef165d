"""The Limits table of the execution guide (docs/guides/execution.md, section "Limits") against the rt config's
models: every field of ``execution``, ``risk`` and ``fees`` and every integer of the rt config is listed once, with
the type, default and bounds the models enforce, so the table and the models cannot drift apart."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Annotated, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from kwx.config import RtConfig

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "execution.md"
SECTION = "## Limits"
NESTED = ("execution", "risk", "fees")
# (lower, lower included, upper, upper included); None for a field without numeric bounds
Bounds = tuple[float, bool, float, bool] | None
COLUMNS = ("field", "type", "default", "bounds", "what it limits")
_INTERVAL = re.compile(r"^([\[(])(.+), (.+)([\])])$")


def table_limits(guide: str) -> dict[str, tuple[str, object, Bounds]]:
    """The Limits table's rows: field → (type, default, bounds), read from its markdown (the first table of the
    section)."""
    after = guide.split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    start = next(i for i, line in enumerate(after) if line.startswith("|"))
    header = [cell.strip() for cell in after[start].strip("|").split("|")]
    assert header == list(COLUMNS), f"the Limits table's columns are {header}, not {list(COLUMNS)}"
    rows = {}
    for line in after[start + 2:]:  # past the header and its | --- | line
        if not line.startswith("|"):
            break
        field, kind, default, bounds = (cell.strip().strip("`") for cell in line.strip("|").split("|")[:4])
        assert field not in rows, f"{field} is listed twice"
        rows[field] = (kind, _value(default), _interval(bounds))
    return rows


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _value(text: str) -> object:
    if text == "null":
        return None
    try:
        return _number(text)
    except ValueError:
        return text


def _interval(text: str) -> Bounds:
    if text == "—":
        return None
    match = _INTERVAL.match(text)
    assert match, f"bounds {text!r} are not an interval such as (0, 100]"
    left, low, high, right = match.groups()
    return _number(low), left == "[", _number(high), right == "]"


def _field_of(path: str):
    *parents, name = path.split(".")
    model: type[BaseModel] = RtConfig
    for parent in parents:
        model = model.model_fields[parent].annotation
    return model.model_fields[name]


def _parts(field) -> tuple[object, bool, dict]:
    """The field's base type, whether it may be null, and its constraints (strict, gt, ge, lt, le), wherever
    pydantic keeps them: on the field, or inside an ``Annotated`` member of an optional type."""
    constraints = {}

    def collect(items) -> None:
        for item in items:
            for name in ("strict", "gt", "ge", "lt", "le"):
                if getattr(item, name, None) is not None:
                    constraints[name] = getattr(item, name)

    collect(field.metadata)
    annotation, nullable = field.annotation, False
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(members) < len(get_args(annotation))
        (annotation,) = members
    if get_origin(annotation) is Annotated:
        base, *extra = get_args(annotation)
        collect(extra)
        annotation = base
    return annotation, nullable, constraints


def model_limits(path: str) -> tuple[str, object, Bounds]:
    """What the models say of ``path``, in the table's terms: (type, default, bounds)."""
    field = _field_of(path)
    base, nullable, constraints = _parts(field)
    if get_origin(base) is Literal:
        options = [str(option) for option in get_args(base)]
        kind = f"{', '.join(options[:-1])} or {options[-1]}"
    else:
        kind = {float: "number", int: "integer", str: "text"}[base]
        if base in (float, int) and not constraints.get("strict"):
            kind += ", coerced from text"  # never what the table promises
    if nullable:
        kind += " or null"
    low = [(constraints[k], k == "ge") for k in ("gt", "ge") if k in constraints] or [(None, False)]
    high = [(constraints[k], k == "le") for k in ("lt", "le") if k in constraints] or [(None, False)]
    # a number without an upper (or lower) end has a None no table interval can match
    bounds = None if low[0][0] is None and high[0][0] is None else (*low[0], *high[0])
    default = field.default if isinstance(field.default, str | None) else float(field.default)
    return kind, default, bounds


def money_and_count_fields() -> set[str]:
    """Every field of execution, risk and fees, and every integer field of the rt config itself."""
    nested = {f"{parent}.{name}" for parent in NESTED for name in RtConfig.model_fields[parent].annotation.model_fields}
    counts = {name for name, field in RtConfig.model_fields.items() if _parts(field)[0] is int}
    return nested | counts


def limits_problems(guide: str) -> list[str]:
    """One line per disagreement between the guide's table and the models; none when they agree."""
    rows = table_limits(guide)
    expected = money_and_count_fields()
    problems = [f"{path}: missing from the table" for path in sorted(expected - rows.keys())]
    problems += [f"{path}: in the table but not a money or count field of the rt config"
                 for path in sorted(rows.keys() - expected)]
    for path in sorted(expected & rows.keys()):
        if rows[path] != model_limits(path):
            problems.append(f"{path}: the table says {rows[path]}, the models {model_limits(path)}")
    return problems


def _shown(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def model_row(path: str) -> str:
    """The table row the models imply for ``path``, its last column left to the guide's prose."""
    kind, default, bounds = model_limits(path)
    shown_default = "null" if default is None else default if isinstance(default, str) else _shown(default)
    shown_bounds = "—" if bounds is None else (
        f"{'[' if bounds[1] else '('}{_shown(bounds[0])}, {_shown(bounds[2])}{']' if bounds[3] else ')'}")
    return f"| `{path}` | {kind} | {shown_default} | {shown_bounds} | |"


def test_the_limits_table_matches_the_config_models():
    assert limits_problems(GUIDE.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(("row", "drifted", "problem"), [
    ("| `execution.max_open_orders` | integer | 20 | [0, 10,000] |",
     "| `execution.max_open_orders` | integer | 20 | [0, 100,000] |", "execution.max_open_orders: the table says"),
    ("| `execution.bankroll_dollars` | number | 10,000 |", "| `execution.bankroll_dollars` | number | 5,000 |",
     "execution.bankroll_dollars: the table says"),
    ("| `fees.taker_rate` | number or null |", "| `fees.taker_rate` | integer or null |",
     "fees.taker_rate: the table says"),
    ("| `execution.halt_file` | text or null | null |", "| `execution.halt_file` | text | null |",
     "execution.halt_file: the table says"),
    ("| `fees.contracts` |", "| `fees.lots` |", "fees.contracts: missing from the table"),
])
def test_a_row_that_drifts_from_the_models_is_named(row, drifted, problem):
    header = f"| {' | '.join(COLUMNS)} |\n|{' --- |' * len(COLUMNS)}\n"
    table = header + "\n".join(model_row(path) for path in sorted(money_and_count_fields())) + "\n"
    guide = f"# Execution\n\n{SECTION}\n\nThe limits:\n\n{table}\n## Next\n"
    assert limits_problems(guide) == []
    assert row in guide
    assert any(p.startswith(problem) for p in limits_problems(guide.replace(row, drifted, 1)))
