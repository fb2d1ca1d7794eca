"""Who sees payloads raw: run inputs and results, step inputs and outputs, state,
approval arguments and context, escalation packets, model prompts and replies, span
payload attributes.

Roles listed in `raw_payloads` (keel.toml `[keel.roles]`, `KEEL_RAW_PAYLOADS`; default
reviewer and admin) see them as stored; every other role sees them through the App's
redactor (`app.redactor.value`): secret fields and secret-looking strings masked. The API
and the console read every record through one user's `Payloads`, so they agree.

Reviewers see raw by default because they decide on exactly these values: a masked
argument can be neither checked nor edited. A reviewer left out of `raw_payloads` may
still approve, confirm or reject as proposed; editing arguments and correcting outputs
need the raw values and are refused.

Example:
    view = PayloadPolicy(app, ("reviewer", "admin")).of(user)
    shown = view.run(await app.get_run("r1"))     # redacted for a viewer
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import pydantic_core

from keel.app import App
from keel.hitl.api import ReviewRequest
from keel.server.auth import User
from keel.types import Escalation, RunInfo, StepRecord, StructuredError

# JSON schemas inside requests and packets: structure, not payload; the console builds
# forms from them, so their property names must stay as they are.
_SCHEMAS = frozenset({"args_schema", "schema", "result_schema"})
NO_RAW_EDIT = (
    "{user.name} is a {user.role}, who sees payloads redacted ([keel.roles] raw_payloads), "
    "so cannot edit or correct what they cannot see; approve or reject as proposed"
)


class Payloads:
    """One user's view of payloads: as stored (`raw`), or redacted."""

    def __init__(self, redactor: Any, raw: bool) -> None:
        self._redactor = redactor
        self.raw = raw

    def value(self, value: Any) -> Any:
        """A JSON-like value as this user may see it."""
        if self.raw or value is None:
            return value
        return self._redactor.value(pydantic_core.to_jsonable_python(value, fallback=str))

    def _fields(self, record: Any, names: Sequence[str]) -> dict[str, Any]:
        """The named payload fields, redacted together so a secret's key names it."""
        shown = self.value({n: getattr(record, n) for n in names})
        return {n: shown.get(n) for n in names}

    def error(self, error: StructuredError | None) -> StructuredError | None:
        if self.raw or error is None:
            return error
        return StructuredError.model_validate(self.value(error.model_dump(mode="json")))

    def run(self, run: RunInfo) -> RunInfo:
        if self.raw:
            return run
        shown = self._fields(run, ("input", "result", "state"))
        return run.model_copy(update={**shown, "input": shown["input"] or {},
                                      "error": self.error(run.error)})

    def step(self, step: StepRecord) -> StepRecord:
        if self.raw:
            return step
        shown = self._fields(step, ("input", "output", "state_delta", "attempt_log"))
        return step.model_copy(update={**shown, "error": self.error(step.error)})

    def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in body.items() if k in _SCHEMAS}
        shown = self.value({k: v for k, v in body.items() if k not in _SCHEMAS})
        return {**shown, **kept}

    def request(self, req: ReviewRequest) -> ReviewRequest:
        """An approval, review or sample: its request (arguments, context, prompt, output,
        input, result) and its decision (edited arguments, corrections, labels)."""
        if self.raw:
            return req
        return req.model_copy(update={
            "request": self._request(req.request),
            "decision": None if req.decision is None else self.value(req.decision),
        })

    def escalation(self, esc: Escalation) -> Escalation:
        if self.raw:
            return esc
        packet = esc.packet
        shown = self._fields(
            packet, ("input", "journal", "output", "messages", "state", "reason")
        )
        return esc.model_copy(update={
            "packet": packet.model_copy(update={
                **shown,
                "journal": shown["journal"] or [],
                "messages": [str(m) for m in shown["messages"] or []],
                "reason": str(shown["reason"]),
                "error": self.error(packet.error),
            }),
            "resolution": None if esc.resolution is None else self.value(esc.resolution),
        })

    def audit(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """An audit log: each entry's `detail` holds what was decided."""
        if self.raw:
            return entries
        return [{**e, "detail": self.value(e.get("detail"))} for e in entries]

    def span(self, span: Any) -> Any:
        """A trace span (`keel.observe.spans.SpanRow`): its attributes and events."""
        if self.raw:
            return span
        return dataclasses.replace(
            span,
            status_message=self.value(span.status_message),
            attributes={k: self._attribute(v) for k, v in span.attributes.items()},
            events=[{**e, "attributes": {k: self._attribute(v)
                                         for k, v in (e.get("attributes") or {}).items()}}
                    for e in span.events],
        )

    def _attribute(self, value: Any) -> Any:
        # Payload attributes are JSON text: redact their structure, so field names count.
        if isinstance(value, str) and value[:1] in ("{", "["):
            try:
                parsed = json.loads(value)
            except ValueError:
                return self.value(value)
            return json.dumps(self.value(parsed), ensure_ascii=False)
        return self.value(value)


class PayloadPolicy:
    """Which roles see payloads raw, over one App's redactor."""

    def __init__(self, app: App, raw_roles: Sequence[str]) -> None:
        self.app = app
        self.raw_roles = frozenset(raw_roles)

    def of(self, user: User) -> Payloads:
        return Payloads(self.app.redactor, user.role in self.raw_roles)
