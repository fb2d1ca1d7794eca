"""`app.approvals` and `app.reviews`: what reviewers (and the console) act through."""

from __future__ import annotations

import builtins
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from keel.engine.recovery import result_schema
from keel.engine.serde import adapter, unannotated
from keel.errors import ConfigError, Conflict, InputError, RunNotFound, validation_problems
from keel.hitl.delivery import deliver_elsewhere
from keel.hitl.requests import signal_for
from keel.hitl.schema_check import problems
from keel.secret import references
from keel.types import ReviewRequest as ReviewRequest  # moved: stores return it

if TYPE_CHECKING:
    from keel.hitl.host import Host

DECISION_KINDS = ("approval", "low_confidence", "novelty")


class _Base:
    def __init__(self, app: Host) -> None:
        self._app = app

    async def get(self, review_id: str) -> ReviewRequest:
        req = await self._app.store.get_review(review_id)
        if req is None:
            raise RunNotFound(f"no review request {review_id!r} in {self._app.store_url}")
        return req

    async def audit(self, review_id: str) -> list[dict[str, Any]]:
        """The append-only audit log of a request: who requested, decided, escalated
        (each entry's fields as a dict: id, at, actor, action, target, detail)."""
        return [dataclasses.asdict(e) for e in await self._app.store.audit_log(review_id)]

    def _check_reviewer(self, req: ReviewRequest, by: str) -> None:
        group = self._app.reviewers.get(req.queue)
        if group is not None and by not in group:
            raise ConfigError(
                f"{by or 'anonymous'} is not a reviewer of queue {req.queue!r} "
                f"(reviewers: {', '.join(sorted(group))})"
            )

    async def _decide(
        self, req: ReviewRequest, status: str, decision: dict[str, Any], by: str, wake: bool = True
    ) -> ReviewRequest:
        self._check_reviewer(req, by)
        who = by or "anonymous"
        # a run on another executor (Temporal) takes it first, or refuses it
        sent = wake and await deliver_elsewhere(
            self._app, req.run_id, req.id, {"status": status, **decision, "by": who}
        )
        signal = signal_for(req.id) if wake and not sent else None
        try:
            decided = await self._app.store.decide_review(
                req.id, status, decision, who, time.time(), signal
            )
        except Conflict:
            if not sent:
                raise
            return await self.get(req.id)  # the run recorded its decision itself first
        if not sent:
            self._app._wake_worker()
        return decided


class Approvals(_Base):
    """Decisions that gate a run: approvals, low-confidence and novelty reviews.

    Example:
        for req in await app.approvals.list(queue="payments"):
            await app.approvals.approve(req.id, by="alice", note="checked the invoice")
    """

    async def list(
        self,
        queue: str | None = None,
        status: str | None = "pending",
        kind: str | None = None,
        limit: int = 100,
    ) -> builtins.list[ReviewRequest]:
        if kind is not None and kind not in DECISION_KINDS:
            raise ConfigError(f"unknown kind {kind!r}; use one of {', '.join(DECISION_KINDS)}")
        rows: builtins.list[ReviewRequest] = []
        for k in (kind,) if kind else DECISION_KINDS:
            rows += await self._app.store.list_reviews(
                k, None if status == "all" else status, queue, None, limit
            )
        rows.sort(key=lambda r: (r.created_at, r.id))
        return rows[:limit]

    async def approve(self, review_id: str, by: str = "", note: str | None = None) -> ReviewRequest:
        req = await self.get(review_id)
        status = {"low_confidence": "confirmed"}.get(req.kind, "approved")
        return await self._decide(req, status, {"note": note, "args": req.args}, by)

    async def reject(self, review_id: str, reason: str, by: str = "") -> ReviewRequest:
        if not reason or not reason.strip():
            raise InputError("a rejection needs a reason, so the run's record says why")
        req = await self.get(review_id)
        return await self._decide(req, "rejected", {"reason": reason}, by)

    async def edit(
        self, review_id: str, args: dict[str, Any], by: str = "", note: str | None = None
    ) -> ReviewRequest:
        """Edit the proposed arguments, then approve; invalid edits are refused."""
        req = await self.get(review_id)
        if req.kind != "approval" or req.tool is None:
            raise InputError(
                f"{review_id} is not a tool approval; only tool arguments can be edited"
            )
        if not isinstance(args, dict):
            raise InputError("edited arguments are a JSON object of the tool's parameters")
        # Arguments shown masked and sent back unchanged keep their values.
        args = self._app.redactor.restore(args, req.args or {})
        # A reviewer decides what the call does, not which credentials it reads: a new
        # secret reference would make the tool reveal any secret the worker can reach.
        added = sorted(references(args) - references(req.args or {}))
        if added:
            raise InputError(
                f"edited arguments for {req.tool} refer to secret(s) {', '.join(added)} that "
                "the proposed call did not use; an edit cannot change which secrets a tool "
                "reads (keep the proposed references, or reject the request)",
                problems=[f"secret {ref}: not in the proposed call" for ref in added],
            )
        found = problems(args, req.request.get("args_schema") or {})
        tool = self._app.registry.tools.get(req.tool)
        if tool is not None and not found:
            try:
                tool.input_model().model_validate(args)
            except ValidationError as exc:
                found = validation_problems(exc, "")
        if found:
            raise InputError(
                f"edited arguments for {req.tool} are invalid: {'; '.join(found)}", problems=found
            )
        return await self._decide(
            req, "edited", {"note": note, "args": args, "original": req.args}, by
        )

    async def correct(
        self, review_id: str, output: Any, by: str = "", note: str | None = None
    ) -> ReviewRequest:
        """For a low-confidence review: the corrected output becomes the step's result."""
        req = await self.get(review_id)
        if req.kind != "low_confidence":
            raise InputError(
                f"{review_id} is a {req.kind} request; only low-confidence outputs can be corrected"
            )
        found = problems(output, req.request.get("schema") or {})
        if found:
            raise InputError(f"corrected output is invalid: {'; '.join(found)}", problems=found)
        return await self._decide(req, "corrected", {"output": output, "note": note}, by)


