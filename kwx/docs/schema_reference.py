"""docs/reference/schema.md: every table of the ORM (``kwx.data.schema``): its description (the mapped class's
docstring), columns, keys, indexes and check constraints."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Table
from sqlalchemy.dialects import postgresql

from kwx.data.schema import Base
from kwx.docs.markdown import anchor, code, paragraphs, text


def table_descriptions() -> dict[str, str]:
    """Table name -> the docstring of the ORM class mapped to it ("" when it has none)."""
    return {mapper.local_table.name: mapper.class_.__doc__ or "" for mapper in Base.registry.mappers}


def tables() -> list[Table]:
    return list(Base.metadata.sorted_tables)


def column_type(column) -> str:
    """The type as PostgreSQL (production) declares it; UTCDateTime shows as TIMESTAMP WITH TIME ZONE."""
    return str(column.type.compile(dialect=postgresql.dialect()))


def server_default(column) -> str:
    """The database-side default, as PostgreSQL writes it ("" without one)."""
    if column.server_default is None:
        return ""
    value = column.server_default.arg
    return value if isinstance(value, str) else str(value.compile(dialect=postgresql.dialect()))


def render() -> str:
    descriptions = table_descriptions()
    lines = ["# Database schema", "",
             "Generated from the SQLAlchemy ORM (`kwx/data/schema.py`) by `make docs`; do not edit. Alembic "
             "migrations (`kwx db upgrade`) create exactly this schema on SQLite and PostgreSQL; types are shown as "
             "PostgreSQL declares them.", ""]
    for table in tables():
        lines += [f"## {table.name} {{#{table.name}}}", "", paragraphs(descriptions.get(table.name, "")), "",
                  "| Column | Type | Null | Key | Default |", "|---|---|---|---|---|"]
        for column in table.columns:
            keys = ["primary key"] if column.primary_key else []
            keys += [f"→ {fk.target_fullname}" for fk in column.foreign_keys]
            keys += ["unique"] if column.unique else []
            shown_default = server_default(column)
            lines.append(f"| {anchor(f'{table.name}-{column.name}')}{code(column.name)} | {text(column_type(column))} "
                         f"| {'yes' if column.nullable else 'no'} | {text(', '.join(keys))} "
                         f"| {code(shown_default) if shown_default else ''} |")
        lines.append("")
        indexes = sorted(table.indexes, key=lambda i: i.name)
        if indexes:
            lines += ["Indexes:", ""]
            lines += [f"- {code(i.name)} on ({', '.join(c.name for c in i.columns)})"
                      f"{' unique' if i.unique else ''}" for i in indexes]
            lines.append("")
        checks = [c for c in table.constraints if isinstance(c, CheckConstraint)]
        if checks:
            lines += ["Checks:", ""]
            lines += [f"- {code(str(c.sqltext))}" for c in sorted(checks, key=lambda c: str(c.name))]
            lines.append("")
    return "\n".join(lines)
