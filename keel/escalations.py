"""`app.escalations`: list, inspect and decide the failures that were routed to a person."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError

from keel.engine.phase import checkpoint_messages, edited_state, find_checks
from keel.engine.serde import adapter, unannotated
from keel.errors import ConfigError, Conflict, InputError, RunNotFound, validation_problems
from keel.hitl.delivery import deliver_elsewhere
from keel.hitl.schema_check import problems
from keel.types import Escalation

if TYPE_CHECKING:
    from keel.hitl.host import Host


class Escalations:
    """Durable escalation packets of an App's store.

    Example:
        for esc in await app.escalations.list():
            print(esc.id, esc.packet.reason)
        await app.escalations.resolve(esc.id, result={"tier": "pro"}, by="dana")
    """

    def __init__(self, app: Host) -> None:
        self._app = app

    async def list(
        self, status: str | None = "open", queue: str | None = None, limit: int = 100
    ) -> list[Escalation]:
        if status not in (None, "all", "open", "resolved", "rejected"):
            raise ConfigError(
                f"unknown escalation status {status!r}; use open, resolved, rejected or all"
            )
        return await self._app.store.list_escalations(
            None if status == "all" else status, queue, limit
        )

    async def get(self, escalation_id: str) -> Escalation:
        esc = await self._app.store.get_escalation(escalation_id)
        if esc is None:
            raise RunNotFound(f"no escalation {escalation_id!r} in {self._app.store_url}")
        return esc

    async def resolve(
        self, escalation_id: str, result: Any = None, by: str = "", note: str | None = None
    ) -> Escalation:
        """Supply the result: the failed tool's return value, or state edits for a phase."""
        esc = await self.get(escalation_id)
        if esc.kind == "phase":
            await self._check_phase(esc, result)
        else:
            self._check_result(esc, result)
        return await self._decide(esc, "resolved", {"result": result, "note": note}, by)

    async def reject(self, escalation_id: str, reason: str, by: str = "") -> Escalation:
        """Refuse it: the step or phase fails with `keel.EscalationRejected`."""
        if not reason.strip():
            raise InputError("a rejection needs a reason, so the run's record says why")
        esc = await self.get(escalation_id)
        return await self._decide(esc, "rejected", {"reason": reason}, by)

    async def _decide(
        self, esc: Escalation, status: str, resolution: dict[str, Any], by: str
    ) -> Escalation:
        who = by or "anonymous"
        # a run on another executor (Temporal) takes it first, or refuses it
        payload = {"status": status, **resolution, "by": who}
        sent = await deliver_elsewhere(self._app, esc.run_id, esc.id, payload)
        try:
            decided = await self._app.store.resolve_escalation(
                esc.id, status, resolution, who, time.time()
            )
        except Conflict:
            if not sent:
                raise
            return await self.get(esc.id)  # the run recorded its decision itself first
        if not sent:
            self._app._wake_worker()
        return decided

    def _check_result(self, esc: Escalation, result: Any) -> None:
        """Validate a tool's result against its return type, or its recorded schema."""
        reg = self._app.registry
        schema = esc.packet.result_schema
        try:
            if esc.packet.tool in reg.tools:
                ann = reg.tools[esc.packet.tool].return_type
                if ann is not unannotated():
                    adapter(ann).validate_python(result)
            elif schema is not None:
                self._check_schema(esc, result, schema)  # the code is not loaded here
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc, "(result)"))
            raise InputError(f"result for escalation {esc.id} is invalid: {problems}") from None

    async def _check_phase(self, esc: Escalation, edits: Any) -> None:
        """State edits must fit the state (no unknown fields) and pass the phase's checkpoint.

        With the workflow's code loaded, its state model validates the edits and the
        phase's checks (those defined at module level) run on the edited state. Without
        it, the state schema recorded in the packet is checked. The run checks again
        when it resumes, and opens a new escalation if the edits still fail.
        """
        p = esc.packet
        if edits is not None and not isinstance(edits, dict):
            raise InputError(
                f"result for escalation {esc.id} is invalid: a phase escalation's result is "
                "a JSON object of state fields to set"
            )
        wf = self._app.registry.workflows.get(esc.workflow)
        state: Any = None
        if wf is not None and wf.state is not None:
            state, found = edited_state(wf.state, p.state or {}, edits)
            if state is None:
                self._refuse(esc, found)
        elif p.result_schema is not None:
            self._check_schema(esc, {**(p.state or {}), **(edits or {})}, p.result_schema)
        elif edits:
            self._refuse(esc, ["this workflow has no state to edit: resolve with no result"])
        if wf is None:
            return  # the code is not loaded: the run runs the checkpoint when it resumes
        checks, _ = find_checks(p.checks)
        failed = await checkpoint_messages(checks, state)
        if failed:
            raise InputError(
                f"result for escalation {esc.id} does not pass the checkpoint of phase "
                f"{p.phase!r}: {'; '.join(failed)}. Set state fields that make it pass, "
                "or reject the escalation",
                problems=failed,
            )

    @staticmethod
    def _refuse(esc: Escalation, found: Sequence[str]) -> NoReturn:
        raise InputError(
            f"result for escalation {esc.id} is invalid: {'; '.join(found)}", problems=list(found)
        )

    @classmethod
    def _check_schema(cls, esc: Escalation, value: Any, schema: dict[str, Any]) -> None:
        # a phase's state model ignores unknown fields unless told otherwise: refuse them
        found = problems(value, schema, closed=esc.kind == "phase", top="(result)")
        if found:
            cls._refuse(esc, found)
