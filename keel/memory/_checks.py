"""Checks of what callers hand to long-term memory: each failure says what, why and what
to do, and is raised before anything is written."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from keel.errors import ConfigError

_ITEM_KEYS = {"text", "metadata", "context"}


def text(value: Any, what: str = "memory text") -> str:
    """`value` as a memory's text: a string with something besides whitespace."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ConfigError(
            f"{what} is empty or only whitespace: nothing would be remembered or found;"
            " pass the fact itself"
        )
    return value


def namespace(value: Any) -> str:
    """A namespace: a non-empty string (e.g. "user:ada")."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"namespace must be a non-empty string such as 'user:ada', got {value!r}")
    return value


def metadata(value: Any) -> dict[str, Any] | None:
    """Metadata: None or a dict with string keys whose values are plain JSON."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(
            f"memory metadata must be a dict with string keys, got {type(value).__name__}"
        )
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"memory metadata must be plain JSON (strings, numbers, booleans, null, lists,"
            f" dicts): {e}; convert the value (e.g. a datetime to its isoformat())"
        ) from None
    return dict(value)


def item(value: Any, pos: int) -> tuple[str, dict[str, Any] | None, str | None]:
    """One `add_many` item: a string, or a dict with `text` and optional `metadata`
    and `context`."""
    if isinstance(value, str):
        return text(value, f"item {pos}'s text"), None, None
    if not isinstance(value, dict):
        raise ConfigError(
            f"add_many item {pos} must be a string or a dict with 'text', got"
            f" {type(value).__name__}"
        )
    unknown = set(value) - _ITEM_KEYS
    if unknown:
        raise ConfigError(
            f"add_many item {pos} has unknown keys {sorted(unknown)}: an item takes 'text',"
            " 'metadata' and 'context' (put anything else in metadata)"
        )
    if "text" not in value:
        raise ConfigError(f"add_many item {pos} has no 'text'")
    ctx = value.get("context")
    if ctx is not None and not isinstance(ctx, str):
        raise ConfigError(f"add_many item {pos}'s context must be a string or None")
    return text(value["text"], f"item {pos}'s text"), metadata(value.get("metadata")), ctx


def items(value: Any) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """`add_many`'s items: a list (not one string or dict) of valid items."""
    if isinstance(value, str | dict) or not isinstance(value, list | tuple):
        raise ConfigError(
            "add_many takes a list of items (strings or dicts with 'text'), got"
            f" {type(value).__name__}; for one fact use add()"
        )
    return [item(it, i) for i, it in enumerate(value)]


def k(value: Any) -> int:
    """How many hits: an int of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"k must be an integer of at least 1, got {value!r}")
    return value


def min_relevance(value: Any) -> float | None:
    """A relevance threshold: None or a number in [0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(
            f"min_relevance must be a number from 0 to 1 (a hit's score scale), got {value!r}"
        )
    return float(value)


def search_filter(value: Any) -> dict[str, Any] | None:
    """A metadata filter: None or a dict of key -> the exact value required."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(
            "filter must be a dict of metadata key -> required value, e.g."
            f" {{'speaker': 'ada'}}; got {type(value).__name__}"
        )
    return metadata(value)


def as_of(value: Any) -> float | None:
    """A point in time as epoch seconds: None, a number, or an aware datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigError(
                "as_of must be a timezone-aware datetime (e.g. datetime.now(UTC)) or epoch"
                " seconds; a naive datetime's time zone is unknown"
            )
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"as_of must be a datetime or epoch seconds, got {value!r}")
    return float(value)
