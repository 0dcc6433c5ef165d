"""docs/reference/config.md: every field of every config kind (``kwx.config.CONFIG_KINDS``), found by walking the
pydantic models: dotted path, readable type, default, bounds and description."""

from __future__ import annotations

import inspect
import math
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kwx import config as config_module
from kwx.config import CONFIG_KINDS
from kwx.docs.markdown import anchor, code, paragraphs, text

# Text validated by a function has a narrower meaning than "text": named after the alias that attaches it.
_VALIDATED_TEXT = {
    config_module.CityKey: "city key",
    config_module.FeatureSetName: "feature set name",
    config_module.HttpUrlText: "http(s) URL",
    config_module.ClockTime: "time HH:MM",
    config_module.HaltFilePath: "file path",
}
_VALIDATOR_NAMES = {alias.__metadata__[0].func: name for alias, name in _VALIDATED_TEXT.items()}
_PLAIN_TYPES = {bool: "boolean", int: "integer", float: "number", str: "text", date: "date (YYYY-MM-DD)",
                Any: "any value"}


@dataclass(frozen=True)
class ConfigField:
    kind: str  # train, rt, matrix
    path: str  # dotted, as --set and error messages spell it: execution.bankroll_dollars, markets[].city
    type: str
    default: str
    bounds: str
    description: str

    @property
    def anchor(self) -> str:
        return field_anchor(self.kind, self.path)


@dataclass(frozen=True)
class Section:
    """One model's fields: the top-level config, or a nested model at ``path``."""

    kind: str
    path: str  # "" for the top-level config
    model: type[BaseModel]
    description: str
    fields: list[ConfigField]

    @property
    def anchor(self) -> str:
        return field_anchor(self.kind, self.path) if self.path else self.kind


def field_anchor(kind: str, path: str) -> str:
    """``rt-execution-bankroll_dollars`` for rt's execution.bankroll_dollars (``markets[].city``: rt-markets-city,
    ``vc_features.<city>.minute_features``: train-vc_features-city-minute_features)."""
    parts = path.replace("[]", "").replace("<", "").replace(">", "").split(".")
    return "-".join([kind, *parts])


def _nested_model(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """The model a field holds and the path suffix of its items ("" itself, "[]" a list's, ".<key>" a dict's)."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    origin = get_origin(annotation)
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation, ""
    if origin in (Union, types.UnionType) and len(args) == 1:
        return _nested_model(args[0])
    if origin is list and _nested_model(args[0]):
        return _nested_model(args[0])[0], "[]"
    if origin is dict and _nested_model(args[1]):
        return _nested_model(args[1])[0], f".<{readable_type(args[0]).split()[0]}>"  # "city key": <city>
    return None


def readable_type(annotation: Any, metadata: list | tuple = ()) -> str:
    """"number", "integer or null", "one of: a, b", "list of city key"."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    validated = [_VALIDATOR_NAMES[m.func] for m in metadata if getattr(m, "func", None) in _VALIDATOR_NAMES]
    if validated:
        return validated[0]
    if origin is Annotated:
        return readable_type(args[0], annotation.__metadata__)
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        named = [readable_type(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {readable_type(args[0])}"
    if origin is dict:
        return f"mapping of {readable_type(args[0])} to {readable_type(args[1])}"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return f"section ({annotation.__name__})"
    return _PLAIN_TYPES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def number(value: float) -> str:
    """1e9 and 1e6 as such, 4294967295 in full, 0.001 as Python writes it."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return str(value)
    if value == int(value):
        whole = int(value)
        if abs(whole) >= 10**6:
            mantissa, exponent = f"{whole:e}".split("e")
            short = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
            if float(short) == whole:
                return short
        return str(whole)
    return repr(value)


def bounds(info: FieldInfo) -> str:
    """Interval notation from the field's annotated_types metadata: [1, 1e6], (0, 1e9], ≥ 0; list lengths too."""
    low = high = None
    lengths = []
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            low = f"[{number(m.ge)}"
        elif isinstance(m, annotated_types.Gt):
            low = f"({number(m.gt)}"
        elif isinstance(m, annotated_types.Le):
            high = f"{number(m.le)}]"
        elif isinstance(m, annotated_types.Lt):
            high = f"{number(m.lt)})"
        elif isinstance(m, annotated_types.MinLen) and m.min_length:
            lengths.append(f"at least {m.min_length} item{'s' * (m.min_length != 1)}")
        elif isinstance(m, annotated_types.MaxLen) and m.max_length is not None:
            lengths.append(f"at most {m.max_length} items")
    if low and high:
        interval = f"{low}, {high}"
    elif low:
        interval = ("> " if low[0] == "(" else "≥ ") + low[1:]
    elif high:
        interval = ("< " if high[-1] == ")" else "≤ ") + high[:-1]
    else:
        interval = ""
    return ", ".join(filter(None, [interval, *lengths]))


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return number(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return _yaml_value(info.default_factory())
    if info.default is PydanticUndefined:
        return "required"
    if isinstance(info.default, BaseModel):
        return "see its section"
    return _yaml_value(info.default)


def sections(kind: str, model: type[BaseModel], path: str = "", description: str = "") -> Iterator[Section]:
    """The model's section, then its nested models' sections, depth first in field order."""
    own, nested = [], []
    for name, info in model.model_fields.items():
        dotted = f"{path}.{name}" if path else name
        inner = _nested_model(info.annotation)
        if inner:
            inner_model, suffix = inner
            text = info.description or ""
            optional = type(None) in get_args(info.annotation)
            if optional:
                text = f"{text} Optional: null (the default) leaves it out.".strip()
            nested.append((f"{dotted}{suffix}", inner_model, text))
            continue
        own.append(ConfigField(kind, dotted, readable_type(info.annotation, info.metadata), default(info),
                               bounds(info), info.description or ""))
    yield Section(kind, path, model, description, own)
    for dotted, inner_model, text in nested:
        yield from sections(kind, inner_model, dotted, text)


def all_sections() -> list[Section]:
    return [s for kind, model in CONFIG_KINDS.items() for s in sections(kind, model)]


def all_fields() -> list[ConfigField]:
    return [f for s in all_sections() for f in s.fields]


def render() -> str:
    lines = ["# Configuration reference", "",
             "Generated from the pydantic models in `kwx/config.py` by `make docs`; do not edit. Every config "
             "rejects unknown keys. Override any field with `--set dotted.path=value`; bounds are inclusive "
             "with `[ ]`, exclusive with `( )`.", ""]
    for kind, model in CONFIG_KINDS.items():
        lines += [f"## {kind}: {model.__name__} {{#{kind}}}", "", paragraphs(model.__doc__ or ""), ""]
        for section in sections(kind, model):
            if section.path:
                lines += [f"### {code(section.path)} {{#{section.anchor}}}", "",
                          paragraphs(" ".join(filter(None, [section.description, section.model.__doc__ or ""]))),
                          ""]
            if not section.fields:
                continue
            lines += ["| Field | Type | Default | Bounds | Description |", "|---|---|---|---|---|"]
            lines += [f"| {anchor(f.anchor)}{code(f.path)} | {text(f.type)} | {code(f.default)} | {text(f.bounds)} "
                      f"| {text(f.description)} |" for f in section.fields]
            lines.append("")
    return "\n".join(lines)
