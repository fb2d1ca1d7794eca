"""JSON encoding of step inputs and outputs.

Keel stores JSON validated by Pydantic and nothing else: no pickles, no
objects rebuilt from arbitrary class names. Values are round-tripped through
the declared type so a live call and its replay return the same thing.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import pydantic_core
from pydantic import TypeAdapter

from keel._jsonv import from_json as from_json  # moved: stores read JSON with it too
from keel.errors import SerializationError

_ANY = object()


def to_json(value: Any, *, what: str) -> bytes:
    """Encode `value` as JSON or raise a SerializationError naming `what`."""
    try:
        return pydantic_core.to_json(value)
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        raise SerializationError(
            f"{what} returned a {type(value).__name__}, which Keel cannot store: {exc}. "
            "Return JSON data (dict, list, str, int, float, bool, None) or a Pydantic model.",
            value_type=type(value).__name__,
        ) from None


@functools.lru_cache(maxsize=1024)
def adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def revive(value: Any, annotation: Any) -> Any:
    """Rebuild a typed value from decoded JSON (identity when unannotated)."""
    if annotation is _ANY or annotation is Any or value is None:
        return value
    try:
        return adapter(annotation).validate_python(value)
    except TypeError:  # unhashable / unsupported annotation: keep the JSON value
        return value


def digest(*parts: Any) -> str:
    """A short, stable digest of JSON-encodable inputs."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        try:
            h.update(pydantic_core.to_json(part))
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError):
            h.update(repr(part).encode())
        h.update(b"\x00")
    return h.hexdigest()


def args_digest(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return digest(list(args), sorted(kwargs.items()))


def unannotated() -> Any:
    return _ANY
