"""The config reference as Markdown, rendered from the typed config itself (so it cannot drift).

Each key's row comes from its pydantic field: the dotted key, the type (from the annotation), the
default, the allowed values (Literal choices, ge/gt/le/lt bounds, or a field's
``json_schema_extra={"allowed": ...}`` for rules a validator enforces) and the ``description``. A
section's docstring is printed under its heading. docs/hooks/config_page.py puts the result
into docs/config.md when the site is built; ``python -m trainlab.config.reference`` prints it.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .schema import Config


def is_section(field: FieldInfo) -> bool:
    ann = field.annotation
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def iter_fields(model: type[BaseModel] = Config, prefix: str = ""):
    """(dotted key, FieldInfo) for every key, sections included, depth first in declaration order."""
    for name, field in model.model_fields.items():
        yield prefix + name, field
        if is_section(field):
            yield from iter_fields(field.annotation, prefix + name + ".")


def type_name(ann: Any) -> str:
    """A short, YAML-minded name: `int`, `float or null`, `list of int`, `[float, float]`, `string`."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Literal:
        kinds = {type(a) for a in args}
        return type_name(kinds.pop()) if len(kinds) == 1 else "value"
    if origin in (Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is tuple:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if origin is dict:
        return "mapping"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "section"
    return {str: "string", int: "int", float: "float", bool: "bool"}.get(ann, "any")


def yaml_value(value: Any) -> str:
    """A default as it would be written in YAML: `null`, `true`, `[0.9, 0.999]`, `{}`, `fashion-mnist`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _literal_choices(ann: Any) -> tuple | None:
    if typing.get_origin(ann) is Literal:
        return typing.get_args(ann)
    for arg in typing.get_args(ann) if typing.get_origin(ann) in (Union, types.UnionType) else ():
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return None


def allowed(field: FieldInfo) -> str:
    """The allowed values or range: `a`, `b`, `c` for a Literal; `[0, 1)`, `≥ 1`, `> 0` for bounds."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "allowed" in extra:
        return str(extra["allowed"])
    choices = _literal_choices(field.annotation)
    if choices:
        return ", ".join(f"`{c}`" for c in choices)
    bounds = {type(m): m for m in field.metadata if isinstance(m, (at.Ge, at.Gt, at.Le, at.Lt))}
    lo = bounds.get(at.Ge) or bounds.get(at.Gt)
    hi = bounds.get(at.Le) or bounds.get(at.Lt)
    if lo is not None and hi is not None:
        left = "[" if isinstance(lo, at.Ge) else "("
        right = "]" if isinstance(hi, at.Le) else ")"
        low, high = (lo.ge if isinstance(lo, at.Ge) else lo.gt), (hi.le if isinstance(hi, at.Le) else hi.lt)
        return f"{left}{yaml_value(low)}, {yaml_value(high)}{right}"
    if lo is not None:
        return f"≥ {yaml_value(lo.ge)}" if isinstance(lo, at.Ge) else f"> {yaml_value(lo.gt)}"
    if hi is not None:
        return f"≤ {yaml_value(hi.le)}" if isinstance(hi, at.Le) else f"< {yaml_value(hi.lt)}"
    if field.annotation is bool:
        return "`true`, `false`"
    return "any"


def _cell(text: str) -> str:
    """Markdown table cell on one line; pipes escaped outside code spans (inside them MkDocs' table
    extension does not split, and would show the backslash)."""
    parts = " ".join(str(text).split()).split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def _code(text: str) -> str:
    return f"`{text}`"


def _doc(model: type[BaseModel]) -> str:
    doc = model.__doc__ or ""
    return " ".join(doc.split())


def rows(model: type[BaseModel] = Config, prefix: str = "") -> list[dict]:
    """One dict per non-section key of this section: key, type, default, allowed, description."""
    out = []
    for name, field in model.model_fields.items():
        if is_section(field):
            continue
        out.append({"key": prefix + name, "type": type_name(field.annotation),
                    "default": yaml_value(field.get_default(call_default_factory=True)),
                    "allowed": allowed(field), "description": field.description or ""})
    return out


def _table(model: type[BaseModel], prefix: str) -> list[str]:
    lines = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for row in rows(model, prefix):
        lines.append(f"| {_code(row['key'])} | {_cell(row['type'])} | {_code(_cell(row['default']))} | "
                     f"{_cell(row['allowed'])} | {_cell(row['description'])} |")
    return lines


def _sections(model: type[BaseModel], prefix: str, level: int) -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        if not is_section(field):
            continue
        dotted = prefix + name
        section = field.annotation
        lines += ["", f"{'#' * level} {dotted}", "", f"{field.description[:1].upper()}{field.description[1:]}."]
        if _doc(section):
            lines += ["", _doc(section)]
        lines += [""] + _table(section, dotted + ".")
        lines += _sections(section, dotted + ".", level + 1)
    return lines


def missing_descriptions() -> list[str]:
    """Dotted keys whose field has no description (tests/test_docs.py and the docs build fail on any)."""
    return [key for key, field in iter_fields() if not (field.description or "").strip()]


def render_markdown(level: int = 2) -> str:
    """The whole reference: the top-level keys, then one table per section (`level`: heading depth)."""
    lines = [f"{'#' * level} Top level", ""] + _table(Config, "")
    lines += _sections(Config, "", level)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
