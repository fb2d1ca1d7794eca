"""A small JSON-schema check for edited arguments when the tool's code is not loaded.

Covers what Pydantic emits for tool signatures: types, required, additional
properties, enums, anyOf (optionals), arrays, nested objects via $ref/$defs,
and numeric/string bounds. The run validates again with Pydantic itself.

`closed=True` treats a model's object schema (one with `properties` and no word on
`additionalProperties`, as Pydantic emits for its default `extra="ignore"`) as closed:
an unknown key is a problem, not a value silently dropped.
"""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def problems(
    value: Any,
    schema: dict[str, Any],
    root: dict[str, Any] | None = None,
    path: str = "",
    *,
    closed: bool = False,
    top: str = "(arguments)",
) -> list[str]:
    """What is wrong with `value` under `schema`, one message per problem; `top` names
    the value itself in messages."""
    root = root or schema
    where = path or top
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        target = root.get("$defs", {}).get(name, {})
        return problems(value, target, root, path, closed=closed, top=top)
    if "anyOf" in schema:
        options = [problems(value, s, root, path, closed=closed, top=top) for s in schema["anyOf"]]
        return [] if any(not o for o in options) else options[0]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: must be one of {schema['enum']}"]
    expected = schema.get("type")
    if expected in _TYPES:
        ok = isinstance(value, _TYPES[expected]) and not (
            expected in ("integer", "number") and isinstance(value, bool)
        )
        if not ok:
            return [f"{where}: expected {expected}, got {type(value).__name__}"]
    out: list[str] = []
    if isinstance(value, int | float) and not isinstance(value, bool):
        bounds = {
            "minimum": ">=",
            "maximum": "<=",
            "exclusiveMinimum": ">",
            "exclusiveMaximum": "<",
        }
        for key, word in bounds.items():
            if key not in schema:
                continue
            limit = schema[key]
            ok = {
                ">=": value >= limit,
                "<=": value <= limit,
                ">": value > limit,
                "<": value < limit,
            }[word]
            if not ok:
                out.append(f"{where}: must be {word} {limit}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(f"{where}: at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{where}: at most {schema['maxLength']} characters")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                out.append(f"{path + '.' if path else ''}{name}: required")
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            sub = f"{path + '.' if path else ''}{name}"
            if name in props:
                out += problems(item, props[name], root, sub, closed=closed, top=top)
            elif extra is False:
                out.append(f"{sub}: not a parameter")
            elif closed and extra is None and props:
                out.append(f"{sub}: unknown field (known: {', '.join(props)})")
            elif isinstance(extra, dict):
                out += problems(item, extra, root, sub, closed=closed, top=top)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += problems(item, schema["items"], root, f"{where}[{i}]", closed=closed, top=top)
    return out