class Reviews(_Base):
    """The sampled-review queue: verdicts on completed autonomous runs.

    Example:
        for s in await app.reviews.list():
            await app.reviews.verdict(s.id, correct=False, label={"category": "billing"})
    """

    async def list(
        self, status: str | None = "pending", workflow: str | None = None, limit: int = 100
    ) -> builtins.list[ReviewRequest]:
        return await self._app.store.list_reviews(
            "sample", None if status == "all" else status, None, workflow, limit
        )

    async def verdict(
        self,
        review_id: str,
        correct: bool,
        by: str = "",
        label: Any = None,
        note: str | None = None,
    ) -> ReviewRequest:
        """Mark a sampled run correct or incorrect. `label` is the right output of a run
        marked incorrect, checked against the workflow's return type; without one, the
        run exports as a negative case (the output is wrong; the right one is unknown)."""
        req = await self.get(review_id)
        if req.kind != "sample":
            raise InputError(f"{review_id} is not a sampled review")
        if label is not None:
            if correct and label != req.request.get("result"):
                raise InputError(
                    f"a label is the expected output of a run marked incorrect; {review_id} "
                    "marked correct expects its own result. Drop the label, or mark it incorrect",
                    field="label",
                )
            self._check_label(req, label)
        status = "correct" if correct else "incorrect"
        return await self._decide(req, status, {"label": label, "note": note}, by, wake=False)

    def _check_label(self, req: ReviewRequest, label: Any) -> None:
        """A label must fit the workflow's output: its return type where the code is loaded,
        else the schema recorded when the run was sampled (unknown keys refused in both)."""
        wf = self._app.registry.workflows.get(req.workflow)
        returns = wf.return_type if wf is not None else unannotated()
        schema = req.request.get("schema") or result_schema(returns)
        found: builtins.list[str] = []
        if isinstance(schema, dict):
            found = problems(label, schema, closed=True, top="(label)")
        if not found and returns is not unannotated():
            try:
                adapter(returns).validate_python(label)
            except ValidationError as exc:
                found = validation_problems(exc, "(label)")
        if found:
            raise InputError(
                f"label for {req.id} does not fit the output of workflow {req.workflow!r}: "
                + "; ".join(found),
                problems=found,
                field="label",
            )

    async def export(self, workflow: str | None = None) -> builtins.list[dict[str, Any]]:
        """Reviewed samples as eval cases, in id order (the format: docs/hitl.md).

        `case` is "positive" when the right output is known (`expected`: the run's own
        output if marked correct, the reviewer's label if marked incorrect) and
        "negative" for a run marked incorrect without a label: `expected` is null and
        `rejected_output` is the output that must not be produced again.
        """
        out: builtins.list[dict[str, Any]] = []
        for status in ("correct", "incorrect"):
            for req in await self._app.store.list_reviews("sample", status, None, workflow, 10_000):
                decision = req.decision or {}
                label = decision.get("label")
                output = req.request.get("result")
                if req.status == "correct":
                    case, expected = "positive", output
                elif label is not None:
                    case, expected = "positive", label
                else:  # wrong, and nobody said what is right: never a positive case
                    case, expected = "negative", None
                out.append(
                    {
                        "id": req.id,
                        "workflow": req.workflow,
                        "run_id": req.run_id,
                        "input": req.request.get("input"),
                        "output": output,
                        "case": case,
                        "expected": expected,
                        "rejected_output": output if req.status == "incorrect" else None,
                        "verdict": req.status,
                        "reviewer": req.decided_by,
                        "note": decision.get("note"),
                    }
                )
        return sorted(out, key=lambda c: str(c["id"]))
