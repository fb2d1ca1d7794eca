"""`@app.tool(keep=Schema)`: a tool's output cut to the fields the workflow needs.

The cut happens inside the tool's step, so the journal, the workflow, and any model
context it goes into see only Schema's fields; a 10,000-token record where three fields
matter never reaches a prompt. The full output is journaled under the step, as
`<key>/full#0`, always out of line (a blob, like any large output), with the names of the
fields kept: `keel show` prints "kept N of M fields, full output <ref>". A replay returns
the recorded cut output and never loads the full one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from keel.engine.control import current_step
from keel.engine.journal import Scope
from keel.engine.serde import to_json
from keel.errors import ConfigError, ValidationFailed, validation_problems
from keel.store.records import StepWrite
from keel.types import StepKind

if TYPE_CHECKING:
    from keel.engine.port import ExecutionPort
    from keel.engine.registry import ToolDef


def check_keep(tool: str, keep: Any) -> type[BaseModel] | None:
    """`keep=` as a Pydantic model class, or a clear error."""
    if keep is None or (isinstance(keep, type) and issubclass(keep, BaseModel)):
        return keep
    raise ConfigError(
        f"tool {tool!r}: keep= takes a Pydantic model class naming the fields to keep "
        f"(e.g. class Order(BaseModel): status: str), not {keep!r}"
    )


def cut(tool: str, keep: type[BaseModel], full: Any) -> BaseModel:
    """`full` cut to `keep`'s fields; ValidationFailed names the tool and the fields."""
    data = full.model_dump(mode="json") if isinstance(full, BaseModel) else full
    if not isinstance(data, dict):
        raise ValidationFailed(
            f"tool {tool!r} returned {type(data).__name__}, but keep={keep.__name__} needs an "
            "object (a dict or a Pydantic model) to take fields from",
            messages=[f"output is {type(data).__name__}, not an object"],
            tool=tool,
        )
    try:
        return keep.model_validate({k: v for k, v in data.items() if k in keep.model_fields})
    except ValidationError as exc:
        problems = validation_problems(exc, "(output)")
        raise ValidationFailed(
            f"output of tool {tool!r} does not fit keep={keep.__name__}: {'; '.join(problems)} "
            f"(the output has fields: {', '.join(sorted(map(str, data))) or 'none'})",
            messages=problems,
            tool=tool,
        ) from None


def kept(
    port: ExecutionPort, scope: Scope, tdef: ToolDef, invoke: Callable[[], Awaitable[Any]]
) -> Callable[[], Awaitable[Any]]:
    """The tool's effect with its output journaled whole (out of line) and returned cut."""
    keep = tdef.keep
    assert keep is not None

    async def effect() -> Any:
        full = await invoke()
        info = current_step()
        assert info is not None, "a kept tool's effect runs inside its step"
        data = to_json(full, what=f"output of tool {tdef.name!r}")
        names = (
            list(full.model_dump())
            if isinstance(full, BaseModel)
            else list(full)
            if isinstance(full, dict)
            else []
        )
        await _audit(
            port, scope, info.key, data, [n for n in keep.model_fields if n in names], len(names)
        )
        return cut(tdef.name, keep, full)

    return effect


async def _audit(
    port: ExecutionPort, scope: Scope, key: str, data: bytes, kept_fields: list[str], of: int
) -> None:
    """Journal the full output as `<key>/full#0`, out of line whatever its size. Each
    attempt overwrites it: the entry matches the cut output the step records."""
    sub = Scope(path=f"{key}/", state=None, phase=scope.phase, phase_prefix=scope.phase_prefix)
    op = port.operation(sub, StepKind.VALUE, "full", "")  # key: <key>/full#0
    rec = op.entry()
    rec.input = {"kept": kept_fields, "of": of}
    rec.blob = hashlib.sha256(data).hexdigest()
    ex = op._ex  # the engine's own write path (RunExecution.persist)
    await ex.persist([StepWrite(rec, None, data)])
    ex.journal.add(rec)


__all__ = ["check_keep", "cut", "kept"]
