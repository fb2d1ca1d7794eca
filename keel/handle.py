"""Starting runs: the ids they get, the input they are started with, and `RunHandle`."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticSerializationError

from keel.engine.serde import from_json, to_json
from keel.errors import InputError
from keel.types import RunInfo, RunStatus

if TYPE_CHECKING:
    from keel.app import App
    from keel.engine.registry import WorkflowDef


def input_json(wf: WorkflowDef, input: Any) -> bytes:
    """A start's input validated against the workflow's signature, as stored JSON."""
    validated = wf.validate_input(input)
    try:
        dumped = validated.model_dump(mode="json")
    except PydanticSerializationError as exc:
        raise InputError(
            f"input for workflow {wf.name!r} cannot be stored as JSON: {exc}. "
            "Pass JSON data (dict, list, str, int, float, bool, None) or Pydantic models.",
            workflow=wf.name,
        ) from None
    return to_json(dumped, what="input")


def same_input(info: RunInfo, data: bytes, render: Callable[[Any], str]) -> None:
    """An existing run started again must be asked for with the input it has
    (`render` shows both, redacted, when it is not)."""
    given = from_json(data)
    if given == info.input:
        return
    recorded, now = render(info.input), render(given)
    raise InputError(
        f"run id {info.id!r} already exists ({info.workflow}, {info.status.value}) with "
        f"different input: recorded {recorded}, given {now}. Starting an id again "
        "resumes it only with the same input (or none); pick a new id for new input.",
        run_id=info.id,
        recorded_input=recorded,
        new_input=now,
    )


def new_run_id() -> str:
    return f"run_{int(time.time() * 1000):011x}{secrets.token_hex(5)}"


class RunHandle:
    """A started run.

    Example:
        handle = await app.start(triage, {"ticket": t})
        outcome = await handle.result()
    """

    def __init__(self, app: App, run_id: str, workflow: str, known: RunInfo | None = None) -> None:
        self.app = app
        self.id = run_id
        self.workflow = workflow
        # The run as `App.start` created it (PENDING), spared one read by the first wait.
        self._known = known

    def __repr__(self) -> str:
        return f"<RunHandle {self.id} ({self.workflow})>"

    async def info(self) -> RunInfo:
        return await self.app.get_run(self.id)

    async def status(self) -> RunStatus:
        return (await self.info()).status

    async def settle(self, timeout: float | None = None) -> RunInfo:
        """Wait until the run is WAITING or finished (not PENDING/RUNNING)."""
        return await self.app._wait(self.id, lambda s: s not in _ACTIVE, timeout, self._first())

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to finish; return its result or raise `RunFailed`/`RunCancelled`."""
        info = await self.app._wait(self.id, lambda s: s.terminal, timeout, self._first())
        return self.app._outcome(info)

    def _first(self) -> RunInfo | None:
        # Only the first wait: later, the run may have moved on without this handle.
        known, self._known = self._known, None
        return known

    async def signal(self, name: str, payload: Any = None, *, queue: bool = False) -> bool:
        """`App.signal` for this run."""
        return await self.app.signal(self.id, name, payload, queue=queue)

    async def cancel(self) -> RunInfo:
        return await self.app.cancel(self.id)


_ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING)
