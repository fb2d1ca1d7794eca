"""`/api/v1/escalations`: failures handed to a person: list, read, resolve, reject."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from keel.server.api.base import Api, EscalationStatus, Limit, Name, Reason
from keel.server.auth import User
from keel.server.payloads import Payloads


class Resolution(BaseModel):
    result: Any = None
    note: str | None = None


def router(api: Api) -> APIRouter:
    r = api.router("/escalations")
    app = api.app

    @r.get("")
    async def list_escalations(
        status: EscalationStatus = "open",
        queue: Name | None = None,
        limit: Limit = 100,
        view: Payloads = Depends(api.view),
    ) -> list[dict[str, Any]]:
        found = await app.escalations.list(status, queue, limit)
        return [view.escalation(e).model_dump(mode="json") for e in found]

    @r.get("/{escalation_id:keel_id}")
    async def get_escalation(
        escalation_id: str, view: Payloads = Depends(api.view)
    ) -> dict[str, Any]:
        esc = await app.escalations.get(escalation_id)
        out: dict[str, Any] = view.escalation(esc).model_dump(mode="json")
        return out

    @r.post("/{escalation_id:keel_id}/resolve")
    async def resolve(
        escalation_id: str,
        body: Resolution,
        user: User = Depends(api.user),
        view: Payloads = Depends(api.view),
    ) -> dict[str, Any]:
        esc = await app.escalations.get(escalation_id)
        done = await api.decide(
            user,
            esc.queue,
            esc.status,
            f"escalation {esc.id}",
            lambda: app.escalations.resolve(
                escalation_id, body.result, by=user.name, note=body.note
            ),
        )
        out: dict[str, Any] = view.escalation(done).model_dump(mode="json")
        return {**out, **await api.notice(done.run_id)}

    @r.post("/{escalation_id:keel_id}/reject")
    async def reject_escalation(
        escalation_id: str,
        body: Reason,
        user: User = Depends(api.user),
        view: Payloads = Depends(api.view),
    ) -> dict[str, Any]:
        esc = await app.escalations.get(escalation_id)
        done = await api.decide(
            user,
            esc.queue,
            esc.status,
            f"escalation {esc.id}",
            lambda: app.escalations.reject(escalation_id, body.reason, by=user.name),
        )
        out: dict[str, Any] = view.escalation(done).model_dump(mode="json")
        return {**out, **await api.notice(done.run_id, "continues with the failure")}

    return r
