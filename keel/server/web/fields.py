"""A tool's arguments as form fields, generated from its JSON schema, and read back typed.

Reading back only converts text to the schema's types; whether the values are allowed
(bounds, lengths, enums) is decided by the same check the API uses, so the page and the
API refuse exactly the same edits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keel._json_input import parse_json
from keel.errors import InputError

PREFIX = "arg."


@dataclass
class Field:
    name: str
    kind: str  # text, integer, number, checkbox, select, json
    value: str = ""
    original: str = ""  # the proposal as shown, so the page can mark edited fields
    checked: bool = False
    required: bool = False
    nullable: bool = False
    options: list[str] = field(default_factory=list)
    hint: str = ""  # bounds and description, shown under the field
    error: str = ""
    attrs: dict[str, str] = field(default_factory=dict)  # step/minlength/maxlength
    proposed: bool = True  # the call passed it (else the field shows the default)
    was_none: bool = False  # an empty box then means None, not ""
    default: Any = None
    _enum: list[Any] = field(default_factory=list)


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return {
            **root.get("$defs", {}).get(name, {}),
            **{k: v for k, v in schema.items() if k != "$ref"},
        }
    return schema


def _unwrap(schema: dict[str, Any], root: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The schema behind an `Optional[...]` (anyOf with null) and whether null is allowed."""
    schema = _resolve(schema, root)
    options = schema.get("anyOf")
    if not options:
        return schema, schema.get("type") == "null"
    kept = [_resolve(o, root) for o in options if o.get("type") != "null"]
    nullable = len(kept) < len(options)
    inner = kept[0] if len(kept) == 1 else {"anyOf": kept}
    extra = {k: v for k, v in schema.items() if k not in ("anyOf",)}
    return {**inner, **extra}, nullable


def _shown(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "json":
        return json.dumps(value, indent=2, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def fields_for(schema: dict[str, Any], args: Mapping[str, Any]) -> list[Field]:
    """One field per parameter of the tool, holding the proposed value."""
    props: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    out: list[Field] = []
    names = list(props) + [n for n in args if n not in props]
    for name in names:
        sub, nullable = _unwrap(props.get(name, {}), schema)
        typ = sub.get("type")
        f = Field(name, "json", required=name in required, nullable=nullable)
        if "enum" in sub:
            f.kind = "select"
            f._enum = list(sub["enum"])
            f.options = [_shown(o, "text") for o in sub["enum"]]
        elif typ == "boolean":
            f.kind = "checkbox"
        elif typ == "integer":
            f.kind, f.attrs["step"] = "integer", "1"
        elif typ == "number":
            f.kind, f.attrs["step"] = "number", "any"
        elif typ == "string":
            f.kind = "text"
        hints = []
        for key, attr, word in (
            ("minimum", "min", ">="),
            ("maximum", "max", "<="),
            ("exclusiveMinimum", None, ">"),
            ("exclusiveMaximum", None, "<"),
            ("minLength", "minlength", "length >="),
            ("maxLength", "maxlength", "length <="),
        ):
            if key in sub:
                hints.append(f"{word} {sub[key]}")
                # Bounds stay server-side only for number inputs, so a reviewer who types an
                # out-of-range value sees the same explanation the API would give.
                if attr in ("minlength", "maxlength"):
                    f.attrs[attr] = str(sub[key])
        if sub.get("description"):
            hints.insert(0, str(sub["description"]))
        if f.kind == "json" and typ:
            hints.append(f"JSON {typ}")
        if nullable:
            hints.append("empty: none")
        f.hint = "; ".join(hints)
        f.proposed, f.default = name in args, sub.get("default")
        value = args.get(name, f.default)
        f.was_none = value is None
        if f.kind == "checkbox":
            f.checked = bool(value)
        else:
            f.value = f.original = _shown(value, f.kind)
        out.append(f)
    return out


def read_back(fields: list[Field], form: Mapping[str, str]) -> tuple[dict[str, Any], bool]:
    """The typed arguments from a submitted form; errors go onto the fields (returns ok)."""
    args: dict[str, Any] = {}
    ok = True
    for f in fields:
        raw = form.get(PREFIX + f.name)
        if f.kind == "checkbox":
            f.checked = raw is not None
            if f.proposed or f.checked != bool(f.default):
                args[f.name] = f.checked
            continue
        f.value = raw or ""
        text = f.value.strip()
        if not text and f.kind == "text" and not (f.nullable and f.was_none):
            value: Any = f.value  # an empty string is a string
        elif not text:
            if not f.nullable:
                if f.required:
                    f.error, ok = "required", False
                continue
            value = None
        else:
            try:
                value = _convert(f, text)
            except ValueError as exc:
                f.error, ok = str(exc), False
                continue
        # A parameter the call left to its default stays out unless the reviewer changed it.
        if f.proposed or value != f.default:
            args[f.name] = value
    return args, ok


def _convert(f: Field, text: str) -> Any:
    if f.kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError("enter a whole number") from None
    if f.kind == "number":
        try:
            number = float(text)
        except ValueError:
            raise ValueError("enter a number") from None
        return int(number) if number.is_integer() and "." not in text else number
    if f.kind == "select":
        for option, shown in zip(f._enum, f.options, strict=True):
            if shown == text:
                return option
        raise ValueError(f"choose one of {', '.join(f.options)}")
    if f.kind == "json":
        return form_json(text)
    return f.value  # strings keep their spaces


def place_problems(fields: list[Field], problems: list[str]) -> list[str]:
    """Put `name: message` problems next to their fields; return the ones that fit none."""
    by_name = {f.name: f for f in fields}
    left: list[str] = []
    for problem in problems:
        where, sep, message = problem.partition(":")
        top = where.strip().split(".", 1)[0]
        if sep and top in by_name:
            f = by_name[top]
            f.error = f"{f.error}; {message.strip()}" if f.error else message.strip()
        else:
            left.append(problem)
    return left


def form_json(text: str) -> Any:
    """JSON typed into a form, held to the CLI's limits (nesting is checked before
    parsing, so a deep document cannot exhaust the parser); ValueError says why not."""
    try:
        return parse_json(text, "this")
    except InputError as exc:
        raise ValueError(exc.message) from None
