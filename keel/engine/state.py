"""Typed run state: validated assignment, and per-step deltas of changed fields."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from keel.errors import StateValidationError


@functools.lru_cache(maxsize=256)
def tracked_model(model: type[BaseModel]) -> type[BaseModel]:
    """A subclass of `model` that validates every assignment with a clear error."""

    def __setattr__(self: BaseModel, name: str, value: Any) -> None:
        try:
            BaseModel.__setattr__(self, name, value)
        except ValidationError as exc:
            msgs = "; ".join(e["msg"] for e in exc.errors())
            raise StateValidationError(
                f"state field {model.__name__}.{name} rejected {value!r:.80}: {msgs}",
                field=name,
                model=model.__name__,
            ) from None

    ns = {
        "model_config": ConfigDict(**{**model.model_config, "validate_assignment": True}),
        "__setattr__": __setattr__,
        "__module__": model.__module__,
        "__qualname__": model.__qualname__,
    }
    return type(model.__name__, (model,), ns)


class StateTracker:
    """Holds one scope's state object and what was last persisted of it."""

    __slots__ = ("_last", "model", "value")

    def __init__(self, model: type[BaseModel], value: BaseModel | None = None) -> None:
        self.model = tracked_model(model)
        if value is None:
            self.value: BaseModel = self.model()
        else:
            self.value = self.model.model_validate(value.model_dump())
        self._last: dict[str, Any] = self.value.model_dump(mode="json")

    def fork(self) -> StateTracker:
        """An isolated copy for a child scope (a map item or gather branch)."""
        return StateTracker(self.model, self.value)

    def delta(self) -> dict[str, Any] | None:
        """Fields changed since the last call, as JSON; None when nothing changed."""
        now = self.value.model_dump(mode="json")
        last = self._last
        changed = {k: v for k, v in now.items() if last.get(k, _MISSING) != v}
        if not changed:
            return None
        self._last = now
        return changed

    def apply(self, delta: dict[str, Any]) -> None:
        """Restore recorded field values during replay."""
        for name, value in delta.items():
            if name in self.model.model_fields:
                setattr(self.value, name, value)
        self._last = self.value.model_dump(mode="json")

    def snapshot(self) -> dict[str, Any]:
        return self.value.model_dump(mode="json")


_MISSING = object()
