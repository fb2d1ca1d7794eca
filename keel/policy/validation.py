"""Per-step validation: a type to coerce into and/or checks that return readable messages."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from keel.errors import validation_problems

Check = Callable[[Any], "str | Sequence[str] | bool | None"]
ValidateSpec = Any  # a type, a check, or a list of them


@functools.lru_cache(maxsize=256)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def _is_type(item: Any) -> bool:
    return isinstance(item, type) or getattr(item, "__origin__", None) is not None


def normalise(spec: ValidateSpec) -> tuple[Any, ...]:
    if spec is None:
        return ()
    items = tuple(spec) if isinstance(spec, list | tuple) else (spec,)
    for item in items:
        if not (_is_type(item) or callable(item)):
            raise TypeError(f"validate= takes types and check functions, got {item!r}")
    return items


def run_checks(value: Any, checks: tuple[Any, ...]) -> tuple[Any, list[str]]:
    """Validate `value`; return the (possibly coerced) value and the failure messages."""
    messages: list[str] = []
    for check in checks:
        if _is_type(check):
            try:
                value = _adapter(check).validate_python(value)
            except ValidationError as exc:
                messages += validation_problems(exc, None)
                return value, messages  # later checks would only see the wrong shape
            continue
        try:
            verdict = check(value)
        except Exception as exc:  # a crashing check is a failed check, said plainly
            verdict = f"{getattr(check, '__name__', 'check')} raised {type(exc).__name__}: {exc}"
        messages += verdict_messages(check, verdict)
    return value, messages


def verdict_messages(check: Any, verdict: Any) -> list[str]:
    """A check's answer as messages: None/True/"" pass, False fails, strings explain."""
    if verdict is None or verdict is True:
        return []
    if verdict is False:
        return [f"{getattr(check, '__name__', 'check')} rejected the output"]
    if isinstance(verdict, str):
        return [verdict] if verdict else []
    return [str(m) for m in verdict]
