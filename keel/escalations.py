"""`app.escalations`: list, inspect and decide the failures that were routed to a person."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from keel.engine.serde import adapter, unannotated
from keel.errors import ConfigError, InputError, RunNotFound
from keel.hitl.schema_check import problems
from keel.types import Escalation

if TYPE_CHECKING:
    from keel.app import App


class Escalations:
    """Durable escalation packets of an App's store.

    Example:
        for esc in await app.escalations.list():
            print(esc.id, esc.packet.reason)
        await app.escalations.resolve(esc.id, result={"tier": "pro"}, by="dana")
    """

    def __init__(self, app: App) -> None:
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
        decided = await self._app.store.resolve_escalation(
            esc.id, status, resolution, by or "anonymous", time.time()
        )
        self._app._wake_worker()
        return decided

    def _check_result(self, esc: Escalation, result: Any) -> None:
        """Validate a resolution against the tool's return type or the state model, if known."""
        reg = self._app.registry
        schema = esc.packet.result_schema
        try:
            if esc.kind == "tool" and esc.packet.tool in reg.tools:
                ann = reg.tools[esc.packet.tool].return_type
                if ann is not unannotated():
                    adapter(ann).validate_python(result)
            elif esc.kind == "tool" and schema is not None:
                self._check_schema(esc, result, schema)  # the code is not loaded here
            elif esc.kind == "phase" and result is not None:
                if not isinstance(result, dict):
                    raise InputError(
                        "a phase escalation's result is a JSON object of state fields to set"
                    )
                wf = reg.workflows.get(esc.workflow)
                if wf is not None and wf.state is not None:
                    wf.state.model_validate({**(esc.packet.state or {}), **result})
                elif schema is not None:
                    self._check_schema(esc, {**(esc.packet.state or {}), **result}, schema)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc']) or '(result)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise InputError(f"result for escalation {esc.id} is invalid: {problems}") from None

    @staticmethod
    def _check_schema(esc: Escalation, value: Any, schema: dict[str, Any]) -> None:
        found = problems(value, schema)
        if found:
            raise InputError(
                f"result for escalation {esc.id} is invalid: {'; '.join(found)}", problems=found
            )
