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

from keel.app import App
from keel.hitl.api import ReviewRequest
from keel.observe.redact import Redactor
from keel.server.auth import User
from keel.types import Escalation, RunInfo, StepRecord

NO_RAW_EDIT = (
    "{user.name} is a {user.role}, who sees payloads redacted ([keel.roles] raw_payloads), "
    "so cannot edit or correct what they cannot see; approve or reject as proposed"
)


class Payloads:
    """One user's view of payloads: as stored (`raw`), or through the App's redactor
    (its record methods: `run`, `step`, `review`, `escalation`)."""

    def __init__(self, redactor: Redactor, raw: bool) -> None:
        self._redactor = redactor
        self.raw = raw

    def value(self, value: Any) -> Any:
        """A JSON-like value as this user may see it."""
        return value if self.raw or value is None else self._redactor.value(value)

    def run(self, run: RunInfo) -> RunInfo:
        return run if self.raw else self._redactor.run(run)

    def step(self, step: StepRecord) -> StepRecord:
        return step if self.raw else self._redactor.step(step)

    def request(self, req: ReviewRequest) -> ReviewRequest:
        """An approval, review or sample: its request (arguments, context, prompt, output,
        input, result) and its decision (edited arguments, corrections, labels)."""
        return req if self.raw else self._redactor.review(req)

    def escalation(self, esc: Escalation) -> Escalation:
        return esc if self.raw else self._redactor.escalation(esc)

    def audit(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """An audit log: each entry's `detail` holds what was decided."""
        if self.raw:
            return entries
        return [{**e, "detail": self.value(e.get("detail"))} for e in entries]

    def span(self, span: Any) -> Any:
        """A trace span (`keel.observe.spans.SpanRow`): its attributes and events (spans
        are recorded redacted; this also covers ones recorded under older rules)."""
        if self.raw:
            return span
        return dataclasses.replace(
            span,
            status_message=self.value(span.status_message),
            attributes={k: self._attribute(v) for k, v in span.attributes.items()},
            events=[
                {
                    **e,
                    "attributes": {
                        k: self._attribute(v) for k, v in (e.get("attributes") or {}).items()
                    },
                }
                for e in span.events
            ],
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
