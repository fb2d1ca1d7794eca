"""Typed run state: validated assignment, and per-step deltas of what changed.

A delta maps each replaced field to its new JSON value. A field that changed in
place is described under the reserved key `"$patch"` (no Pydantic field can be
named that) instead, so storage stays proportional to the change:

    {"category": "billing",                       # replaced
     "$patch": {"notes": {"append": ["n401"]},    # a list that grew at its end
                "seen": {"set": {"k9": 1}, "unset": ["k2"],
                         "patch": {"k3": {"append": [7]}}}}}   # a dict's keys changed

`apply_delta` folds a delta into a JSON snapshot; replay, the console and `keel
show` all use it, so the state after every step is the same wherever it is read.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from keel.errors import StateValidationError

PATCH = "$patch"


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


# -- deltas as JSON ---------------------------------------------------------------------


def _diff(old: Any, new: Any) -> dict[str, Any] | None:
    """An in-place change from `old` to `new` (both JSON, known unequal); None: replace."""
    if isinstance(old, list) and isinstance(new, list):
        n = len(old)
        if n and len(new) > n and new[:n] == old:  # from empty: the value is as small
            return {"append": new[n:]}
        return None
    if isinstance(old, dict) and isinstance(new, dict):
        sets: dict[str, Any] = {}
        patches: dict[str, Any] = {}
        for k, v in new.items():
            if k not in old:
                sets[k] = v
            elif old[k] != v:
                sub = _diff(old[k], v)
                if sub is None:
                    sets[k] = v
                else:
                    patches[k] = sub
        unset = [k for k in old if k not in new]
        if len(sets) + len(unset) >= len(new) and not patches:
            return None  # most of it is new: the whole value is as small
        op: dict[str, Any] = {}
        if sets:
            op["set"] = sets
        if unset:
            op["unset"] = unset
        if patches:
            op["patch"] = patches
        return op
    return None


def _apply_op(value: Any, op: dict[str, Any]) -> Any:
    """`value` with an in-place change applied; `value` itself is not modified."""
    if "append" in op:
        return [*(value if isinstance(value, list) else []), *op["append"]]
    out = dict(value) if isinstance(value, dict) else {}
    for k in op.get("unset", ()):
        out.pop(k, None)
    out.update(op.get("set", {}))
    for k, sub in op.get("patch", {}).items():
        out[k] = _apply_op(out.get(k), sub)
    return out


def apply_delta(state: dict[str, Any], delta: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON state after `delta` (a new dict; `state` is not modified)."""
    if not delta:
        return state
    out = dict(state)
    for name, value in delta.items():
        if name != PATCH:
            out[name] = value
    for name, op in (delta.get(PATCH) or {}).items():
        out[name] = _apply_op(out.get(name), op)
    return out


def changed_fields(delta: dict[str, Any] | None) -> list[str]:
    """The state fields a delta touches, replaced or patched."""
    if not delta:
        return []
    return [k for k in delta if k != PATCH] + list(delta.get(PATCH) or {})


def compose(
    first: dict[str, Any] | None, second: dict[str, Any] | None, current: dict[str, Any]
) -> dict[str, Any] | None:
    """One delta with the effect of `first` then `second`; `current` is the state after
    both (used for a field that both patch in ways that do not simply chain)."""
    if not first:
        return second
    if not second:
        return first
    out = {k: v for k, v in first.items() if k != PATCH}
    patches = dict(first.get(PATCH) or {})
    for name, value in second.items():
        if name != PATCH:
            out[name] = value
            patches.pop(name, None)
    for name, op in (second.get(PATCH) or {}).items():
        if name in out:
            out[name] = _apply_op(out[name], op)
        elif name in patches:
            earlier = patches[name]
            if set(earlier) == {"append"} and set(op) == {"append"}:
                patches[name] = {"append": [*earlier["append"], *op["append"]]}
            else:
                del patches[name]
                out[name] = current.get(name)
        else:
            patches[name] = op
    if patches:
        out[PATCH] = patches
    return out


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
        """What changed since the last call, as a JSON delta; None when nothing changed."""
        now = self.value.model_dump(mode="json")
        last = self._last
        out: dict[str, Any] = {}
        patches: dict[str, Any] = {}
        for k, v in now.items():
            old = last.get(k, _MISSING)
            if old == v:
                continue
            op = None if old is _MISSING else _diff(old, v)
            if op is None:
                out[k] = v
            else:
                patches[k] = op
        if not out and not patches:
            return None
        if patches:
            out[PATCH] = patches
        self._last = now
        return out

    def apply(self, delta: dict[str, Any]) -> None:
        """Restore recorded values during replay (a delta, or a whole snapshot)."""
        after = apply_delta(self._last, delta)
        fields = self.model.model_fields
        for name in changed_fields(delta):
            if name in fields:
                setattr(self.value, name, after[name])
        self._last = self.value.model_dump(mode="json")

    def pending(self) -> dict[str, Any] | None:
        """What `delta()` would return now, left to be recorded with the next step."""
        last = self._last
        out = self.delta()
        self._last = last
        return out

    def sync(self) -> None:
        """Count the state as it stands as persisted: replay calls this where the first
        execution committed a record of this scope, so later deltas (patches) have the
        same base they had there."""
        self._last = self.value.model_dump(mode="json")

    def snapshot(self) -> dict[str, Any]:
        return self.value.model_dump(mode="json")


_MISSING = object()
